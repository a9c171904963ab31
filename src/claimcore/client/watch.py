"""CampaignWatch: the campaign states the nodes push, kept by the client to answer SOLD_OUT itself.

    async with CampaignWatch(["10.0.0.5:50051", "10.0.0.6:50051"], ["spring-2027"]) as watch:
        reply = watch.local_answer("spring-2027")   # a SOLD_OUT reply, or None: ask a node

One WatchCampaigns stream (ClaimService) to one node at a time; when it breaks (the node stopped,
died, or went silent for SILENT_S) the watch subscribes again to the next node, after a jittered
back-off that doubles up to MAX_BACKOFF_S. It keeps the latest state of each campaign with the
time it was received.

`local_answer` gives SOLD_OUT only while the latest state is CAMPAIGN_PHASE_SOLD_OUT and fresh:
received less than its `sold_out_valid_for_ms` ago, less MARGIN_MS, and not already more than
MAX_AGE_MS old by the node's clock when it arrived (a state held up in the network counts as
stale). Past that, stock may be coming back without the client having heard: claims go to a node.
docs/architecture.md, "The pushed campaign state", has the argument why no claim gets a local
SOLD_OUT that a node could have granted.

A local answer is a pb.ClaimResponse(outcome=SOLD_OUT, detail=LOCAL_DETAIL): the reply type has no
room for a flag, so the detail says it, and `answered_locally` counts them. What the caller must
do around it (the claim path's rules):
- never answer locally a request id already sent to a node (a retry, a replay, an unknown
  outcome): that request may hold a grant, and only a node can say so;
- a local SOLD_OUT differs from a node's answer for a user who already holds a voucher (a node
  says ALREADY_CLAIMED with the voucher), for a campaign that checks eligibility (a node may say
  NOT_ELIGIBLE first), and for a request id another client process already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from claimcore.clock import now_ms
from claimcore.security.access import PLAINTEXT, Access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

LOCAL_DETAIL = "sold out (answered by the client from the pushed campaign state)"
MARGIN_MS = 100      # a sold-out state is trusted this much less than the node said
MAX_AGE_MS = 250     # a state older than this by the node's clock on arrival is not trusted
SILENT_S = 5.0       # no state for this long (nodes send each at least every 2 s): subscribe again
BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


@dataclass(frozen=True)
class Received:
    """A campaign's latest state, when it arrived, and until when it may answer SOLD_OUT."""

    state: pb.CampaignState
    node: str
    received_at: float     # monotonic seconds
    sold_out_until: float  # monotonic seconds; 0 unless a trusted sold-out state

    def sold_out(self, now: float) -> bool:
        return now < self.sold_out_until


def sold_out_until(state: pb.CampaignState, received_at: float, wall_ms: int) -> float:
    """Until when (monotonic) a just received state may answer SOLD_OUT: 0 if it may not."""
    if state.phase != pb.CAMPAIGN_PHASE_SOLD_OUT:
        return 0.0
    if wall_ms - state.observed_at_ms > MAX_AGE_MS:
        return 0.0  # held up on the way: its validity may already be spent
    valid_ms = state.sold_out_valid_for_ms - MARGIN_MS
    return received_at + valid_ms / 1000 if valid_ms > 0 else 0.0


class CampaignWatch:
    def __init__(self, targets: Sequence[str], campaign_ids: Sequence[str], *, reach: Access = PLAINTEXT,
                 backoff_s: float = BACKOFF_S, max_backoff_s: float = MAX_BACKOFF_S,
                 silent_s: float = SILENT_S, first_node: int | None = None) -> None:
        """first_node: the index in `targets` of the node to subscribe to first; by default a random
        one, so that many clients' watches spread over the nodes."""
        if not targets:
            raise ValueError("CampaignWatch needs at least one node's host:port")
        self.targets = list(targets)
        self.campaign_ids = list(dict.fromkeys(campaign_ids))
        self.reach = reach
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.silent_s = silent_s
        self._states: dict[str, Received] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._started = False  # start() was called: a stream runs whenever there are campaigns
        self._retired: set[asyncio.Task[None]] = set()  # streams cancelled by add(), maybe still closing
        self._next = random.randrange(len(self.targets)) if first_node is None else first_node
        self.node = ""              # the node streaming to us now ("" between streams)
        self.subscriptions = 0      # streams opened, over the watch's life
        self.answered_locally = 0   # SOLD_OUT replies given by local_answer
        # Sold-out states not trusted on arrival (too old by the node's clock, or their validity spent):
        # steadily rising means this machine's clock is ahead of the nodes' (no local answers then).
        self.untrusted = 0
        self.last_error: grpc.aio.AioRpcError | None = None

    async def __aenter__(self) -> CampaignWatch:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        self._started = True
        if self._task is None and self.campaign_ids:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, campaign_ids: Sequence[str]) -> None:
        """Watch these campaigns too: the stream is opened again, to the same node, with them."""
        new = [cid for cid in dict.fromkeys(campaign_ids) if cid not in self.campaign_ids]
        if not new:
            return
        self.campaign_ids += new
        if self._task is not None:
            self._task.cancel()
            self._retired.add(self._task)  # closed by close()
            self._task = None
            self._next -= 1  # back to the node streaming now (or the one being tried)
        if self._started:
            self.start()

    async def close(self) -> None:
        self._started = False
        if self._task is not None:
            self._task.cancel()
            self._retired.add(self._task)
            self._task = None
        for task in self._retired:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._retired.clear()

    # ---------------------------------------------------------------- what the watch knows

    def state(self, campaign_id: str) -> Received | None:
        return self._states.get(campaign_id)

    def local_answer(self, campaign_id: str) -> pb.ClaimResponse | None:
        """SOLD_OUT if the pushed state says so and is fresh, else None (send the claim to a node).
        For new requests only: never for a request id already sent (see the module docstring)."""
        received = self._states.get(campaign_id)
        if received is None or not received.sold_out(time.monotonic()):
            return None
        self.answered_locally += 1
        return pb.ClaimResponse(outcome=pb.OUTCOME_SOLD_OUT, detail=LOCAL_DETAIL)

    async def wait_for(self, campaign_id: str, *phases: int, min_epoch: int = 0,
                       timeout: float = 10.0) -> Received:
        """The campaign's state once it is one of `phases` (any, if none given) at shard-map epoch
        `min_epoch` or later; TimeoutError after `timeout` seconds."""
        def seen() -> bool:
            r = self._states.get(campaign_id)
            return (r is not None and (not phases or r.state.phase in phases)
                    and r.state.shard_epoch >= min_epoch)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(seen)
        return self._states[campaign_id]

    # ---------------------------------------------------------------- the stream

    async def _run(self) -> None:
        backoff = self.backoff_s
        while True:
            target = self.targets[self._next % len(self.targets)]
            self._next += 1
            try:
                if await self._follow(target):
                    backoff = self.backoff_s  # it streamed: the next break starts the back-off afresh
            except grpc.aio.AioRpcError as err:
                self.last_error = err
                log.info("watch stream from %s ended: %s %s", target, err.code().name, err.details())
            except TimeoutError:
                log.info("watch stream from %s silent for %.1fs: subscribing again", target, self.silent_s)
            self.node = ""
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _follow(self, target: str) -> bool:
        """Read one node's stream until it breaks; True if it delivered any state."""
        async with self.reach.aio_channel(target) as channel:
            stub = pb_grpc.ClaimServiceStub(channel)
            # The access's interceptor adds the API key to unary calls only: give it here.
            call = stub.WatchCampaigns(pb.WatchCampaignsRequest(campaign_ids=self.campaign_ids),
                                       metadata=self.reach.metadata or None)
            self.subscriptions += 1
            delivered = False
            try:
                while True:
                    async with asyncio.timeout(self.silent_s):
                        message = await call.read()
                    if message is grpc.aio.EOF:
                        return delivered
                    if not delivered:
                        self.node, delivered = target, True
                    await self._receive(message.state, target)
            finally:
                call.cancel()

    async def _receive(self, state: pb.CampaignState, node: str) -> None:
        received_at = time.monotonic()
        until = sold_out_until(state, received_at, now_ms())
        if state.phase == pb.CAMPAIGN_PHASE_SOLD_OUT and not until:
            self.untrusted += 1
        self._states[state.campaign_id] = Received(state, node, received_at, until)
        async with self._changed:
            self._changed.notify_all()
