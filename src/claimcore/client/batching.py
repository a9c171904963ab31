"""The client's claim batcher: concurrent claim() calls coalesce into ClaimBatch calls.

Each claim waits in a lane (one per node it must go to and per call metadata:
a ClaimBatch carries one set of metadata). A lane is sent:

- at once (on the event loop's next turn, so that the claims submitted in the
  same turn go together) when the client has no call in flight: a lone
  caller, or the first of a burst, pays no linger;
- when it is full (`max_batch` claims);
- after `linger_s` otherwise (calls are in flight: waiting a little fills the
  batch), or sooner, when the last call in flight comes back.

A lane of one claim is sent as a unary Claim: its status is that caller's
own. A ClaimBatch is all or nothing on the node (one bad item rejects the
whole batch, and a rejected batch writes nothing), so its failure is
reported to every claim of it: a retryable status (the outcome is unknown)
with one shared back-off jitter, so the retries re-batch; any other status
marks the tickets `refused`, and each claim is sent again alone, so that only
the claim at fault gets the refusal. The retry loop itself, and the choice of
the next node, are the caller's (ClaimClient._send_claim).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

Metadata = tuple[tuple[str, str], ...]


@dataclass
class BatchStats:
    """What the batcher sent, over the client's life."""

    batches: int = 0        # ClaimBatch calls
    alone: int = 0          # unary Claim calls (a lane of one claim)
    claims: int = 0         # claims sent, in either
    largest: int = 0        # the most claims one call carried
    sent_idle: int = 0      # lanes sent at once: nothing was in flight
    sent_full: int = 0      # lanes sent because they were full
    sent_lingered: int = 0  # lanes sent after the linger (or when the last call in flight came back)
    refused: int = 0        # batches refused as a whole (non-retryable status): their claims went alone
    failed: int = 0         # batches failed with a retryable status: their claims were retried
    waits: list[float] | None = None  # set to [] to collect each claim's seconds in its lane


    @property
    def calls(self) -> int:
        return self.batches + self.alone


class Ticket:
    """One claim's attempt, waiting in a lane and then in a call."""

    __slots__ = ("request", "future", "submitted", "deadline", "node", "jitter", "refused")

    def __init__(self, request: pb.ClaimRequest, future: asyncio.Future[pb.ClaimResponse],
                 submitted: float, deadline: float, node: int | None) -> None:
        self.request = request
        self.future = future
        self.submitted = submitted  # loop time
        self.deadline = deadline
        self.node = node          # the stub it went to (None until sent, for a first attempt)
        self.jitter = random.random()
        self.refused = False      # its batch was refused for some item: send it again alone


class _Lane:
    __slots__ = ("key", "node", "metadata", "tickets", "timer")

    def __init__(self, key: tuple[int | None, Metadata], node: int | None, metadata: Metadata) -> None:
        self.key = key
        self.node = node
        self.metadata = metadata
        self.tickets: list[Ticket] = []
        self.timer: asyncio.TimerHandle | None = None


def copy_error(err: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    """A batch's error for one of its callers: each raises its own instance."""
    return grpc.aio.AioRpcError(err.code(), err.initial_metadata(), err.trailing_metadata(),
                                err.details(), err.debug_error_string())


class ClaimBatcher:
    def __init__(self, stubs: Sequence[pb_grpc.ClaimServiceStub], pick: Callable[[], int],
                 retryable: frozenset[grpc.StatusCode], *, max_batch: int, linger_s: float) -> None:
        """stubs: one per connection; pick(): the stub a first attempt's batch goes to."""
        self._stubs = stubs
        self._pick = pick
        self._retryable = retryable
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.in_flight = 0  # calls sent and not yet answered
        self.stats = BatchStats()
        self._lanes: dict[tuple[int | None, Metadata], _Lane] = {}
        self._due: list[_Lane] = []  # lanes that got claims this turn of the loop
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, request: pb.ClaimRequest, node: int | None, metadata: Metadata,
               timeout: float) -> Ticket:
        """Queue one claim for `node` (None: whichever node the batch goes to); await ticket.future."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        ticket = Ticket(request, loop.create_future(), now, now + timeout, node)
        key = (node, metadata)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key, node, metadata)
        lane.tickets.append(ticket)
        if len(lane.tickets) >= self.max_batch:
            self.stats.sent_full += 1
            self._send(lane)
        elif len(lane.tickets) == 1 and lane.timer is None:
            if not self._due:
                loop.call_soon(self._turn_over)
            self._due.append(lane)
        return ticket

    def _turn_over(self) -> None:
        """The claims of this turn are in: send them if nothing is in flight, else linger."""
        due, self._due = self._due, []
        idle = self.in_flight == 0
        for lane in due:
            if not lane.tickets or lane.timer is not None:
                continue  # sent full meanwhile, or already lingering
            if idle or self.linger_s <= 0:
                self.stats.sent_idle += idle
                self.stats.sent_lingered += not idle
                self._send(lane)
            else:
                lane.timer = asyncio.get_running_loop().call_later(self.linger_s, self._lingered, lane)

    def _lingered(self, lane: _Lane) -> None:
        lane.timer = None
        if lane.tickets:
            self.stats.sent_lingered += 1
            self._send(lane)

    def _send(self, lane: _Lane) -> None:
        """Send what the lane holds (callers that gave up are left out), as one call or several."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        waiting = [t for t in lane.tickets if not t.future.done()]
        lane.tickets = []
        if self.stats.waits is not None:
            now = asyncio.get_running_loop().time()
            self.stats.waits.extend(now - t.submitted for t in waiting)
        if self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]  # lanes are cheap; a retry lane must not live forever
        for start in range(0, len(waiting), self.max_batch):
            chunk = waiting[start:start + self.max_batch]
            node = lane.node if lane.node is not None else self._pick()
            self.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._call(node, lane.metadata, chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, node: int, metadata: Metadata, tickets: list[Ticket]) -> None:
        stats = self.stats
        stats.claims += len(tickets)
        stats.largest = max(stats.largest, len(tickets))
        for t in tickets:
            t.node = node
        stub = self._stubs[node]
        timeout = max(t.deadline for t in tickets) - asyncio.get_running_loop().time()
        try:
            if len(tickets) == 1:
                stats.alone += 1
                await self._call_alone(stub, metadata, tickets[0], timeout)
            else:
                stats.batches += 1
                await self._call_batch(stub, metadata, tickets, timeout)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:  # nothing left in flight: lingering lanes need not wait longer
                for lane in [lane for lane in self._lanes.values() if lane.timer is not None]:
                    self.stats.sent_lingered += 1
                    self._send(lane)

    @staticmethod
    async def _call_alone(stub: pb_grpc.ClaimServiceStub, metadata: Metadata, ticket: Ticket,
                          timeout: float) -> None:
        try:
            reply = await stub.Claim(ticket.request, timeout=max(timeout, 0.001), metadata=metadata)
        except grpc.aio.AioRpcError as err:
            if not ticket.future.done():
                ticket.future.set_exception(err)
        else:
            if not ticket.future.done():
                ticket.future.set_result(reply)

    async def _call_batch(self, stub: pb_grpc.ClaimServiceStub, metadata: Metadata,
                          tickets: list[Ticket], timeout: float) -> None:
        request = pb.ClaimBatchRequest(claims=[t.request for t in tickets])
        try:
            reply = await stub.ClaimBatch(request, timeout=max(timeout, 0.001), metadata=metadata)
        except grpc.aio.AioRpcError as err:
            retryable = err.code() in self._retryable
            if retryable:
                self.stats.failed += 1
            else:
                self.stats.refused += 1
            jitter = random.random()  # one back-off for the whole batch: its retries go out together
            for t in tickets:
                if not t.future.done():
                    t.jitter, t.refused = jitter, not retryable
                    t.future.set_exception(copy_error(err))
            return
        for t, item in zip(tickets, reply.replies, strict=True):  # the replies are in request order
            if not t.future.done():
                t.future.set_result(item)

    async def close(self) -> None:
        """Send what waits, and wait for the calls in flight (their callers get their answers)."""
        for lane in list(self._lanes.values()):
            self._send(lane)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def describe(stats: BatchStats) -> dict[str, Any]:
    """The figures, for logs and benchmarks: claims per call among them."""
    figures: dict[str, Any] = {k: v for k, v in vars(stats).items() if k != "waits"}
    figures["claims_per_call"] = round(stats.claims / stats.calls, 2) if stats.calls else 0.0
    return figures
