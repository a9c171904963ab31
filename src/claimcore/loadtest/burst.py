"""The load driver's processes: worker processes that send a planned set of claims to front nodes.

A run's plan (claimcore.loadtest.arrivals) is split by user over spawned worker processes, so all
cores work. Each worker opens one grpc.aio channel per target, waits until every worker is
ready, and from a common start instant sends its share with claimcore.loadtest.driver.Driver
(which holds the sending, the retries and the checks of one worker). In auto mode each worker
is an app backend: its claims go through one ClaimClient(watch=True) of its own.

`run_load` returns one compact dict per worker (HdrHistogram-encoded latencies, not raw ones);
`claimcore.loadtest.report.merge_worker_results` folds them into one. `run_burst` is the demo's
burst: every user at the same instant.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue as queue_mod
import secrets
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import uvloop

from claimcore.client import ClaimClient
from claimcore.loadtest.arrivals import ArrivalShape, Plan, plan_claims
from claimcore.loadtest.driver import (
    CHANNEL_OPTIONS,
    MAX_ATTEMPTS,
    MODES,
    PROGRESS_FIELDS,
    Driver,
    Progress,
    WorkerConfig,
)
from claimcore.security import access
from claimcore.v1 import claims_pb2_grpc

__all__ = ["BurstError", "run_burst", "run_load"]


CHANNEL_READY_TIMEOUT_S = 30.0
BARRIER_TIMEOUT_S = 120.0
#: Workers start this long after the last one is ready, all at the same wall-clock instant.
START_LEAD_S = 0.05


class BurstError(RuntimeError):
    """A worker process failed, or exited without a result."""


async def _wait_for_start(start_value: Any) -> float:
    """The common start time, which the parent sets once every worker is ready."""
    give_up = time.monotonic() + BARRIER_TIMEOUT_S
    while start_value.value == 0.0:
        if time.monotonic() > give_up:
            raise BurstError("no start signal from the parent")
        await asyncio.sleep(0.001)
    return float(start_value.value)


async def _run_worker_async(
    cfg: WorkerConfig, packed_plan: dict[str, Any], barrier: Any, start_value: Any, progress: Any
) -> dict[str, Any]:
    plan = Plan.unpack(packed_plan)
    width = len(PROGRESS_FIELDS)
    row = cfg.index * width

    def write_progress(p: Progress) -> None:
        for n, name in enumerate(PROGRESS_FIELDS):
            progress[row + n] = getattr(p, name)

    # Several connections to a target need a local subchannel pool each, or gRPC shares one. In auto
    # mode the client holds the connections; these channels only settle unknown claims and redeem.
    connections = 1 if cfg.mode == "auto" else cfg.connections
    options = CHANNEL_OPTIONS + ([("grpc.use_local_subchannel_pool", 1)] if connections > 1 else [])
    channels = [cfg.reach.aio_channel(t, options=options) for _ in range(connections) for t in cfg.targets]
    # Auto mode: the app backend's client; it batches, retries (max_attempts in all) and watches.
    client = (ClaimClient(cfg.targets, deadline_s=cfg.deadline, max_attempts=cfg.max_attempts,
                          reach=cfg.reach, connections_per_node=cfg.connections, watch=True)
              if cfg.mode == "auto" else None)
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=CHANNEL_READY_TIMEOUT_S)
        driver = Driver(cfg, [claims_pb2_grpc.ClaimServiceStub(c) for c in channels], plan, write_progress,
                        [claims_pb2_grpc.RedeemServiceStub(c) for c in channels] if cfg.redeem_share else (),
                        client)
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, BARRIER_TIMEOUT_S)
        start = await _wait_for_start(start_value)
        end = await driver.run(start)
        await driver.settle_unknown()
        if client is not None:
            driver.tally.client = driver.client_counters()
            driver.tally.calls = client.batching.calls  # the RPCs the client made for the claims
    finally:
        if client is not None:
            await client.close()
        for channel in channels:
            await channel.close()
    return driver.tally.result(cfg.index, start, end)


def _worker_process(
    cfg: WorkerConfig, packed_plan: dict[str, Any], barrier: Any, start_value: Any, progress: Any,
    results: Any,
) -> None:  # fmt: skip
    """Entry point of a spawned worker process: run it, put its result (or error) on the queue."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_run_worker_async(cfg, packed_plan, barrier, start_value, progress))
    except BaseException:
        try:
            barrier.abort()  # release the others rather than leave them waiting
        except Exception:
            pass
        results.put({"index": cfg.index, "error": traceback.format_exc()})
        return
    results.put(result)


def run_load(
    *,
    targets: Sequence[str],
    campaign_id: str,
    plan: Plan,
    processes: int,
    concurrency: int,
    mode: str = "unary",
    batch_size: int = 1,
    deadline: float = 5.0,
    max_attempts: int = MAX_ATTEMPTS,
    seed: int = 0,
    channel_id: str = "burst",
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 0.5,
    redeem_share: float = 0.0,
    merchant_id: str = "",
    order_amount_cents: int = 0,
    connections: int = 1,
    on_start: Callable[[float], None] | None = None,
) -> list[dict[str, Any]]:
    """Send the plan's claims from `processes` spawned workers; return their results.

    targets are front nodes' host:port, used round robin per call; each worker keeps up to
    `concurrency` calls in flight (of batch_size claims each in batch mode; in auto mode,
    `concurrency` claims in flight through its ClaimClient); deadline is per
    call, in seconds; seed drives the back-off jitter. redeem_share of the new grants are
    redeemed at once at merchant_id, on an order of order_amount_cents. on_progress, if
    given, is called in this process about every progress_every_s once the run has started.
    connections: TCP connections each worker opens to each target (a node run with
    `serve --workers N` spreads connections over its workers, not calls: give at least N).
    on_start, if given, is called once with the wall-clock time the workers start sending at
    (what a plan's offsets count from), as soon as it is fixed.
    Raises BurstError if a worker fails.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    problems = plan.check()
    if problems:
        raise ValueError("; ".join(problems))
    ctx = multiprocessing.get_context("spawn")
    shares = [p for p in plan.partition(max(1, processes)) if len(p)]
    barrier = ctx.Barrier(len(shares) + 1)
    start_value = ctx.Value("d", 0.0, lock=False)
    width = len(PROGRESS_FIELDS)
    progress = ctx.Array("q", max(1, len(shares)) * width, lock=False)
    results: Any = ctx.Queue()
    procs = []
    for index, share in enumerate(shares):
        cfg = WorkerConfig(
            index=index,
            targets=list(targets),
            campaign_id=campaign_id,
            concurrency=concurrency,
            mode=mode,
            batch_size=batch_size,
            deadline=deadline,
            max_attempts=max_attempts,
            seed=seed * 1000 + index,
            channel_id=channel_id,
            redeem_share=redeem_share,
            merchant_id=merchant_id,
            order_amount_cents=order_amount_cents,
            reach=access.current(),
            connections=connections,
        )
        proc = ctx.Process(
            target=_worker_process,
            args=(cfg, share.pack(), barrier, start_value, progress, results),
            name=f"claimcore-load-{index}",
        )
        proc.start()
        procs.append(proc)
    collected: dict[int, dict[str, Any]] = {}

    def release_workers() -> None:
        # The parent is one party too, so the workers go only once all are ready.
        try:
            barrier.wait(BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            return  # a worker failed or timed out; its error arrives on the queue
        start_value.value = time.time() + START_LEAD_S
        if on_start is not None:
            on_start(start_value.value)

    def snapshot() -> Progress:
        total = Progress(planned=len(plan), elapsed_s=max(0.0, time.time() - start_value.value))
        for name in PROGRESS_FIELDS:
            column = PROGRESS_FIELDS.index(name)
            setattr(total, name, sum(progress[i * width + column] for i in range(len(shares))))
        return total

    try:
        threading.Thread(target=release_workers, daemon=True).start()
        next_tick = time.monotonic() + progress_every_s
        while len(collected) < len(procs):
            try:
                result = results.get(timeout=min(0.5, progress_every_s))
            except queue_mod.Empty:
                if on_progress is not None and start_value.value and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + progress_every_s
                    on_progress(snapshot())
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
        if on_progress is not None:
            on_progress(snapshot())
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
    on_start: Callable[[float], None] | None = None,
) -> list[dict[str, Any]]:
    """Claim once for each of `users` users, all at the same instant; return the workers' results.

    The demo's burst: retry_share of the users replay their request_id right after the reply,
    double_tap_share claim again with a new one; seed makes the choice of who does what
    repeatable. Raises BurstError if a worker fails.
    """
    plan = plan_claims(
        users=users,
        shape=ArrivalShape("burst", duration_s=0.0),
        seed=seed,
        retry_share=retry_share,
        double_tap_share=double_tap_share,
        run_tag=secrets.token_hex(4),
    )
    return run_load(
        targets=[target],
        campaign_id=campaign_id,
        plan=plan,
        processes=processes,
        concurrency=concurrency,
        deadline=deadline,
        seed=seed,
        channel_id=channel_id,
        on_start=on_start,
    )
