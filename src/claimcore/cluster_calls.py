"""Script calls on a Redis Cluster.

redis-py refuses scripts in cluster pipelines, so for now each call is its own
EVALSHA, all of a flush sent concurrently; redis-py routes each by its first
key's slot and follows MOVED and ASK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from claimcore.scripts import LuaScript

ScriptCall = tuple[Sequence[str], Sequence[Any]]  # (keys, args), all keys in one slot


async def eval_on_cluster(client: RedisCluster, script: LuaScript, calls: list[ScriptCall]) -> list[Any]:
    """One reply per call, in order; a call that failed has its exception in its place."""
    return await asyncio.gather(
        *(client.evalsha(script.sha, len(keys), *keys, *args) for keys, args in calls),
        return_exceptions=True,
    )
