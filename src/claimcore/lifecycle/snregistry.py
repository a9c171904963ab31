"""Product serial numbers (SN codes): each subsidised once, across all campaigns.

An SN code's record lives in one of SN_BUCKETS hash slots of its own
(`cc:{sn:b}:sns`), not in any campaign's, so "once across all campaigns" is
a cross-slot rule, kept by holding before redeeming (holds.lua):

1. hold every SN code of the order, all or none, until a deadline;
2. redeem.lua records the order only while the holds are trusted
   (now <= deadline - margin; deadlines and now are Redis TIME, never a node's clock);
3. commit the holds (used for good) if the order was redeemed, else release them.

A node that dies between 1 and 3 leaves holds that others trust until
deadline + margin. After that, the next order that wants one of those SN
codes settles it: it reads the stale holder's order record, and the hold
becomes used if that order was redeemed, free otherwise. The margin covers
clock differences between Redis masters, so two orders can never both use an SN.
A reversed order releases its SN codes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable

from claimcore._fast import shard_of
from claimcore.store import scripts
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import SN_BUCKETS, sn_key, stack_key
from claimcore.store.replies import HoldCode

HOLD_MS = 5_000
MARGIN_MS = 1_000


class SnHoldLost(Exception):
    """The SN holds outlived their trusted time before the order was recorded: retry."""


def owner_of(campaign_id: str, user_id: str, order_id: str) -> str:
    return f"{campaign_id}|{user_id}|{order_id}"


async def run_holds(inventory: RedisInventory, key_of: Callable[[int], str], op: str, owner: str,
                    things: Iterable[str], token: str = "", arg: int = 0) -> list[list[str]]:
    """holds.lua's `op` for `owner` (as the holder `token`; `arg` as holds.lua says) on each bucket
    the things fall in (all at once); the replies. Used by the SN registry and the category
    registry (categories.py)."""
    buckets: dict[int, list[str]] = defaultdict(list)
    for thing in things:
        buckets[shard_of(thing, SN_BUCKETS)].append(thing)
    replies = await asyncio.gather(*(
        scripts.HOLDS(inventory.redis, [key_of(b)], [op, owner, token, arg, MARGIN_MS, *members])
        for b, members in buckets.items()))
    return [[str(x) for x in reply] for reply in replies]


class SnRegistry:
    def __init__(self, inventory: RedisInventory) -> None:
        self.inventory = inventory

    async def _each(self, op: str, owner: str, sns: list[str], token: str = "", arg: int = 0
                    ) -> list[list[str]]:
        return await run_holds(self.inventory, sn_key, op, owner, sns, token, arg)

    async def hold(self, owner: str, sns: list[str]) -> tuple[int, list[str], str]:
        """(trusted-until time, [], token) if every SN code is now held for this order by this
        attempt (the token); else (0, the codes used or held by other orders, ""), with none of
        this attempt's holds left behind (and none of the order's committed uses touched)."""
        token = uuid.uuid4().hex[:16]
        for _ in range(3):
            replies = await self._each("hold", owner, sns, token, HOLD_MS)
            taken = [sn for r in replies if int(r[0]) == HoldCode.TAKEN for sn in r[1:]]
            stale = [(r[i], r[i + 1]) for r in replies if int(r[0]) == HoldCode.STALE
                     for i in range(1, len(r), 2)]
            if not taken and not stale:  # trusted until the earliest bucket's deadline - margin
                return min(int(r[1]) for r in replies) - MARGIN_MS, [], token
            await self.drop(owner, token, sns)  # other buckets may have held for us
            if taken:
                return 0, taken, ""
            for sn, record in stale:
                await self._settle(sn, record)
        return 0, [sn for sn, _ in stale], ""

    async def commit(self, owner: str, sns: list[str]) -> None:
        await self._each("commit", owner, sns)

    async def drop(self, owner: str, token: str, sns: list[str]) -> None:
        """Let go of this attempt's holds; the order's uses (a redeemed order's) stay."""
        await self._each("drop", owner, sns, token)

    async def release(self, owner: str, sns: list[str]) -> None:
        """A reversed order's SN codes: free to subsidise again."""
        await self._each("release", owner, sns)

    async def _settle(self, sn: str, record: str) -> None:
        """A hold past its deadline: used if its order was redeemed (or, for a stacked order, its
        decision was taken: committing may still be under way), free otherwise."""
        holder = record.split("|", 3)[3]
        campaign_id, user_id, order_id = holder.split("|")
        order = await self.inventory.order_record(campaign_id, user_id, order_id)
        used = bool(order) and (order.startswith("R") or (
            order.startswith("P") and await stack_decided(self.inventory, user_id, order_id, order)))
        await scripts.HOLDS(self.inventory.redis, [sn_key(shard_of(sn, SN_BUCKETS))],
                            ["settle", holder, "", 1 if used else 0, MARGIN_MS, sn])


def stack_owner(user_id: str, order_id: str, instance: str) -> str:
    """A stacked order's decision is kept under (and owned by) the order instance, not only its id:
    another order that reuses the id, over other campaigns, has a decision of its own."""
    return f"{user_id}|{order_id}|{instance}"


async def stack_decided(inventory: RedisInventory, user_id: str, order_id: str, prepared: str) -> bool:
    """Whether the stacked order that left this prepared record ("P|...|instance") was decided."""
    key = stack_owner(user_id, order_id, prepared.rsplit("|", 1)[1])
    decision = await inventory.redis.hget(stack_key(shard_of(key, SN_BUCKETS)), key)
    return bool(decision) and decision.startswith("U|")
