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
(`claimcore campaign recycle`).
"""

from __future__ import annotations

import asyncio
import logging

from claimcore import scripts
from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.campaigns import CampaignCache
from claimcore.clock import now_ms
from claimcore.inventory import RedisInventory, refusal
from claimcore.keyspace import shard_keys

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
    """The user gives up a valid, unused voucher; True if its stock came back now."""
    async def call(c: CampaignConfig) -> list[int]:
        return await _recycle(inventory, c, shard_of(user_id, c.shards), "release", [(user_id, voucher_id)])

    return (await campaigns.on_live_map(config, call))[0] == 1


async def recycle_expired(inventory: RedisInventory, campaigns: CampaignCache,
                          config: CampaignConfig) -> int:
    """Sweep every shard's grants for expired, unused vouchers; returns how many came back."""
    if config.valid_for_ms <= 0:
        return 0

    async def sweep(c: CampaignConfig) -> int:
        deadline = now_ms() - c.valid_for_ms  # granted before this: expired
        counts = await asyncio.gather(*(
            _sweep_shard(inventory, c, s, deadline) for s in range(c.shard_slots)))
        return sum(counts)

    return await campaigns.on_live_map(config, sweep)


async def _sweep_shard(inventory: RedisInventory, config: CampaignConfig, shard: int,
                       granted_before: int) -> int:
    recycled = 0
    pending: list[tuple[str, str]] = []
    async for field, raw in inventory.redis.hscan_iter(shard_keys(config.campaign_id, shard).reqs,
                                                       count=SCAN_PAGE):
        voucher, at, _ = raw.split("|", 2)
        if int(at) <= granted_before:
            pending.append((field.split("|", 1)[0], voucher))
        if len(pending) >= CALL_PAIRS:
            recycled += (await _recycle(inventory, config, shard, "expire", pending))[0]
            pending = []
    if pending:
        recycled += (await _recycle(inventory, config, shard, "expire", pending))[0]
    return recycled


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
