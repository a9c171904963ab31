"""Shared machinery of the chaos tests: a recorded, retrying burst through real front nodes.

Not a conftest.py on purpose: a second conftest module would shadow tests/conftest.py for
`from conftest import ...` in the other test files.

Every claim attempt goes into a claimcore.harness.history.History (one Op per RPC, retries
included) and is checked at the end against Redis with check_history.

The short form runs by default; CLAIMCORE_CHAOS=full runs more cycles and seeds and bigger
bursts. CLAIMCORE_CHAOS_SEED fixes the seed (it is printed either way), and
CLAIMCORE_CHAOS_REPORT=path appends each scenario's figures to that file as JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis

from claimcore.harness.history import History, Report, check_history
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

FULL = os.environ.get("CLAIMCORE_CHAOS", "").lower() == "full"
FORM = "full" if FULL else "short"
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})


def pick(short: Any, full: Any) -> Any:
    """The short-form or the full-form value."""
    return full if FULL else short


def seeds(scenario: str, short: int = 1, full: int = 3) -> list[int]:
    """The seeds a scenario runs with: CLAIMCORE_CHAOS_SEED, else fresh random ones (printed)."""
    fixed = os.environ.get("CLAIMCORE_CHAOS_SEED")
    if fixed:
        return [int(fixed) + k for k in range(pick(short, full))]
    return [random.SystemRandom().randrange(1, 10**6) for _ in range(pick(short, full))]


def requests_for(seed: int, users: int, double_taps: int, replays: int, prefix: str = "u"
                 ) -> list[tuple[str, str]]:
    """`users` distinct users, plus double taps (same user, new request_id) and replays
    (same user, same request_id), shuffled by `seed`."""
    rng = random.Random(seed)
    out = [(f"{prefix}{i}", f"r{i}") for i in range(users)]
    out += [(f"{prefix}{rng.randrange(users)}", f"tap{n}") for n in range(double_taps)]
    out += [out[rng.randrange(users)] for _ in range(replays)]
    rng.shuffle(out)
    return out


@dataclass
class Fault:
    """`action` runs in a thread once `after` requests have a definite answer, or, with at_s,
    that many seconds into the burst."""

    after: int
    action: Callable[[], None]
    name: str = ""
    at_s: float | None = None
    started: float = 0.0    # time.monotonic() when it started and ended
    ended: float = 0.0


@dataclass
class BurstResult:
    requests: int
    started: float
    ended: float
    final: dict[tuple[str, str], str] = field(default_factory=dict)  # request -> last outcome
    gave_up: int = 0         # requests that never got a definite answer

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class Burst:
    """Concurrent clients sending claims through real nodes, each retried with the same
    request_id on the next node after UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED
    (jittered back-off) until a definite answer or `retry_for_s`."""

    def __init__(self, history: History, addresses: Sequence[str], campaign_id: str, *,
                 clients: int = 64, deadline_s: float = 2.0, retry_for_s: float = 60.0,
                 batch: int = 0, pace_s: float = 0.0, seed: int = 0) -> None:
        self.history = history
        self.addresses = list(addresses)
        self.campaign_id = campaign_id
        self.clients = clients
        self.deadline_s = deadline_s
        self.retry_for_s = retry_for_s
        self.batch = batch          # > 0: every other client sends ClaimBatch of this many claims
        self.pace_s = pace_s
        self.rng = random.Random(seed)

    async def run(self, requests: Sequence[tuple[str, str]], faults: Sequence[Fault] = (),
                  stop_after_s: float | None = None) -> BurstResult:
        """Send every request (or, with stop_after_s, those begun before then) and run the faults."""
        result = BurstResult(len(requests), time.monotonic(), 0.0)
        stop_at = result.started + stop_after_s if stop_after_s else float("inf")
        queue = list(reversed(requests))
        answered = 0
        progress = asyncio.Event()
        channels = [grpc.aio.insecure_channel(a) for a in self.addresses]
        stubs = [pb_grpc.ClaimServiceStub(ch) for ch in channels]

        async def attempt(node: int, batch: list[tuple[str, str]]) -> list[str | None]:
            """One RPC; each claim's outcome, or None where it must be sent again."""
            ops = [self.history.invoke(self.campaign_id, u, r, self.addresses[node]) for u, r in batch]
            claims = [pb.ClaimRequest(campaign_id=self.campaign_id, user_id=u, request_id=r)
                      for u, r in batch]
            try:
                if len(batch) == 1 and not self.batch:
                    replies = [await stubs[node].Claim(claims[0], timeout=self.deadline_s)]
                else:
                    replies = list((await stubs[node].ClaimBatch(
                        pb.ClaimBatchRequest(claims=claims), timeout=self.deadline_s)).replies)
            except grpc.aio.AioRpcError as err:
                code = err.code().name
                for op in ops:
                    self.history.failed(op, code)
                return [None if code in RETRYABLE else code] * len(batch)
            for op, reply in zip(ops, replies, strict=True):
                self.history.replied(op, reply)
            return [op.outcome for op in ops]

        async def client(k: int) -> None:
            nonlocal answered
            size = self.batch if self.batch and k % 2 else 1
            while queue and time.monotonic() < stop_at:
                todo = [queue.pop() for _ in range(min(size, len(queue)))]
                node = self.rng.randrange(len(stubs))
                give_up = time.monotonic() + self.retry_for_s
                tries = 0
                while todo:
                    outcomes = await attempt(node, todo)
                    for request, outcome in zip(todo, outcomes, strict=True):
                        if outcome is not None:
                            result.final[request] = outcome
                            answered += 1
                    todo = [req for req, outcome in zip(todo, outcomes, strict=True) if outcome is None]
                    if todo and time.monotonic() > give_up:
                        result.gave_up += len(todo)
                        break
                    if todo:
                        tries += 1
                        node = (node + 1) % len(stubs)
                        await asyncio.sleep(min(0.4, 0.02 * 2 ** min(tries, 5)) * (0.5 + self.rng.random()))
                progress.set()
                if self.pace_s:
                    await asyncio.sleep(self.pace_s)

        async def injector(fault: Fault) -> None:
            if fault.at_s is not None:
                await asyncio.sleep(max(0.0, result.started + fault.at_s - time.monotonic()))
            while fault.at_s is None and answered < fault.after and queue:
                progress.clear()
                await progress.wait()
            fault.started = time.monotonic()
            await asyncio.to_thread(fault.action)
            fault.ended = time.monotonic()

        async def injectors() -> None:
            for fault in faults:  # in order, one after the other
                await injector(fault)

        try:
            await asyncio.gather(injectors(), *(client(k) for k in range(self.clients)))
        finally:
            await asyncio.gather(*(ch.close() for ch in channels))
        result.ended = time.monotonic()
        result.requests = len(requests) - len(queue)  # those sent (all, without stop_after_s)
        return result


def check(history: History, client: Any, campaign_id: str) -> Report:
    report = check_history(history, client, campaign_id)
    print(report.summary(limit=5))
    return report


def granted_after(history: History, campaign_id: str, moment: float) -> int:
    """GRANTED replies to calls invoked after `moment`: claims resumed."""
    return sum(1 for op in history.for_campaign(campaign_id)
               if op.outcome == "GRANTED" and op.t_invoke > moment)


def record(scenario: str, seed: int, report: Report | None = None, **extra: Any) -> None:
    """Print the figures of a run; append them to $CLAIMCORE_CHAOS_REPORT if set."""
    row: dict[str, Any] = {"scenario": scenario, "form": FORM, "seed": seed}
    if report is not None:
        row.update(report.figures())
    row.update(extra)
    print(f"\nCHAOS {json.dumps(row, sort_keys=True)}")
    path = os.environ.get("CLAIMCORE_CHAOS_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(row, sort_keys=True) + "\n")


def direct(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True, socket_timeout=10)


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in kB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class RssSampler:
    """Samples a process's VmRSS every `every_s` in a thread: before, peak, after."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), rss_kb(self.pid)))
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self.before = rss_kb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = rss_kb(self.pid)

    @property
    def peak(self) -> int:
        return max([kb for _, kb in self.samples] + [self.before, getattr(self, "after", 0)])


def sigstop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def sigcont(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)
