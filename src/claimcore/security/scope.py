"""What an authenticated channel may touch: the campaigns open to it and the vouchers it issued.

The rules of docs/security.md, in one place, checked before any write:
- a channel claims only in campaigns whose `channels` list is empty or names it;
- a channel reads (GetClaim) only the grants it made: others' stay invisible;
- a channel redeems, reverses and releases only vouchers it issued, and
  reverses only orders it redeemed.

A voucher's issuing channel and an order's channel are written once and never
change, so reading them before the call that writes is not a race.
"""

from __future__ import annotations

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.security.auth import Caller, PermissionDenied
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.replies import Record

ORDER_CHANNEL_FIELD = 6  # "R|vouchers|merchant|amount|subsidy|at|channel|sns" (keyspace.py)


def require_open_to(config: CampaignConfig, channel: str) -> None:
    """`channel` (the one the claim runs as) may claim in this campaign."""
    if config.channels and channel not in config.channels:
        who = f"channel {channel!r}" if channel else "a claim without a channel"
        raise PermissionDenied(f"campaign {config.campaign_id} is not open to {who}",
                               "CAMPAIGN_CLOSED_TO_CHANNEL")


async def user_records(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig,
                       user_id: str, request_id: str = "") -> list[Record]:
    """The user's grants, read on their shard and following a reshard like a claim does."""
    return await campaigns.on_live_map(config, lambda c: inventory.lookup(
        c.campaign_id, shard_of(user_id, c.shards), user_id, request_id, c.epoch))


def visible(caller: Caller, records: list[Record]) -> list[Record]:
    return [r for r in records if caller.may_see(r.channel_id)]


async def require_issued(caller: Caller, inventory: RedisInventory, campaigns: CampaignCache,
                         config: CampaignConfig, user_id: str, vouchers: list[str]) -> None:
    """Every voucher the user holds among `vouchers` was issued by the caller's channel.

    Vouchers the user does not hold are left to the call itself (NOT_OWNER):
    refusing them here would tell a channel which vouchers exist.
    """
    if caller.channel is None:
        return
    issued = {r.voucher_id: r.channel_id for r in await user_records(inventory, campaigns, config, user_id)}
    foreign = [x for x in vouchers if x in issued and not caller.may_see(issued[x])]
    if foreign:
        raise PermissionDenied(f"channel {caller.channel!r} did not issue voucher {foreign[0]}",
                               "VOUCHER_OF_ANOTHER_CHANNEL")


async def require_own_order(caller: Caller, inventory: RedisInventory, config: CampaignConfig,
                            user_id: str, order_id: str) -> None:
    """The order, if it exists, was redeemed through the caller's channel."""
    if caller.channel is None:
        return
    record = await inventory.order_record(config.campaign_id, user_id, order_id)
    if record:
        fields = record.split("|")
        if len(fields) > ORDER_CHANNEL_FIELD and not caller.may_see(fields[ORDER_CHANNEL_FIELD]):
            raise PermissionDenied(f"channel {caller.channel!r} did not redeem order {order_id}",
                                   "ORDER_OF_ANOTHER_CHANNEL")
