"""One worker's load driver: the asyncio loop that sends its share of a run's plan over gRPC.

It is given one stub per target (claimcore.loadtest.burst spawns the worker processes and
opens the channels) and sends each claim at its planned time, or as soon as one of its
`concurrency` senders is free. That is an open model: a slow server shows up as lateness
and response time, not as fewer arrivals. Unary mode sends one Claim per call; batch mode
packs the claims that are due into ClaimBatch calls of up to batch_size. Calls go round
robin over the targets. Auto mode is an app backend: each of the `concurrency` senders hands
one claim at a time to one shared ClaimClient(watch=True) (claimcore.client), which batches
the concurrent claims into ClaimBatch calls, retries them itself, and answers new claims of
a sold-out campaign locally from the state the nodes push (counted apart: `answered_locally`).

Per claim: resent with the same request_id after RESOURCE_EXHAUSTED, UNAVAILABLE or
DEADLINE_EXCEEDED (jittered exponential back-off; in auto mode the client does these) and
after RATE_LIMITED (once its retry_after_ms is over), up to max_attempts sends in all. A
follow-up (a replay of the request_id, or a second tap with a new one) waits for its user's
first answer and is checked against it. Claims that never got an answer are settled
afterwards with GetClaim.

Apart from burst.py because this is what runs inside one worker process (the retry policy,
the tally, the sending loop); burst.py starts the processes, feeds them and collects results.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import grpc

from claimcore.client import ClaimClient, ClaimOutcomeUnknown
from claimcore.client.watch import LOCAL_DETAIL
from claimcore.loadtest.arrivals import DOUBLE_TAP, FIRST, REPLAY, Plan
from claimcore.loadtest.histogram import LatencyHistogram
from claimcore.loadtest.report import EXAMPLES_KEPT, FLOW_COLUMNS, outcome_name
from claimcore.security import access
from claimcore.v1 import claims_pb2, claims_pb2_grpc, short_name

#: Transport failures after which the same request_id is resent.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 1.0
RATE_LIMITED_WAIT_CAP_S = 5.0
#: Reply counts are kept per 10 ms tick, call latencies per 100 ms slice.
TICK_S = 0.01
SLICE_S = 0.1
SLICE_DIGITS = 2
PROGRESS_EVERY_S = 0.2
CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 0),  # resends are ours, and counted
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
#: Outcomes whose reply carries the user's voucher.
HOLDING_OUTCOMES = (claims_pb2.OUTCOME_GRANTED, claims_pb2.OUTCOME_ALREADY_CLAIMED)
#: Columns of a slice's flow row (report.FLOW_COLUMNS), by name.
PLANNED, SENT, RESENT, GRANTED_FIRST, GRANTED_REPLAY, ALREADY, SOLD_OUT, OTHER = range(len(FLOW_COLUMNS))
MODES = ("unary", "batch", "auto")


@dataclass
class Progress:
    """Counters summed over the workers, as they stood at most PROGRESS_EVERY_S ago."""

    sent: int = 0
    replies: int = 0
    granted: int = 0
    already_claimed: int = 0
    sold_out: int = 0
    other: int = 0
    retried: int = 0
    failed: int = 0
    finished: int = 0
    planned: int = 0
    elapsed_s: float = 0.0


#: The fields each worker writes into its row of the shared progress array.
PROGRESS_FIELDS = tuple(f.name for f in fields(Progress))[:9]


@dataclass
class WorkerConfig:
    index: int
    targets: list[str]
    campaign_id: str
    concurrency: int
    mode: str
    batch_size: int
    deadline: float
    max_attempts: int
    seed: int
    channel_id: str
    redeem_share: float = 0.0      # of new grants, redeemed right away (RedeemService.Redeem)
    merchant_id: str = ""
    order_amount_cents: int = 0
    reach: access.Access = access.PLAINTEXT  # TLS and API key: spawned workers do not inherit the CLI's
    connections: int = 1  # TCP connections to each target (serve --workers N spreads connections)


class _Claim:
    """One planned claim and its state in the driver."""

    __slots__ = ("offset_s", "user", "request_id", "kind", "attempts", "answer", "parent", "follow_ups",
                 "local")

    def __init__(self, offset_s: float, user: str, request_id: str, kind: int) -> None:
        self.offset_s = offset_s
        self.user = user
        self.request_id = request_id
        self.kind = kind
        self.attempts = 0
        self.answer: tuple[int, str] | None = None  # (outcome, voucher_id) once answered
        self.parent: _Claim | None = None  # a follow-up's first claim
        self.follow_ups: list[_Claim] = []
        self.local = False  # auto mode: answered by the client from the pushed state


@dataclass
class _Tally:
    """What one worker saw; `result` turns it into the compact dict run_load returns."""

    sent: int = 0  # claims sent, counting resends
    calls: int = 0  # RPCs made: fewer than claims in batch mode
    outcomes: Counter = field(default_factory=Counter)
    transient: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_examples: list = field(default_factory=list)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # per call, each claim
    response: LatencyHistogram = field(default_factory=LatencyHistogram)  # planned arrival -> answer
    lateness: LatencyHistogram = field(default_factory=LatencyHistogram)  # planned arrival -> sent
    ticks: dict = field(default_factory=dict)  # 10 ms tick -> [replies, new grants, sold_out]
    slices: dict = field(default_factory=dict)  # 100 ms slice -> LatencyHistogram
    response_slices: dict = field(default_factory=dict)  # 100 ms slice -> LatencyHistogram, by answer time
    flow: dict = field(default_factory=dict)  # 100 ms slice -> counts in FLOW_COLUMNS order
    pairs: list = field(default_factory=list)  # (user, voucher_id) of every voucher seen
    unknown: list = field(default_factory=list)  # (user, request_id) with no reply
    settled: int = 0
    unsettled: int = 0
    retries: int = 0
    retry_violations: list = field(default_factory=list)
    double_taps: int = 0
    double_tap_unexpected: list = field(default_factory=list)
    voucher_anomalies: list = field(default_factory=list)
    rate_limited_resends: int = 0
    skipped_follow_ups: int = 0
    first_sold_out: float | None = None
    last_granted: float | None = None
    redeems: Counter = field(default_factory=Counter)  # RedeemOutcome name -> count
    redeem_errors: Counter = field(default_factory=Counter)  # status code name -> redemptions given up
    answered_locally: int = 0  # auto mode: claims the client answered SOLD_OUT without a node
    local_to_holders: int = 0  # of those, second taps of users holding a voucher (a node: ALREADY_CLAIMED)
    client: dict = field(default_factory=dict)  # auto mode: the client's own counters at the end

    def count(self, slice_key: int, column: int, n: int = 1) -> None:
        """Add n to a slice's FLOW_COLUMNS[column] (planned arrivals, sends, replies by outcome)."""
        row = self.flow.get(slice_key)
        if row is None:
            row = self.flow[slice_key] = [0] * len(FLOW_COLUMNS)
        row[column] += n

    def result(self, index: int, start: float, end: float) -> dict[str, Any]:
        return {
            "index": index,
            "sent": self.sent,
            "calls": self.calls,
            "outcomes": dict(self.outcomes),
            "transient": dict(self.transient),
            "errors": dict(self.errors),
            "error_examples": self.error_examples,
            "latency": self.latency.state(),
            "response": self.response.state(),
            "lateness": self.lateness.state(),
            "tick_s": TICK_S,
            "ticks": self.ticks,
            "slice_s": SLICE_S,
            "slices": {k: h.state() for k, h in self.slices.items()},
            "response_slices": {k: h.state() for k, h in self.response_slices.items()},
            "flow": self.flow,
            "pairs": self.pairs,
            "settled": self.settled,
            "unsettled": self.unsettled,
            "retries": self.retries,
            "retry_violations": self.retry_violations,
            "double_taps": self.double_taps,
            "double_tap_unexpected": self.double_tap_unexpected,
            "voucher_anomalies": self.voucher_anomalies,
            "rate_limited_resends": self.rate_limited_resends,
            "skipped_follow_ups": self.skipped_follow_ups,
            "first_sold_out": self.first_sold_out,
            "last_granted": self.last_granted,
            "redeems": dict(self.redeems),
            "redeem_errors": dict(self.redeem_errors),
            "answered_locally": self.answered_locally,
            "local_to_holders": self.local_to_holders,
            "client": self.client,
            "start": start,
            "end": end,
        }


def _describe(answer: tuple[int, str] | None) -> str:
    if answer is None:
        return "no reply"
    return f"{outcome_name(answer[0])} {answer[1]}".strip()


def _flow_column(outcome: int, kind: int) -> int:
    """The flow column a reply counts in: a GRANTED reply to a replay is the same voucher again."""
    if outcome == claims_pb2.OUTCOME_GRANTED:
        return GRANTED_REPLAY if kind == REPLAY else GRANTED_FIRST
    columns = {claims_pb2.OUTCOME_ALREADY_CLAIMED: ALREADY, claims_pb2.OUTCOME_SOLD_OUT: SOLD_OUT}
    return columns.get(outcome, OTHER)


def _claims_of(plan: Plan) -> tuple[list[_Claim], int]:
    """The plan's first claims in order, each holding its follow-ups; and the count of all."""
    firsts: list[_Claim] = []
    by_user: dict[str, _Claim] = {}
    for offset, user, request, kind in zip(
        plan.offsets_us, plan.users, plan.request_ids, plan.kinds, strict=True
    ):
        claim = _Claim(offset / 1e6, user, request, kind)
        if kind == FIRST:
            firsts.append(claim)
            by_user[user] = claim
        else:
            claim.parent = by_user[user]  # Plan.check: a follow-up comes after its first claim
            claim.parent.follow_ups.append(claim)
    return firsts, len(plan)


class Driver:
    """One worker's share of the plan, sent through one stub per target."""

    def __init__(
        self,
        cfg: WorkerConfig,
        stubs: Sequence[claims_pb2_grpc.ClaimServiceStub],
        plan: Plan,
        progress_row: Callable[[Progress], None] | None = None,
        redeem_stubs: Sequence[claims_pb2_grpc.RedeemServiceStub] = (),
        client: ClaimClient | None = None,
    ) -> None:
        """client: auto mode's ClaimClient, through which every claim goes (the stubs then
        serve only GetClaim and Redeem)."""
        if (cfg.mode == "auto") != (client is not None):
            raise ValueError("auto mode needs a ClaimClient, and only auto mode takes one")
        self.cfg = cfg
        self.client = client
        self.stubs = list(stubs)
        self.redeem_stubs = list(redeem_stubs)
        self.redeeming: set[asyncio.Task[None]] = set()
        self.redeem_slots = asyncio.Semaphore(max(1, cfg.concurrency))  # like a shop system: bounded
        self.rng = random.Random(cfg.seed)
        self.tally = _Tally()
        self.firsts, self.total = _claims_of(plan)
        slice_us = round(SLICE_S * 1_000_000)
        for offset in plan.offsets_us:  # the offered load: each claim's planned arrival, per slice
            self.tally.count(int(offset) // slice_us, PLANNED)
        self.batch_size = cfg.batch_size if cfg.mode == "batch" else 1
        # The dispatcher stops feeding the senders at this backlog, to keep the loop responsive.
        self.high_water = max(256, 2 * cfg.concurrency * self.batch_size)
        self.progress_row = progress_row
        self.start_at = 0.0
        self.finished = 0
        self.turn = 0
        self.crash: BaseException | None = None
        self.ready: asyncio.Queue[_Claim] = asyncio.Queue()  # due claims, for the senders
        self.room = asyncio.Event()  # the dispatcher may add to `ready` again
        self.done = asyncio.Event()  # every claim finished, or a sender crashed

    # ---------------------------------------------------------------- sending

    def _stub(self) -> claims_pb2_grpc.ClaimServiceStub:
        self.turn += 1
        return self.stubs[self.turn % len(self.stubs)]

    def _request(self, claim: _Claim) -> claims_pb2.ClaimRequest:
        return claims_pb2.ClaimRequest(
            campaign_id=self.cfg.campaign_id,
            user_id=claim.user,
            request_id=claim.request_id,
            channel_id=self.cfg.channel_id,
        )

    def _later(self, delay_s: float, claim: _Claim) -> None:
        if delay_s <= 0:
            self.ready.put_nowait(claim)
        else:
            asyncio.get_running_loop().call_later(delay_s, self.ready.put_nowait, claim)

    async def _send(self, batch: list[_Claim]) -> None:
        cfg, st = self.cfg, self.tally
        now = time.time()
        key = int((now - self.start_at) / SLICE_S)
        for claim in batch:
            if claim.attempts == 0 and claim.kind == FIRST:
                st.lateness.record_seconds(now - self.start_at - claim.offset_s)
            st.count(key, SENT if claim.attempts == 0 else RESENT)
            claim.attempts += 1
        st.sent += len(batch)
        if cfg.mode == "auto":
            await self._send_through_client(batch[0])
            return
        st.calls += 1
        stub = self._stub()
        t0 = time.perf_counter()
        try:
            if cfg.mode == "unary":
                replies = [await stub.Claim(self._request(batch[0]), timeout=cfg.deadline)]
            else:
                request = claims_pb2.ClaimBatchRequest(claims=[self._request(c) for c in batch])
                replies = list((await stub.ClaimBatch(request, timeout=cfg.deadline)).replies)
        except grpc.aio.AioRpcError as exc:
            for claim in batch:
                self._failed(claim, exc.code(), exc.details() or "")
            return
        elapsed = time.perf_counter() - t0
        done = time.time()
        if len(replies) != len(batch):
            for claim in batch:
                self._failed(claim, grpc.StatusCode.INTERNAL, f"{len(replies)} replies to {len(batch)}")
            return
        st.latency.record_seconds(elapsed, len(batch))
        key = int((done - self.start_at) / SLICE_S)
        hist = st.slices.get(key)
        if hist is None:
            hist = st.slices[key] = LatencyHistogram(SLICE_DIGITS)
        hist.record_seconds(elapsed, len(batch))
        for claim, reply in zip(batch, replies, strict=True):
            self._answered(claim, reply, done)

    async def _send_through_client(self, claim: _Claim) -> None:
        """Auto mode: one claim through the app backend's ClaimClient, which batches, retries and
        may answer it locally. The latency recorded is the claim() call's, as the app sees it."""
        assert self.client is not None
        cfg, st = self.cfg, self.tally
        t0 = time.perf_counter()
        try:
            reply = await self.client.claim(cfg.campaign_id, claim.user, claim.request_id, cfg.channel_id,
                                            timeout=cfg.deadline)
        except ClaimOutcomeUnknown as exc:  # the client already sent it max_attempts times
            claim.attempts = cfg.max_attempts
            self._failed(claim, exc.last.code(), exc.last.details() or "")
            return
        except grpc.aio.AioRpcError as exc:
            self._failed(claim, exc.code(), exc.details() or "")
            return
        elapsed = time.perf_counter() - t0
        done = time.time()
        st.latency.record_seconds(elapsed)
        key = int((done - self.start_at) / SLICE_S)
        hist = st.slices.get(key)
        if hist is None:
            hist = st.slices[key] = LatencyHistogram(SLICE_DIGITS)
        hist.record_seconds(elapsed)
        if reply.outcome == claims_pb2.OUTCOME_SOLD_OUT and reply.detail == LOCAL_DETAIL:
            claim.local = True
            st.answered_locally += 1
        self._answered(claim, reply, done)

    def client_counters(self) -> dict[str, int]:
        """Auto mode: what the ClaimClient itself counted (calls made, claims sent, retries)."""
        if self.client is None:
            return {}
        stats = self.client.batching
        return {"answered_locally": self.client.answered_locally, "batches": stats.batches,
                "alone": stats.alone, "claims_sent": stats.claims,
                "retries": self.client.retries, "failed_batches": stats.failed,
                "refused_batches": stats.refused}

    def _answered(self, claim: _Claim, reply: claims_pb2.ClaimResponse, now: float) -> None:
        st = self.tally
        outcome = reply.outcome
        st.outcomes[outcome] += 1
        tick = int((now - self.start_at) / TICK_S)
        row = st.ticks.get(tick)
        if row is None:
            row = st.ticks[tick] = [0, 0, 0]
        row[0] += 1
        st.count(int((now - self.start_at) / SLICE_S), _flow_column(outcome, claim.kind))
        if outcome == claims_pb2.OUTCOME_RATE_LIMITED and claim.attempts < self.cfg.max_attempts:
            # Shed by admission control: the reply says when to come back; same request_id.
            st.rate_limited_resends += 1
            wait = min(RATE_LIMITED_WAIT_CAP_S, reply.retry_after_ms / 1000.0)
            self._later(wait * self.rng.uniform(1.0, 1.5), claim)
            return
        voucher = ""
        if outcome == claims_pb2.OUTCOME_GRANTED and claim.kind != REPLAY:  # a replay's grant is not new
            row[1] += 1
            st.last_granted = now if st.last_granted is None else max(st.last_granted, now)
            if claim.kind == FIRST and self.redeem_stubs and self.rng.random() < self.cfg.redeem_share:
                task = asyncio.get_running_loop().create_task(
                    self._redeem(claim.user, reply.voucher.voucher_id))
                self.redeeming.add(task)
                task.add_done_callback(self.redeeming.discard)
        elif outcome == claims_pb2.OUTCOME_SOLD_OUT:
            row[2] += 1
            if st.first_sold_out is None or now < st.first_sold_out:
                st.first_sold_out = now
        if outcome in HOLDING_OUTCOMES:
            voucher = reply.voucher.voucher_id if reply.HasField("voucher") else ""
            if not voucher:
                st.voucher_anomalies.append(
                    f"{claim.user} {claim.request_id}: {outcome_name(outcome)} without voucher"
                )
            else:
                st.pairs.append((claim.user, voucher))
                named = reply.voucher.user_id
                if named and named != claim.user:
                    st.voucher_anomalies.append(
                        f"{claim.user} {claim.request_id}: voucher {voucher} names user {named}"
                    )
        self._finish(claim, now, (outcome, voucher))

    def _failed(self, claim: _Claim, code: grpc.StatusCode, details: str) -> None:
        st = self.tally
        if code in RETRYABLE_CODES:
            st.transient[code.name] += 1
            if claim.attempts < self.cfg.max_attempts:
                ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (claim.attempts - 1))
                self._later(self.rng.uniform(ceiling / 2, ceiling), claim)
                return
            st.unknown.append((claim.user, claim.request_id))  # it may have been granted
        st.errors[code.name] += 1
        if len(st.error_examples) < EXAMPLES_KEPT:
            st.error_examples.append(
                f"{claim.user} {claim.request_id}: {code.name} {details!r} after {claim.attempts} attempts"
            )
        self._finish(claim, time.time(), None)

    def _finish(self, claim: _Claim, now: float, answer: tuple[int, str] | None) -> None:
        """A claim is done (answered, or given up): check it, release its follow-ups."""
        st = self.tally
        self.finished += 1
        if claim.kind == FIRST:
            claim.answer = answer
            if answer is not None:
                st.response.record_seconds(now - self.start_at - claim.offset_s)
                key = int((now - self.start_at) / SLICE_S)
                hist = st.response_slices.get(key)
                if hist is None:
                    hist = st.response_slices[key] = LatencyHistogram(SLICE_DIGITS)
                hist.record_seconds(now - self.start_at - claim.offset_s)
            if claim.follow_ups:
                if answer is None:  # the app never heard back; it would not tap again either
                    st.skipped_follow_ups += len(claim.follow_ups)
                    self.finished += len(claim.follow_ups)
                else:
                    for follow_up in claim.follow_ups:
                        self._later(self.start_at + follow_up.offset_s - now, follow_up)
        else:
            assert claim.parent is not None and claim.parent.answer is not None
            first = claim.parent.answer
            held = first[1] if first[0] in HOLDING_OUTCOMES else ""
            if claim.kind == REPLAY:
                st.retries += 1
                if claim.local and not claim.parent.local:  # the client promised never to
                    st.retry_violations.append(
                        f"{claim.user} {claim.request_id}: replay of a request sent to a node was "
                        "answered locally")
                # A GRANTED request must be answered alike; no reply at all is a transport error.
                if first[0] == claims_pb2.OUTCOME_GRANTED and answer is not None and answer != first:
                    st.retry_violations.append(
                        f"{claim.user} {claim.request_id}: first {_describe(first)}, "
                        f"replay {_describe(answer)}"
                    )
            elif claim.kind == DOUBLE_TAP:
                st.double_taps += 1
                if answer is not None and held and claim.local:
                    st.local_to_holders += 1  # documented: a node would say ALREADY_CLAIMED
                elif answer is not None:
                    if held:
                        ok = answer == (claims_pb2.OUTCOME_ALREADY_CLAIMED, held)
                    else:
                        ok = answer[0] == claims_pb2.OUTCOME_SOLD_OUT
                    if not ok:
                        st.double_tap_unexpected.append(
                            f"{claim.user}: first {_describe(first)}, second tap {_describe(answer)}"
                        )
        if self.finished >= self.total:
            self.done.set()

    # ---------------------------------------------------------------- the run

    async def _dispatch(self) -> None:
        """Hand each first claim to the senders at its planned time."""
        clock = time.time
        for claim in self.firsts:
            delay = self.start_at + claim.offset_s - clock()
            if delay > 0.001:  # the loop's timers tick in milliseconds; closer claims go together
                await asyncio.sleep(delay)
            if self.ready.qsize() >= self.high_water:
                self.room.clear()
                await self.room.wait()  # set by a sender once the backlog is down to half
            self.ready.put_nowait(claim)

    async def _sender(self) -> None:
        ready, size, room, low_water = self.ready, self.batch_size, self.room, self.high_water // 2
        try:
            while True:
                batch = [await ready.get()]
                while len(batch) < size and not ready.empty():
                    batch.append(ready.get_nowait())
                if not room.is_set() and ready.qsize() <= low_water:
                    room.set()
                await self._send(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surface it in the parent instead of hanging the run
            self.crash = exc
            self.done.set()

    def progress(self) -> Progress:
        st, out = self.tally, self.tally.outcomes
        main = (out[claims_pb2.OUTCOME_GRANTED] + out[claims_pb2.OUTCOME_ALREADY_CLAIMED]
                + out[claims_pb2.OUTCOME_SOLD_OUT])
        return Progress(
            sent=st.sent,
            replies=sum(out.values()),
            granted=out[claims_pb2.OUTCOME_GRANTED],
            already_claimed=out[claims_pb2.OUTCOME_ALREADY_CLAIMED],
            sold_out=out[claims_pb2.OUTCOME_SOLD_OUT],
            other=sum(out.values()) - main,
            retried=sum(st.transient.values()) + st.rate_limited_resends,
            failed=sum(st.errors.values()),
            finished=self.finished,
        )

    async def _report_progress(self) -> None:
        while True:
            if self.progress_row is not None:
                self.progress_row(self.progress())
            await asyncio.sleep(PROGRESS_EVERY_S)

    async def run(self, start_at: float) -> float:
        """Send the whole share, starting at unix time start_at; returns when the last finished."""
        self.start_at = start_at
        if self.total == 0:
            self.done.set()
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks = [asyncio.create_task(self._sender()) for _ in range(max(1, self.cfg.concurrency))]
        tasks.append(asyncio.create_task(self._dispatch()))
        tasks.append(asyncio.create_task(self._report_progress()))
        try:
            await self.done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.crash is not None:
            raise self.crash
        if self.redeeming:
            await asyncio.gather(*list(self.redeeming))
        end = time.time()
        if self.progress_row is not None:
            self.progress_row(self.progress())
        return end

    async def _redeem(self, user: str, voucher: str) -> None:
        """Redeem a voucher just granted, as a shop would seconds after the launch; an
        unknown outcome is sent again with the same order id (Redeem is idempotent)."""
        cfg, st = self.cfg, self.tally
        request = claims_pb2.RedeemRequest(
            campaign_id=cfg.campaign_id, user_id=user, voucher_ids=[voucher], merchant_id=cfg.merchant_id,
            order_id=f"loadgen-{voucher}", order_amount_cents=cfg.order_amount_cents,
            channel_id=cfg.channel_id)
        code = None
        for attempt in range(cfg.max_attempts):
            stub = self.redeem_stubs[(self.turn + attempt) % len(self.redeem_stubs)]
            try:
                async with self.redeem_slots:
                    reply = await stub.Redeem(request, timeout=cfg.deadline)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in RETRYABLE_CODES:
                    break
                await asyncio.sleep(BACKOFF_BASE_S * 2**attempt * self.rng.uniform(0.5, 1.5))
                continue
            st.redeems[short_name(claims_pb2.RedeemOutcome, reply.outcome)] += 1
            return
        st.redeem_errors[code.name if code is not None else "UNKNOWN"] += 1

    async def settle_unknown(self) -> None:
        """Ask GetClaim(request_id) about the claims that never got a reply."""
        cfg, st = self.cfg, self.tally
        for user, request_id in st.unknown:
            found = None
            for attempt in range(cfg.max_attempts):
                try:
                    found = await self._stub().GetClaim(
                        claims_pb2.GetClaimRequest(
                            campaign_id=cfg.campaign_id, user_id=user, request_id=request_id
                        ),
                        timeout=max(cfg.deadline, 5.0),
                    )
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(BACKOFF_BASE_S * 2**attempt)
            if found is None:
                st.unsettled += 1
                continue
            if found.found:
                for voucher in found.vouchers:
                    st.pairs.append((user, voucher.voucher_id))
                    st.settled += 1
