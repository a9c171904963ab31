"""What a live reshard costs, step by step: `python -m benchmarks.reshard_cost [--grants N]`.

Creates a campaign on a private redis-server, grants N users on 4 shards,
then reshards to 16 and back down to 5, printing for each reshard the users
moved, the time spent in each step (fence, copy, unfreeze, stock) and the
frozen time per moved user. Nothing else runs meanwhile, so this is the
floor; under a burst the node running the reshard also serves claims.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store import reshard as rs
from claimcore.store.inventory import RedisInventory
from claimcore.store.replies import ClaimItem

STEPS = ("_fence", "_move_records", "_unfreeze", "_spread_stock")


def _timed(fn: Any, label: str, spent: dict[str, float]) -> Any:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            spent[label] = (time.perf_counter() - started) * 1000
    return wrapper


async def measure(port: int, grants: int) -> list[dict[str, Any]]:
    client = aioredis.Redis(port=port, decode_responses=True)
    inv = RedisInventory(client)
    await inv.create_campaign(CampaignConfig(campaign_id="cost", inventory=grants * 2, shards=4))
    by_shard: dict[int, list[ClaimItem]] = defaultdict(list)
    for i in range(grants):
        by_shard[shard_of(f"u{i}", 4)].append(ClaimItem(f"u{i}", "r", ""))
    for shard, items in by_shard.items():
        for k in range(0, len(items), 500):
            await inv.claim("cost", shard, 1, items[k:k + 500])
    rows = []
    for target in (16, 5):
        spent: dict[str, float] = {}
        originals = {name: getattr(rs, name) for name in STEPS}
        for name in STEPS:
            setattr(rs, name, _timed(originals[name], name.strip("_"), spent))
        try:
            result = await rs.reshard(inv, "cost", target)
        finally:
            for name, fn in originals.items():
                setattr(rs, name, fn)
        rows.append({
            "reshard": f"{result.from_shards} -> {result.to_shards}", "moved_users": result.moved_users,
            **{f"{k}_ms": round(v, 1) for k, v in spent.items()}, "frozen_ms": result.frozen_ms,
            "frozen_us_per_moved_user": round(result.frozen_ms * 1000 / max(1, result.moved_users), 1),
        })
    await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=20_000, help="users granted before resharding")
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        for row in asyncio.run(measure(server.port, args.grants)):
            print("  ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
