"""The burst driver: many users claim at the same instant, from spawned worker processes.

Each worker process takes a contiguous slice of the users and claims for them over one
grpc.aio channel, `concurrency` claims at a time. Per user: one claim, resent with the same
request_id on transient failures (jittered back-off); for some users a replay of that
request_id after the reply (as after a lost reply), for some a second tap with a new
request_id. Claims that never got an answer are settled afterwards with GetClaim.

`run_burst` returns one compact dict per worker; `claimcore.report.merge_worker_results`
folds them into one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue as queue_mod
import random
import signal
import threading
import time
import traceback
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvloop

from claimcore.report import EXAMPLES_KEPT, outcome_name, split_range
from claimcore.v1 import claims_pb2, claims_pb2_grpc

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
CHANNEL_READY_TIMEOUT_S = 30.0
BARRIER_TIMEOUT_S = 120.0
CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 0),  # resends are ours, and counted
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
#: Outcomes whose reply carries the user's voucher.
HOLDING_OUTCOMES = (claims_pb2.GRANTED, claims_pb2.ALREADY_CLAIMED)


class BurstError(RuntimeError):
    """A worker process failed, or exited without a result."""


def user_id(index: int) -> str:
    """The burst's user ids: u000000, u000001, ..."""
    return f"u{index:06d}"


@dataclass
class WorkerConfig:
    index: int
    target: str
    campaign_id: str
    user_start: int
    user_end: int
    concurrency: int
    retry_share: float
    double_tap_share: float
    deadline: float
    seed: int
    channel_id: str
    max_attempts: int = MAX_ATTEMPTS


@dataclass
class _Tally:
    """What one worker saw; `result` turns it into the compact dict run_burst returns."""

    sent: int = 0
    outcomes: Counter = field(default_factory=Counter)
    transient: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_examples: list = field(default_factory=list)
    latencies: array = field(default_factory=lambda: array("d"))
    done_at: array = field(default_factory=lambda: array("d"))  # unix s of each reply
    pairs: list = field(default_factory=list)  # (user, voucher_id) of every voucher seen
    unknown: list = field(default_factory=list)  # (user, request_id) with no reply
    settled: int = 0
    unsettled: int = 0
    retries: int = 0
    retry_violations: list = field(default_factory=list)
    double_taps: int = 0
    double_tap_unexpected: list = field(default_factory=list)
    voucher_anomalies: list = field(default_factory=list)
    first_sold_out: float | None = None

    def result(self, index: int, start: float, end: float) -> dict[str, Any]:
        return {
            "index": index,
            "sent": self.sent,
            "outcomes": dict(self.outcomes),
            "transient": dict(self.transient),
            "errors": dict(self.errors),
            "error_examples": self.error_examples,
            "latencies": self.latencies.tobytes(),  # bytes: cheap to send between processes
            "done_at": self.done_at.tobytes(),
            "pairs": self.pairs,
            "settled": self.settled,
            "unsettled": self.unsettled,
            "retries": self.retries,
            "retry_violations": self.retry_violations,
            "double_taps": self.double_taps,
            "double_tap_unexpected": self.double_tap_unexpected,
            "voucher_anomalies": self.voucher_anomalies,
            "first_sold_out": self.first_sold_out,
            "start": start,
            "end": end,
        }


def _describe(reply: claims_pb2.ClaimReply | None) -> str:
    if reply is None:
        return "no reply"
    voucher = reply.voucher.voucher_id if reply.HasField("voucher") else ""
    return f"{outcome_name(reply.outcome)} {voucher}".strip()


class _Worker:
    """One worker's users, claimed through one stub."""

    def __init__(self, cfg: WorkerConfig, stub: claims_pb2_grpc.ClaimServiceStub) -> None:
        self.cfg = cfg
        self.stub = stub
        self.rng = random.Random(cfg.seed)
        self.tally = _Tally()

    def plan(self) -> list[tuple[str, bool, bool]]:
        """(user, replays its request_id, taps twice) for each user of the slice."""
        cfg, rng = self.cfg, self.rng
        return [
            (user_id(i), rng.random() < cfg.retry_share, rng.random() < cfg.double_tap_share)
            for i in range(cfg.user_start, cfg.user_end)
        ]

    async def claim(self, user: str, request_id: str) -> claims_pb2.ClaimReply | None:
        """One Claim, resent on transient failures; None if no reply came."""
        cfg, st = self.cfg, self.tally
        request = claims_pb2.ClaimRequest(
            campaign_id=cfg.campaign_id, user_id=user, request_id=request_id, channel_id=cfg.channel_id
        )
        for attempt in range(cfg.max_attempts):
            st.sent += 1
            t0 = time.perf_counter()
            try:
                reply = await self.stub.Claim(request, timeout=cfg.deadline)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in RETRYABLE_CODES:
                    st.transient[code.name] += 1
                    if attempt + 1 < cfg.max_attempts:
                        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
                        await asyncio.sleep(self.rng.uniform(ceiling / 2, ceiling))
                        continue
                st.errors[code.name] += 1
                if len(st.error_examples) < EXAMPLES_KEPT:
                    st.error_examples.append(
                        f"{user} {request_id}: {code.name} {exc.details()!r} after {attempt + 1} attempts"
                    )
                if code in RETRYABLE_CODES:
                    st.unknown.append((user, request_id))  # it may have been granted
                return None
            st.latencies.append((time.perf_counter() - t0) * 1000.0)
            now = time.time()
            st.done_at.append(now)
            st.outcomes[reply.outcome] += 1
            if reply.outcome == claims_pb2.SOLD_OUT and st.first_sold_out is None:
                st.first_sold_out = now
            if reply.outcome in HOLDING_OUTCOMES:
                voucher = reply.voucher
                if not reply.HasField("voucher") or not voucher.voucher_id:
                    st.voucher_anomalies.append(
                        f"{user} {request_id}: {outcome_name(reply.outcome)} without voucher"
                    )
                else:
                    st.pairs.append((user, voucher.voucher_id))
                    if voucher.user_id and voucher.user_id != user:
                        st.voucher_anomalies.append(
                            f"{user} {request_id}: voucher {voucher.voucher_id} names user {voucher.user_id}"
                        )
            return reply
        return None  # pragma: no cover - the loop always returns

    async def one_user(self, user: str, replay: bool, double_tap: bool) -> None:
        st = self.tally
        request_id = uuid.uuid4().hex
        first = await self.claim(user, request_id)
        if first is None:
            return
        held = first.voucher.voucher_id if first.outcome in HOLDING_OUTCOMES else ""
        if replay:
            # As after a lost reply: the same request_id again.
            st.retries += 1
            again = await self.claim(user, request_id)
            # A GRANTED request must be answered alike; no reply at all is a transport error.
            if first.outcome == claims_pb2.GRANTED and again is not None:
                if again.outcome != claims_pb2.GRANTED or again.voucher.voucher_id != held:
                    st.retry_violations.append(
                        f"{user} {request_id}: first {_describe(first)}, replay {_describe(again)}"
                    )
        if double_tap:
            # An impatient second tap: a brand-new request_id.
            st.double_taps += 1
            tap = await self.claim(user, uuid.uuid4().hex)
            if tap is not None:
                if held:
                    ok = tap.outcome == claims_pb2.ALREADY_CLAIMED and tap.voucher.voucher_id == held
                else:
                    ok = tap.outcome == claims_pb2.SOLD_OUT
                if not ok:
                    st.double_tap_unexpected.append(
                        f"{user}: first {_describe(first)}, second tap {_describe(tap)}"
                    )

    async def settle_unknown(self) -> None:
        """Ask GetClaim(request_id) about the claims that never got a reply."""
        cfg, st = self.cfg, self.tally
        for user, request_id in st.unknown:
            found = None
            for attempt in range(cfg.max_attempts):
                try:
                    found = await self.stub.GetClaim(
                        claims_pb2.GetClaimRequest(
                            campaign_id=cfg.campaign_id, user_id=user, request_id=request_id),
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


async def _run_worker_async(cfg: WorkerConfig, barrier: Any) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(cfg.target, options=CHANNEL_OPTIONS) as channel:
        worker = _Worker(cfg, claims_pb2_grpc.ClaimServiceStub(channel))
        work = iter(worker.plan())
        await asyncio.wait_for(channel.channel_ready(), timeout=CHANNEL_READY_TIMEOUT_S)
        # Everyone (the other workers and the parent) starts at the same instant.
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, BARRIER_TIMEOUT_S)
        start = time.time()

        async def runner() -> None:
            for user, replay, double_tap in work:  # one shared iterator: each user once
                await worker.one_user(user, replay, double_tap)

        await asyncio.gather(*(runner() for _ in range(max(1, cfg.concurrency))))
        end = time.time()
        await worker.settle_unknown()
    return worker.tally.result(cfg.index, start, end)


def _worker_process(cfg: WorkerConfig, barrier: Any, results: Any) -> None:
    """Entry point of a spawned worker process: run it, put its result (or error) on the queue."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_run_worker_async(cfg, barrier))
    except BaseException:
        try:
            barrier.abort()  # release the others rather than leave them waiting
        except Exception:
            pass
        results.put({"index": cfg.index, "error": traceback.format_exc()})
        return
    results.put(result)


def run_burst(
    *,
    target: str,
    campaign_id: str,
    users: int,
    processes: int,
    concurrency: int,
    retry_share: float,
    double_tap_share: float,
    deadline: float,
    seed: int,
    channel_id: str = "burst",
) -> list[dict[str, Any]]:
    """Claim once for each of `users` users from `processes` spawned workers; return their results.

    target is a front node's host:port; each worker keeps `concurrency` claims in flight.
    retry_share of the users replay their request_id after the reply, double_tap_share claim
    again with a new one; deadline is per call, in seconds; seed makes the choice of who does
    what repeatable; channel_id is sent with every claim. Raises BurstError if a worker fails.
    """
    ctx = multiprocessing.get_context("spawn")
    slices = split_range(users, processes)
    barrier = ctx.Barrier(len(slices) + 1)
    results: Any = ctx.Queue()
    procs = []
    for index, (start, end) in enumerate(slices):
        cfg = WorkerConfig(
            index=index,
            target=target,
            campaign_id=campaign_id,
            user_start=start,
            user_end=end,
            concurrency=concurrency,
            retry_share=retry_share,
            double_tap_share=double_tap_share,
            deadline=deadline,
            seed=seed * 1000 + index,
            channel_id=channel_id,
        )
        proc = ctx.Process(
            target=_worker_process, args=(cfg, barrier, results), name=f"claimcore-burst-{index}"
        )
        proc.start()
        procs.append(proc)
    collected: dict[int, dict[str, Any]] = {}
    try:

        def wait_barrier() -> None:
            # The parent is one party too, so the workers go only once all are ready.
            try:
                barrier.wait(BARRIER_TIMEOUT_S)
            except threading.BrokenBarrierError:
                pass  # a worker failed or timed out; its error arrives on the queue

        threading.Thread(target=wait_barrier, daemon=True).start()
        while len(collected) < len(procs):
            try:
                result = results.get(timeout=0.5)
            except queue_mod.Empty:
                if any(p.is_alive() for p in procs):
                    continue
                # Everyone exited; give the queue a last chance to deliver.
                try:
                    result = results.get(timeout=2.0)
                except queue_mod.Empty:
                    missing = [i for i in range(len(procs)) if i not in collected]
                    raise BurstError(f"worker processes {missing} exited without a result") from None
            if "error" in result:
                raise BurstError(f"worker {result['index']} failed:\n{result['error']}")
            collected[result["index"]] = result
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        results.close()
    return [collected[i] for i in sorted(collected)]
