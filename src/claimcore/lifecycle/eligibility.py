"""Eligibility (资格核验), loaded before the launch and checked inside the claim.

Each user's record lives on the user's shard, in `cc:{C:s}:elig`, so claim.lua
checks it in the same atomic step as the grant: no external call, no extra
round trip, and a change (变更资格) is seen by a claim wholly or not at all.
A campaign's rule (allow list, regions of residence, required tags) is kept
in every shard's state; a deny list applies once any record is loaded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from claimcore import validation as v
from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import shard_keys
from claimcore.store.replies import refusal

MAX_RECORDS = 10_000  # per call


@dataclass(frozen=True)
class Eligibility:
    user_id: str
    allowed: bool = False
    denied: bool = False
    region: str = ""
    tags: tuple[str, ...] = ()
    remove: bool = False

    def check(self) -> None:
        v.check_id("user_id", self.user_id, v.USER_ID)
        if self.region:
            v.check_id("region", self.region, v.REGION)
        if len(self.tags) > v.MAX_REGIONS:
            raise v.InvalidInput(f"at most {v.MAX_REGIONS} tags per user")
        for tag in self.tags:
            v.check_id("tag", tag, v.REGION)

    def line(self) -> str:
        """The user's line for eligibility.lua: an empty record removes it."""
        if self.remove:
            return f"{self.user_id}\t"
        return f"{self.user_id}\t{int(self.allowed)}|{int(self.denied)}|{self.region}|{','.join(self.tags)}"


async def update(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig,
                 records: Sequence[Eligibility]) -> int:
    """Write the records on their users' shards (one call per shard); returns how many."""
    if not 1 <= len(records) <= MAX_RECORDS:
        raise v.InvalidInput(f"a call carries 1 to {MAX_RECORDS} records, not {len(records)}")
    for record in records:
        record.check()
    seen: set[str] = set()
    for r in records:
        if r.user_id in seen:
            raise v.InvalidInput(f"records: user_id {r.user_id!r} appears twice in one call")
        seen.add(r.user_id)

    call_id = uuid.uuid4().hex  # the same for every shard and every retry of this one update

    async def write(c: CampaignConfig) -> int:
        by_shard: dict[int, list[str]] = defaultdict(list)
        for record in records:
            by_shard[shard_of(record.user_id, c.shards)].append(record.line())

        async def one(shard: int, lines: list[str]) -> int:
            keys = shard_keys(c.campaign_id, shard)
            reply = await scripts.ELIGIBILITY(inventory.redis, [keys.state, keys.elig, keys.elig_calls],
                                              [c.epoch, "\n".join(lines), call_id])
            if int(reply[0]) < 0:
                raise refusal(c.campaign_id, shard, reply)
            return int(reply[0])

        # Rewriting a shard's records again after a STALE or MOVING is harmless: the same values.
        return sum(await asyncio.gather(*(one(s, lines) for s, lines in by_shard.items())))

    return await campaigns.on_live_map(config, write)
