"""The load driver: worker processes that send the same calls to whichever server is under test.

Each worker process opens one grpc.aio channel (on uvloop) and keeps
`concurrency` calls in flight. Every worker first sends its share of the
warm-up calls, then reports ready; once all are ready the parent takes its
`before` reading and lets them go; when the last one is done it takes the
`after` reading. Every claim carries a user id never used before, so a
campaign with enough stock grants every one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import uvloop

from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name

CHANNEL_OPTIONS = [("grpc.enable_retries", 0), ("grpc.max_receive_message_length", 16 << 20)]
CALL_TIMEOUT_S = 60.0
START_TIMEOUT_S = 120.0  # channel up and warm-up done
PHASE_TIMEOUT_S = 600.0


class DriverError(RuntimeError):
    """A worker process failed or stopped answering."""


@dataclass(frozen=True)
class Load:
    target: str              # host:port of the server under test
    campaign_id: str
    calls: int               # measured calls, all workers together
    warmup_calls: int
    batch_size: int = 0      # 0: unary Claim; n: ClaimBatch calls of n claims
    processes: int = 2
    concurrency: int = 64    # calls in flight per process
    user_prefix: str = "u"   # user ids are <prefix><worker>-<phase><n>: unique per campaign

    @property
    def claims_per_call(self) -> int:
        return self.batch_size or 1


@dataclass
class Phase:
    calls: int
    claims: int
    seconds: float             # from the first worker's start to the last one's end
    outcomes: dict[str, int]   # outcome name -> claims
    errors: dict[str, int]     # status code name -> calls
    driver_cpu_s: float        # CPU time of the worker processes during the phase


def share(total: int, parts: int, index: int) -> int:
    """Worker `index`'s share of `total` calls, split as evenly as possible."""
    base, extra = divmod(total, parts)
    return base + (1 if index < extra else 0)


def build_calls(load: Load, worker: int, phase: str, count: int) -> list[Any]:
    def claim(n: int) -> pb.ClaimRequest:
        return pb.ClaimRequest(campaign_id=load.campaign_id, user_id=f"{load.user_prefix}{worker}-{phase}{n}",
                               request_id=f"req-{n:08d}", channel_id="bench-app")
    if not load.batch_size:
        return [claim(n) for n in range(count)]
    size = load.batch_size
    return [pb.ClaimBatchRequest(claims=[claim(c * size + i) for i in range(size)]) for c in range(count)]


async def send_all(method: Any, calls: list[Any], concurrency: int) -> tuple[Counter[int], Counter[str]]:
    """Send every call, `concurrency` at a time; count outcomes per claim and errors per call."""
    outcomes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    work = iter(calls)

    async def lane() -> None:
        for request in work:  # one iterator shared by all lanes: each call is sent once
            try:
                reply = await method(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            if isinstance(reply, pb.ClaimBatchResponse):
                for item in reply.replies:
                    outcomes[item.outcome] += 1
            else:
                outcomes[reply.outcome] += 1

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return outcomes, errors


async def _work(load: Load, index: int, messages: Any, go: Any) -> dict[str, Any]:
    warmup = build_calls(load, index, "w", share(load.warmup_calls, load.processes, index))
    measured = build_calls(load, index, "m", share(load.calls, load.processes, index))
    async with grpc.aio.insecure_channel(load.target, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT_S)
        stub = pb_grpc.ClaimServiceStub(channel)
        method = stub.ClaimBatch if load.batch_size else stub.Claim
        _, warmup_errors = await send_all(method, warmup, load.concurrency)
        if warmup_errors:
            raise DriverError(f"warm-up calls failed: {dict(warmup_errors)}")
        messages.put(("ready", index, None))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        cpu0, t0 = time.process_time(), time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes
        outcomes, errors = await send_all(method, measured, load.concurrency)
        t1, cpu1 = time.monotonic(), time.process_time()
    return {"calls": len(measured), "start": t0, "end": t1, "cpu": cpu1 - cpu0,
            "outcomes": {short_name(pb.Outcome, k): v for k, v in outcomes.items()}, "errors": dict(errors)}


def _worker(load: Load, index: int, messages: Any, go: Any) -> None:
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            messages.put(("done", index, runner.run(_work(load, index, messages, go))))
    except BaseException:  # noqa: BLE001 - the parent reports it
        messages.put(("error", index, traceback.format_exc()))


def run_load(load: Load, read: Callable[[], Any]) -> tuple[Any, Any, Phase]:
    """Warm up, then `read()`, the measured calls, `read()` again: (before, after, phase)."""
    ctx = multiprocessing.get_context("spawn")
    messages: Any = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(load, i, messages, go), name=f"bench-driver-{i}")
             for i in range(load.processes)]
    for proc in procs:
        proc.start()
    finished = False
    try:
        _wait_for(messages, procs, "ready", START_TIMEOUT_S)
        before = read()
        go.set()
        done = _wait_for(messages, procs, "done", PHASE_TIMEOUT_S)
        after = read()
        finished = True
    finally:
        for proc in procs:
            proc.join(timeout=10 if finished else 0)
            if proc.is_alive():
                proc.kill()
                proc.join()
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for d in done:
        outcomes.update(d["outcomes"])
        errors.update(d["errors"])
    calls = sum(d["calls"] for d in done)
    seconds = max(d["end"] for d in done) - min(d["start"] for d in done)
    return before, after, Phase(calls, calls * load.claims_per_call, seconds, dict(outcomes), dict(errors),
                                sum(d["cpu"] for d in done))


def _wait_for(messages: Any, procs: list[Any], kind: str, timeout: float) -> list[Any]:
    """The payloads of one `kind` message from every worker."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    silent_exits = 0  # polls that found a worker gone without its message
    while len(got) < len(procs):
        try:
            what, index, payload = messages.get(timeout=0.5)
        except queue.Empty:
            gone = [i for i, p in enumerate(procs) if i not in got and not p.is_alive()]
            silent_exits += bool(gone)
            if time.monotonic() > deadline or silent_exits > 4:
                raise DriverError(f"driver workers did not all report {kind!r} "
                                  f"({len(got)} of {len(procs)}; exited: {gone})") from None
            continue
        if what == "error":
            raise DriverError(f"driver worker {index} failed:\n{payload}")
        if what == kind:
            got[index] = payload
    return [got[i] for i in sorted(got)]
