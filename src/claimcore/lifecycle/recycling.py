"""Recycling: stock of vouchers that expired unused, or that their users gave up, comes back.

Both run recycle.lua on the user's shard, which marks each voucher (E expired,
L released) and adds its stock back in one step, so each voucher is recycled
once however many nodes sweep at the same time, and a redemption racing an
expiry sees the voucher used or expired, never both. The ledger gets an
`expire` or `release` entry in the same step. Once stock is back, the nodes'
sold-out snapshots reopen within their 1 s check.

Expired vouchers are found by sweeping the grant records of every shard
(`recycle_expired`); each node does it every `--recycle-every-s` for the
campaigns it serves, and operators can run it at once
(`claimcore campaign recycle`). Expiry itself is judged inside recycle.lua by
the shard's Redis clock, and recycled stock is claimable RETURN_DELAY_MS later.

The sweep writes like a claim: only on a user's own shard under the map whose
epoch the script checks. A record found on a shard its user is leaving (a
reshard is copying it) is skipped there: its copy is swept on the user's new
shard, so the mark and the stock never stay behind on the old one.
"""

from __future__ import annotations

import asyncio
import logging

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.lifecycle.stacking import settle_prepared
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import shard_keys
from claimcore.store.replies import RecycleCode, refusal

log = logging.getLogger(__name__)

SCAN_PAGE = 2_000
CALL_PAIRS = 500  # (user, voucher) pairs per recycle.lua call: keeps each call short


async def _recycle(inventory: RedisInventory, config: CampaignConfig, shard: int, op: str,
                   pairs: list[tuple[str, str]]) -> list[int]:
    keys = list(shard_keys(config.campaign_id, shard).redemption)
    reply = await scripts.RECYCLE(inventory.redis, keys, [
        config.epoch, now_ms(), op, config.valid_for_ms, *(x for pair in pairs for x in pair)])
    if int(reply[0]) < 0:
        raise refusal(config.campaign_id, shard, reply)
    return [int(x) for x in reply]


async def release(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig,
                  user_id: str, voucher_id: str) -> bool:
    """The user gives up a valid, unused voucher; True if it is released (now, or by this same
    call sent before: a resend answers alike)."""
    async def call(c: CampaignConfig) -> list[int]:
        return await _recycle(inventory, c, shard_of(user_id, c.shards), "release", [(user_id, voucher_id)])

    return (await campaigns.on_live_map(config, call))[1] in (RecycleCode.RECYCLED, RecycleCode.DONE_BEFORE)


async def recycle_expired(inventory: RedisInventory, campaigns: CampaignCache,
                          config: CampaignConfig) -> int:
    """Sweep every shard's grants for expired, unused vouchers; returns how many came back."""
    if config.valid_for_ms <= 0:
        return 0

    async def sweep(c: CampaignConfig) -> int:
        deadline = now_ms() - c.valid_for_ms  # granted before this: expired
        counts = await asyncio.gather(*(
            _sweep_shard(inventory, campaigns, c, s, deadline) for s in range(c.shard_slots)))
        return sum(counts)

    return await campaigns.on_live_map(config, sweep)


async def _sweep_shard(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig,
                       shard: int, granted_before: int) -> int:
    recycled = 0
    pending: list[tuple[str, str]] = []
    async for field, raw in inventory.redis.hscan_iter(shard_keys(config.campaign_id, shard).reqs,
                                                       count=SCAN_PAGE):
        user = field.split("|", 1)[0]
        if shard_of(user, config.shards) != shard:
            continue  # the user is moving away (or has): swept on their own shard, never here
        voucher, at, _ = raw.split("|", 2)
        if int(at) <= granted_before:
            pending.append((user, voucher))
        if len(pending) >= CALL_PAIRS:
            recycled += await _expire(inventory, campaigns, config, shard, pending)
            pending = []
    if pending:
        recycled += await _expire(inventory, campaigns, config, shard, pending)
    return recycled


async def _expire(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig, shard: int,
                  pairs: list[tuple[str, str]]) -> int:
    """recycle.lua 'expire' on pairs; vouchers left prepared by a stacked order that nobody will
    finish are settled (committed if decided, else aborted) and swept once more."""
    reply = await _recycle(inventory, config, shard, "expire", pairs)
    stale = [pair for pair, code in zip(pairs, reply[1:], strict=True) if code == RecycleCode.STALE_PREPARED]
    if not stale:
        return reply[0]
    redeem_key = shard_keys(config.campaign_id, shard).redeem
    for user, voucher in stale:
        record = await inventory.redis.hget(redeem_key, f"v:{voucher}")
        if record and record.startswith("P|"):
            await settle_prepared(inventory, campaigns, config, user, record)
    return reply[0] + (await _recycle(inventory, config, shard, "expire", stale))[0]


async def sweep_forever(inventory: RedisInventory, campaigns: CampaignCache, every_s: float) -> None:
    """Background task of a node: recycle expired vouchers of the campaigns it serves."""
    while True:
        await asyncio.sleep(every_s)
        for config in campaigns.cached():
            if config.valid_for_ms <= 0:
                continue
            try:
                n = await recycle_expired(inventory, campaigns, config)
                if n:
                    log.info("recycled %d expired vouchers of %s", n, config.campaign_id)
            except Exception as exc:  # noqa: BLE001 - Redis may be away; the next sweep tries again
                log.warning("recycling %s failed: %s", config.campaign_id, exc,
                            extra={"campaign": config.campaign_id})
