"""Micro-batching: concurrent claims share Redis round trips.

Two levels of coalescing, because a Redis round trip costs the node far more
CPU (~70-170 us here) than a claim's own work:

- per shard: each (campaign, shard) has a lane; all claims queued in a lane
  go out as one claim.lua call (up to max_batch);
- per node: one flusher sends one call for every lane that has work, all in
  a single pipeline, with at most one flush in flight. Every flush waits
  `linger_s` first (Nagle's trade): a node admits claims far slower than a
  round trip completes, so without a wait each call would carry about one
  claim. A few milliseconds of latency buy several claims per call.

Each lane therefore has at most one script call in flight. Claims the shard
could not serve (EMPTY) trigger a borrow from other shards and go back to the
front of their lane; when nothing is left to borrow the campaign is sold out
and they are answered SOLD_OUT.

A ClaimBatch call's claims share one future (`ClaimGroup`): each queues in its
lane as a `Slot` of the group, so a claim costs no future and no gather of its own.

Lanes belong to one epoch of a campaign's shard map. When an operator
reshards, the shards refuse the old epoch (STALE): the batcher reloads the
map and routes those claims again by the new one. A shard frozen while users
move into it answers MOVING: its claims wait in their lane and are retried
every `moving_retry_s`, for at most `max_moving_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.lifecycle.categories import NOT_ELIGIBLE, CategoryGate, Holds
from claimcore.node import tracing
from claimcore.node.metrics import NodeMetrics
from claimcore.store.inventory import RedisInventory
from claimcore.store.replies import (
    MAX_MOVING_S,
    MOVING_RETRY_S,
    ClaimItem,
    Code,
    HoldsLost,
    ItemResult,
    ShardMoving,
    StaleMap,
)

log = logging.getLogger(__name__)

SOLD_OUT = ItemResult(Code.SOLD_OUT, "", 0)



class ClaimGroup:
    """The queued claims of one ClaimBatch call: one future, resolved with their results in order once
    each has one, or with the first error. An asyncio future per claim plus a gather over them cost
    about 5 µs a claim, more than the rest of the node's work on it."""

    __slots__ = ("future", "results", "left")

    def __init__(self, size: int) -> None:
        self.future: asyncio.Future[list[ItemResult]] = asyncio.get_running_loop().create_future()
        self.results: list[ItemResult | None] = [None] * size
        self.left = size


class Slot:
    """One claim's place in its ClaimGroup: to the batcher, a future of one result (done, set_result,
    set_exception), like a unary claim's."""

    __slots__ = ("group", "index")

    def __init__(self, group: ClaimGroup, index: int) -> None:
        self.group = group
        self.index = index

    def done(self) -> bool:
        return self.group.future.done()

    def set_result(self, result: ItemResult) -> None:
        group = self.group
        group.results[self.index] = result
        group.left -= 1
        if group.left == 0 and not group.future.done():
            group.future.set_result(group.results)  # type: ignore[arg-type]  # all set by now

    def set_exception(self, exc: BaseException) -> None:
        if not self.group.future.done():
            self.group.future.set_exception(exc)


Waiter = tuple[ClaimItem, "asyncio.Future[ItemResult] | Slot"]
LaneKey = tuple[str, int, int]  # campaign, epoch of its shard map, shard
# Reload a campaign's map, at least at this epoch (None: the campaign is gone).
Reload = Callable[[str, int], Awaitable[CampaignConfig | None]]


class Overloaded(Exception):
    """Too many claims queued on this node: shed instead of queueing without bound."""


class _Lane:
    __slots__ = ("config", "shard", "queue", "moving_since")

    def __init__(self, config: CampaignConfig, shard: int) -> None:
        self.config = config
        self.shard = shard
        self.queue: deque[Waiter] = deque()
        self.moving_since = 0.0  # monotonic time of the first MOVING in a row, 0 if none

    @property
    def key(self) -> LaneKey:
        return (self.config.campaign_id, self.config.epoch, self.shard)


class ClaimBatcher:
    def __init__(
        self,
        inventory: RedisInventory,
        is_sold_out: Callable[[str], bool],
        on_sold_out: Callable[[CampaignConfig], None],
        reload: Reload,
        max_batch: int = 256,
        max_queued: int = 50_000,
        linger_s: float = 0.002,
        moving_retry_s: float = MOVING_RETRY_S,
        max_moving_s: float = MAX_MOVING_S,
        gate: CategoryGate | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.inventory = inventory
        self.is_sold_out = is_sold_out
        self.on_sold_out = on_sold_out
        self.reload = reload
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.linger_s = linger_s
        self.moving_retry_s = moving_retry_s
        self.max_moving_s = max_moving_s
        self.gate = gate
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.queued = 0
        self._lanes: dict[LaneKey, _Lane] = {}
        self._ready: dict[LaneKey, _Lane] = {}  # lanes with queued claims
        self._flushing = False
        self._scheduled = False
        # With tracing on: each queued claim's call span context, for its flush span's links.
        self._traced: dict[asyncio.Future[Any], object] = {}

    def submit(self, config: CampaignConfig, shard: int, item: ClaimItem) -> asyncio.Future[ItemResult]:
        if self.queued >= self.max_queued:
            raise Overloaded(f"{self.queued} claims queued on this node")
        future: asyncio.Future[ItemResult] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_mark_retrieved)
        if tracing.enabled:
            self._traced[future] = tracing.current_span_context()
            future.add_done_callback(self._traced.pop)
        self._lane(config, shard).queue.append((item, future))
        self.queued += 1
        self._wake(self._lane(config, shard))
        return future

    def submit_group(self, claims: list[tuple[CampaignConfig, int, ClaimItem]]
                     ) -> asyncio.Future[list[ItemResult]]:
        """Queue a ClaimBatch call's claims, each (config, shard, item) in its lane: one future for all,
        resolved with their results in order. Overloaded if they do not all fit: none is queued then."""
        if self.queued + len(claims) > self.max_queued:
            raise Overloaded(f"{self.queued} claims queued on this node, {len(claims)} more asked")
        group = ClaimGroup(len(claims))
        group.future.add_done_callback(_mark_retrieved)
        if tracing.enabled:
            self._traced[group.future] = tracing.current_span_context()
            group.future.add_done_callback(self._traced.pop)
        lane_of = self._lane
        ready = self._ready
        for index, (config, shard, item) in enumerate(claims):
            lane = lane_of(config, shard)
            lane.queue.append((item, Slot(group, index)))
            ready[lane.key] = lane
        self.queued += len(claims)
        self._wake_flusher()
        return group.future

    def _lane(self, config: CampaignConfig, shard: int) -> _Lane:
        key = (config.campaign_id, config.epoch, shard)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(config, shard)
        return lane

    def _requeue(self, lane: _Lane, waiters: list[Waiter]) -> None:
        """Put waiters back at the front of a lane: they were first in line."""
        lane.queue.extendleft(reversed(waiters))
        self.queued += len(waiters)
        self._wake(lane)

    def _wake(self, lane: _Lane) -> None:
        self._ready[lane.key] = lane
        self._wake_flusher()

    def _wake_flusher(self) -> None:
        if not (self._flushing or self._scheduled):
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.linger_s, self._start_flushing)

    def _start_flushing(self) -> None:
        self._scheduled = False
        self._flushing = True
        asyncio.get_running_loop().create_task(self._flush_until_idle())

    async def _flush_until_idle(self) -> None:
        try:
            while self._ready:
                await self._flush()
                if self._ready and self.linger_s:
                    await asyncio.sleep(self.linger_s)
        finally:
            self._flushing = False

    async def _flush(self) -> None:
        lanes = list(self._ready.items())
        self._ready.clear()
        calls: list[tuple[_Lane, list[Waiter]]] = []
        for key, lane in lanes:
            batch = []
            while lane.queue and len(batch) < self.max_batch:
                waiter = lane.queue.popleft()
                self.queued -= 1
                if not waiter[1].done():  # its caller's deadline may have passed
                    batch.append(waiter)
            if lane.queue:
                self._ready[key] = lane  # the rest goes in the next flush
            if batch:
                calls.append((lane, batch))
        if not calls:
            return
        trusted: dict[int, Holds] = {}  # by id(lane): the category holds of its claims
        if self.gate is not None and any(lane.config.one_per_category for lane, _ in calls):
            calls = await self._hold_categories(calls, trusted)
            if not calls:
                return
        self.metrics.flushed([len(batch) for _, batch in calls])
        span = tracing.flush_span([(lane.config.campaign_id, len(batch)) for lane, batch in calls],
                                  [self._traced.get(_owner(f)) for _, batch in calls for _, f in batch]
                                  ) if tracing.enabled else None
        try:
            replies = await self.inventory.claim_many([
                (lane.config.campaign_id, lane.shard, lane.config.epoch, [item for item, _ in batch],
                 trusted[id(lane)].trusted_until if id(lane) in trusted else 0)
                for lane, batch in calls
            ], now_ms())
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
            if span is not None:
                tracing.end_span(span, exc)
            for _, batch in calls:
                _fail(batch, exc)
            return
        if span is not None:
            tracing.end_span(span)
        for (lane, batch), reply in zip(calls, replies, strict=True):
            if id(lane) in trusted:
                self._settle_categories(lane, trusted[id(lane)].token, batch, reply)
            if isinstance(reply, HoldsLost):  # nothing was written: hold again, first in line
                self._requeue(lane, batch)
                continue
            if isinstance(reply, StaleMap):
                asyncio.get_running_loop().create_task(self._reroute(lane, batch, reply))
                continue
            if isinstance(reply, ShardMoving):
                asyncio.get_running_loop().create_task(self._wait_for_move(lane, batch, reply))
                continue
            if isinstance(reply, Exception):
                _fail(batch, reply)
                continue
            lane.moving_since = 0.0
            empty: list[Waiter] = []
            for waiter, result in zip(batch, reply[1], strict=True):
                if result.code == Code.EMPTY:
                    empty.append(waiter)
                elif not waiter[1].done():
                    waiter[1].set_result(result)
            if empty:
                asyncio.get_running_loop().create_task(self._refill(lane, empty))

    async def _refill(self, lane: _Lane, empty: list[Waiter]) -> None:
        """Borrow stock for claims that found their shard empty, or call it sold out."""
        config = lane.config
        moved = 0
        if not self.is_sold_out(config.campaign_id):
            try:
                moved = await self.inventory.borrow(config, lane.shard, len(empty))
            except StaleMap as exc:
                await self._reroute(lane, empty, exc)
                return
            except Exception as exc:  # noqa: BLE001
                _fail(empty, exc)
                return
        if moved:
            self._requeue(lane, empty)  # first in line for the new stock
            return
        self.on_sold_out(config)
        for _, future in empty:
            if not future.done():
                future.set_result(SOLD_OUT)


    async def _hold_categories(self, calls: list[tuple[_Lane, list[Waiter]]], trusted: dict[int, Holds]
                               ) -> list[tuple[_Lane, list[Waiter]]]:
        """Hold the users of one_per_category lanes (categories.py); answer those another campaign
        of the category has NOT_ELIGIBLE. Returns the calls left to send."""
        assert self.gate is not None
        gated = [(lane, batch) for lane, batch in calls if lane.config.one_per_category]
        held = await asyncio.gather(*(
            self.gate.hold(lane.config, {item.user_id for item, _ in batch}) for lane, batch in gated
        ), return_exceptions=True)
        kept: dict[int, list[Waiter]] = {}
        for (lane, batch), outcome in zip(gated, held, strict=True):
            if isinstance(outcome, BaseException):
                _fail(batch, outcome)
                kept[id(lane)] = []
                continue
            trusted[id(lane)] = outcome
            kept[id(lane)] = [w for w in batch if w[0].user_id not in outcome.refused]
            for waiter in batch:
                if waiter[0].user_id in outcome.refused and not waiter[1].done():
                    waiter[1].set_result(NOT_ELIGIBLE)
        out = [(lane, kept.get(id(lane), batch)) for lane, batch in calls]
        return [(lane, batch) for lane, batch in out if batch]

    def _settle_categories(self, lane: _Lane, token: str, batch: list[Waiter], reply: object) -> None:
        """After claim.lua: keep or drop the batch's category holds (this flush's, by its token), in
        the background. An unknown outcome (an error) leaves them to expire and be settled from
        the records."""
        assert self.gate is not None
        if isinstance(reply, HoldsLost):
            task = self.gate.drop(lane.config, token, {item.user_id for item, _ in batch})
        elif isinstance(reply, Exception):
            return
        else:
            _, results = reply  # type: ignore[misc]
            task = self.gate.settle_after(lane.config, token, [
                (item.user_id, result.code) for (item, _), result in zip(batch, results, strict=True)])
        asyncio.get_running_loop().create_task(task).add_done_callback(
            partial(_log_failure, lane.config.campaign_id))

    async def _reroute(self, lane: _Lane, waiters: list[Waiter], stale: StaleMap) -> None:
        """The campaign was resharded: route these claims again by the new map."""
        try:
            config = await self.reload(stale.campaign_id, stale.epoch)
        except Exception as exc:  # noqa: BLE001
            _fail(waiters, exc)
            return
        if config is None or config.epoch < stale.epoch:
            _fail(waiters, stale)
            return
        # The old epoch's lane goes, with whatever still waits in it: the shards refuse it.
        self._lanes.pop(lane.key, None)
        self._ready.pop(lane.key, None)
        leftover = list(lane.queue)
        lane.queue.clear()
        self.queued -= len(leftover)
        by_lane: dict[LaneKey, list[Waiter]] = {}
        for waiter in waiters + leftover:
            by_lane.setdefault(self._lane(config, shard_of(waiter[0].user_id, config.shards)).key,
                               []).append(waiter)
        for key, moved in by_lane.items():
            self._requeue(self._lanes[key], moved)

    async def _wait_for_move(self, lane: _Lane, waiters: list[Waiter], moving: ShardMoving) -> None:
        """The shard is frozen by a reshard in progress: retry shortly, for a bounded time."""
        started = lane.moving_since = lane.moving_since or time.monotonic()
        if time.monotonic() - started > self.max_moving_s:
            _fail(waiters, moving)
            return
        await asyncio.sleep(self.moving_retry_s)
        self._requeue(lane, waiters)


def _log_failure(campaign_id: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("category holds not settled (they expire and get settled later): %s", task.exception(),
                    extra={"campaign": campaign_id})


def _owner(waiting: asyncio.Future[ItemResult] | Slot) -> asyncio.Future[Any]:
    """The future a claim's caller awaits: its own, or its group's."""
    return waiting.group.future if isinstance(waiting, Slot) else waiting


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    """A caller that gave up (deadline) no longer awaits: don't warn about its error."""
    if not future.cancelled():
        future.exception()


def _fail(batch: list[Waiter], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
