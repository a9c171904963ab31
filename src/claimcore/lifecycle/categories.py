"""One person, one category, one subsidy: across campaigns, atomically.

A campaign with `one_per_category` shares its category's registry
(`cc:{cat:<category>:b}:users`, 64 buckets by user) with every other campaign
of the category: a user may hold vouchers of one of them only. The registry
and a campaign's shards are different hash slots, so the node keeps the rule
by holding first (holds.lua), around each flush of claims:

1. hold each user of the batch for this campaign until a deadline, under the
   flush's own token; users held or used by another campaign of the category
   are answered NOT_ELIGIBLE;
2. claim.lua runs only while the holds are trusted (ARGV[4]: Redis TIME <=
   deadline - margin, else it refuses the whole call and the node holds again);
3. users who now hold a voucher of the campaign (any of their items in the
   flush granted, replayed, or at the limit) have their hold turned into a
   use; the others' holds are dropped, by this flush's token only: another
   node's flush holding the same user for the same campaign keeps its hold.

Holds left by a node that died are trusted by others until deadline + margin,
then settled by the next claimant from the stale campaign's records: a use if
the user holds a voucher there, free otherwise. Two claims of one user in two
campaigns of a category can therefore never both be granted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import NamedTuple

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.lifecycle.snregistry import HOLD_MS, MARGIN_MS, run_holds
from claimcore.store import scripts
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import SN_BUCKETS, category_key
from claimcore.store.replies import Code, Ineligible, ItemResult

BUCKETS = SN_BUCKETS
# the user holds a voucher of the campaign
HOLDING = (Code.GRANTED, Code.REPLAY, Code.ALREADY_CLAIMED, Code.OTHER_CHANNEL)


class Holds(NamedTuple):
    """One flush's holds on a campaign's users."""

    trusted_until: int   # claim.lua refuses the flush after this (Redis time)
    refused: set[str]    # users another campaign of the category has
    token: str           # this flush's own: only it lets these holds go


class CategoryGate:
    def __init__(self, inventory: RedisInventory) -> None:
        self.inventory = inventory

    async def _each(self, config: CampaignConfig, op: str, users: set[str], token: str = "",
                    arg: int = 0) -> list[list[str]]:
        return await run_holds(self.inventory, lambda b: category_key(config.category, b), op,
                               config.campaign_id, users, token, arg)

    async def hold(self, config: CampaignConfig, users: set[str]) -> Holds:
        """Hold the users for the campaign, under a token of this flush's own."""
        token = uuid.uuid4().hex[:16]
        deadline = 0
        refused: set[str] = set()
        for attempt in range(2):
            stale: list[tuple[str, str]] = []
            for reply in await self._each(config, "hold_each", users, token, HOLD_MS):
                n = int(reply[0])
                deadline = min(deadline or int(reply[1]), int(reply[1]))  # the earliest bucket's
                refused.update(reply[2:2 + n])
                stale += [(reply[i], reply[i + 1]) for i in range(2 + n, len(reply), 2)]
            if not stale:
                break
            await asyncio.gather(*(self._settle(config, user, record) for user, record in stale))
            users = {user for user, _ in stale}
            if attempt:  # settled, still not ours: refuse rather than loop
                refused.update(users)
        return Holds(deadline - MARGIN_MS, refused, token)

    async def settle_after(self, config: CampaignConfig, token: str,
                           results: Iterable[tuple[str, int]]) -> None:
        """After claim.lua: a user any of whose items in the flush holds a voucher of the campaign
        keeps it (a double tap may be GRANTED then SOLD_OUT); the others' holds of this flush go."""
        results = list(results)
        keep = {user for user, code in results if code in HOLDING}
        drop = {user for user, _ in results} - keep
        await asyncio.gather(*(self._each(config, op, users, token)
                               for op, users in (("commit", keep), ("drop", drop)) if users))

    async def drop(self, config: CampaignConfig, token: str, users: set[str]) -> None:
        if users:
            await self._each(config, "drop", users, token)

    async def _settle(self, config: CampaignConfig, user: str, record: str) -> None:
        """A stale hold of another campaign: a use if the user holds a voucher there, else free."""
        holder = record.split("|", 3)[3]
        holds_one = await self.inventory.holds_voucher(holder, user)
        await scripts.HOLDS(self.inventory.redis, [category_key(config.category, shard_of(user, BUCKETS))],
                            ["settle", holder, "", 1 if holds_one else 0, MARGIN_MS, user])


NOT_ELIGIBLE = ItemResult(Code.NOT_ELIGIBLE, "", Ineligible.ONE_PER_CATEGORY)
