"""Stacking: one order using vouchers of several campaigns, all parts redeemed or none.

The parts live in different hash slots, so no one script can take them all. Two phases
across the campaigns' hash slots: prepare every part, one after another in campaign id order
(stack.lua marks its vouchers P until a deadline), decide once (holds.lua in the stack
registry, only before deadline - margin), then commit every part; on any refusal abort the
prepared ones. A part left prepared by a node that died is settled by whoever meets it after
deadline + margin, from the decision: committed if decided, else aborted (settle_prepared).

What the order must pass first (each campaign's rules, its merchants, the verifier, the SN
holds) is checked by Redemptions.redeem_stacked (redemption.py), which then runs the order
through these phases as a StackedOrder.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.lifecycle.snregistry import HOLD_MS, MARGIN_MS, stack_decided, stack_owner
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import SN_BUCKETS, shard_keys, stack_key
from claimcore.store.replies import HoldCode, StackCode, refusal

Part = tuple[CampaignConfig, list[str]]  # a campaign, and the order's vouchers of it


async def stack_op(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig, op: str,
                   user_id: str, order_id: str, instance: str, args: list[Any]) -> list[Any]:
    """stack.lua's `op` on the user's shard of one campaign, for one stacked-order instance."""
    async def call(c: CampaignConfig) -> list[Any]:
        shard = shard_of(user_id, c.shards)
        keys = list(shard_keys(c.campaign_id, shard).redemption)
        reply = await scripts.STACK(inventory.redis, keys,
                                    [op, c.epoch, now_ms(), user_id, order_id, instance, *args])
        if int(reply[0]) < 0:
            raise refusal(c.campaign_id, shard, reply)
        return reply

    return await campaigns.on_live_map(config, call)


async def settle_prepared(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig,
                          user_id: str, record: str) -> None:
    """A voucher prepared ("P|order|deadline|instance") by a stacked order whose deadline passed:
    commit its part if that very order instance was decided, else abort it. Found by a redemption
    or preparation that wants the voucher, and by the expiry sweep (recycling.py)."""
    _, stale_order, _, instance = record.split("|", 3)
    decided = await stack_decided(inventory, user_id, stale_order, record)
    await stack_op(inventory, campaigns, config, "commit" if decided else "abort", user_id, stale_order,
                   instance, [])


def order_instance(parts: list[Part], user_id: str, order_id: str, merchant_id: str, amount_cents: int,
                   sn_codes: list[str]) -> str:
    """The order's identity: a retry of the same order is the same instance; another order
    reusing the id is not, and can neither commit nor settle this one's parts."""
    return hashlib.sha1(repr((user_id, order_id, merchant_id, amount_cents, sorted(sn_codes), sorted(
        (c.campaign_id, sorted(v)) for c, v in parts))).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StackedOrder:
    """One stacked order, as the node that received it runs it through the two phases."""

    inventory: RedisInventory
    campaigns: CampaignCache
    parts: list[Part]
    user_id: str
    order_id: str
    instance: str  # order_instance()

    async def deadline(self, trusted_until: int) -> int:
        """The parts' deadline: HOLD_MS from now by Redis time, as every hold's, and no later
        than the SN holds are trusted (0: no SN codes)."""
        deadline = await self.inventory.redis_time_ms() + HOLD_MS
        return min(deadline, trusted_until) if trusted_until else deadline

    async def prepare(self, merchant_id: str, amount_cents: int, channel_id: str, sn_codes: list[str],
                      deadline: int) -> tuple[list[list[Any]], tuple[CampaignConfig, list[Any]] | None]:
        """Prepare the parts one after another, by campaign id: their replies, and the first part
        refused with its reply (None when every part is prepared, or was committed before: a
        replay). Every order takes its parts in the same order, so of several orders racing for
        the same vouchers the one that prepares the first part is the only one that can reach
        the next: prepared all at once, two orders could each take one part, refuse each other
        and both abort, and nobody would be redeemed."""
        args = [merchant_id, amount_cents, "", "", "", channel_id, ",".join(sn_codes), deadline, MARGIN_MS]
        replies: list[list[Any]] = []
        for config, vouchers in sorted(self.parts, key=lambda part: part[0].campaign_id):
            reply = await self._prepare(config, sorted(vouchers), args)
            replies.append(reply)
            if int(reply[0]) not in (StackCode.PREPARED, StackCode.COMMITTED_BEFORE):
                return replies, (config, reply)
        return replies, None

    async def _prepare(self, config: CampaignConfig, vouchers: list[str], args: list[Any]) -> list[Any]:
        args = list(args)
        args[2:5] = [config.min_spend_cents, config.value_cents, config.valid_for_ms]
        prepare = [*args, *vouchers]
        reply = await self._op(config, "prepare", prepare)
        if int(reply[0]) == StackCode.STALE_PREPARE:
            await settle_prepared(self.inventory, self.campaigns, config, self.user_id, str(reply[2]))
            reply = await self._op(config, "prepare", prepare)
        return reply

    async def decide(self, deadline: int) -> bool:
        """Write the order's one decision (holds.lua `decide`, under its instance); False if it
        came too late (past deadline - margin): then it must be aborted."""
        decision = stack_owner(self.user_id, self.order_id, self.instance)
        decided = await scripts.HOLDS(self.inventory.redis, [stack_key(shard_of(decision, SN_BUCKETS))],
                                      ["decide", decision, "", deadline, MARGIN_MS, decision])
        return int(decided[0]) == HoldCode.HELD

    async def commit(self) -> None:
        await asyncio.gather(*(self._op(c, "commit", []) for c, _ in self.parts))

    async def abort(self) -> None:
        await asyncio.gather(*(self._op(c, "abort", []) for c, _ in self.parts))

    async def _op(self, config: CampaignConfig, op: str, args: list[Any]) -> list[Any]:
        return await stack_op(self.inventory, self.campaigns, config, op, self.user_id, self.order_id,
                              self.instance, args)
