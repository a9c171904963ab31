"""Micro-batching: concurrent claims for one shard share one claim.lua call.

Each (campaign, shard) has a lane: a queue and at most one script call in
flight. A claim that arrives while the lane is busy waits for the next call,
which takes everything queued (up to max_batch). Under light load a claim
goes out on the next event-loop turn alone; under a burst, batches grow by
themselves, so one Redis round trip serves many users without a timer.

Claims the shard could not serve (EMPTY) trigger a borrow from other shards
and go back to the front of the queue; when nothing is left to borrow the
campaign is sold out and they are answered SOLD_OUT.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from claimcore.campaign import CampaignConfig
from claimcore.inventory import ClaimItem, Code, ItemResult, RedisInventory, now_ms

SOLD_OUT = ItemResult(Code.SOLD_OUT, "", 0)

Waiter = tuple[ClaimItem, "asyncio.Future[ItemResult]"]


class Overloaded(Exception):
    """Too many claims queued on this node: shed instead of queueing without bound."""


class _Lane:
    __slots__ = ("queue", "busy")

    def __init__(self) -> None:
        self.queue: deque[Waiter] = deque()
        self.busy = False


class ClaimBatcher:
    def __init__(
        self,
        inventory: RedisInventory,
        is_sold_out: Callable[[str], bool],
        on_sold_out: Callable[[CampaignConfig], None],
        max_batch: int = 256,
        max_queued: int = 50_000,
    ) -> None:
        self.inventory = inventory
        self.is_sold_out = is_sold_out
        self.on_sold_out = on_sold_out
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.queued = 0
        self.calls = 0        # claim.lua calls made (for stats and tests)
        self.items_sent = 0   # claims carried by those calls
        self._lanes: dict[tuple[str, int], _Lane] = {}

    def submit(self, config: CampaignConfig, shard: int, item: ClaimItem) -> asyncio.Future[ItemResult]:
        if self.queued >= self.max_queued:
            raise Overloaded(f"{self.queued} claims queued on this node")
        key = (config.campaign_id, shard)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ItemResult] = loop.create_future()
        future.add_done_callback(_mark_retrieved)
        lane.queue.append((item, future))
        self.queued += 1
        if not lane.busy:
            lane.busy = True
            loop.create_task(self._drain(config, shard, lane))
        return future

    async def _drain(self, config: CampaignConfig, shard: int, lane: _Lane) -> None:
        try:
            while lane.queue:
                size = min(self.max_batch, len(lane.queue))
                batch = [lane.queue.popleft() for _ in range(size)]
                self.queued -= size
                await self._run(config, shard, lane, batch)
        finally:
            lane.busy = False

    async def _run(self, config: CampaignConfig, shard: int, lane: _Lane, batch: list[Waiter]) -> None:
        self.calls += 1
        self.items_sent += len(batch)
        try:
            _, results = await self.inventory.claim(
                config.campaign_id, shard, now_ms(), [item for item, _ in batch]
            )
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
            _fail(batch, exc)
            return
        empty: list[Waiter] = []
        for waiter, result in zip(batch, results, strict=True):
            if result.code == Code.EMPTY:
                empty.append(waiter)
            elif not waiter[1].done():
                waiter[1].set_result(result)
        if empty:
            await self._refill(config, shard, lane, empty)

    async def _refill(self, config: CampaignConfig, shard: int, lane: _Lane, empty: list[Waiter]) -> None:
        moved = 0
        if not self.is_sold_out(config.campaign_id):
            try:
                moved = await self.inventory.borrow(config, shard, len(empty))
            except Exception as exc:  # noqa: BLE001
                _fail(empty, exc)
                return
        if moved:
            lane.queue.extendleft(reversed(empty))  # first in line for the new stock
            self.queued += len(empty)
            return
        self.on_sold_out(config)
        for _, future in empty:
            if not future.done():
                future.set_result(SOLD_OUT)


def _mark_retrieved(future: asyncio.Future[ItemResult]) -> None:
    """A caller that gave up (deadline) no longer awaits: don't warn about its error."""
    if not future.cancelled():
        future.exception()


def _fail(batch: list[Waiter], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
