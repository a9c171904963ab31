"""Helpers shared by the tests of the Lua scripts and RedisInventory in tests/store/
(test_claim_lua, test_script_reload, test_script_slots, test_borrowing, test_campaign_create,
test_concurrent_claims, test_inventory_model). `run` and `users_on` are shared with other
folders and live in tests/support.py.
"""

from __future__ import annotations

from typing import Any

import redis

from claimcore.campaign import CampaignConfig
from claimcore.store.inventory import Figures, RedisInventory
from claimcore.store.keyspace import shard_keys
from claimcore.store.replies import Record

T0 = 1_700_000_000_000  # a realistic unix-ms instant, used as "now" where the test controls time


def conserved(fig: Figures, inventory: int) -> bool:
    """Every unit is somewhere: on a shard, in a lease in transit, or granted."""
    return sum(fig.remaining) + fig.in_leases + sum(fig.granted) == inventory


def state_of(client: redis.Redis, cid: str, shard: int) -> dict[str, str]:
    """The shard's state hash, as Redis holds it."""
    return client.hgetall(shard_keys(cid, shard).state)


def config(cid: str, inventory: int, shards: int, **kw: Any) -> CampaignConfig:
    return CampaignConfig(campaign_id=cid, inventory=inventory, shards=shards, **kw)


async def get_request(inv: RedisInventory, cid: str, shard: int, user: str, rid: str) -> Record | None:
    """The record of one (user, request id), or None."""
    found = await inv.lookup(cid, shard, user, rid)
    return found[0] if found else None
