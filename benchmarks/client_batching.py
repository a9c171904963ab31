"""The auto-batching client's cost and delay, side by side in one run (issue 14; not a test).

    .venv/bin/python -m benchmarks.client_batching [--rounds 3] [--claims 20000] [--light-claims 6000]

One redis-server and one `claimcore serve` node (LocalNode), one campaign that
never runs dry (every claim is a grant by a new user). Each round runs, in a
rotating order:

- node CPU per claim (utime + stime of the node process, /proc/<pid>/stat):
  `auto`   1,000 caller coroutines, each calling ClaimClient.claim() in a loop;
  `batch`  ClaimClient.claim_batch() of 100 claims, 8 calls in flight;
  `unary`  the bare stub's Claim, 256 calls in flight;
- the delay the linger adds at light load: 20 callers, each claiming and then
  pausing 0-20 ms (about 1,300 claims/s), each claim going at random through
  ClaimClient with the default linger (1 ms), ClaimClient with linger_s=0, or
  a bare unary call (mixed in one phase, so all three meet the same noise of
  a shared machine); p50 and p99 of each claim's latency as its caller saw it.

Printed: each figure's median over rounds, and the two targets of issue 14 with
the per-round range: auto's CPU per claim at most 2x batch's, and the linger
adding at most 2 ms to the p99 at light load (p99 with linger minus p99 without).
The driver runs in this process, on the same 2 cores as the node and Redis:
compare rows of one run, not machines.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from benchmarks.system.servers import process_cpu_seconds

from claimcore.client import ClaimClient
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.harness.local_node import LocalNode
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

CAMPAIGN = "bench-client"
CALLERS = 1000
BATCH, BATCHES_IN_FLIGHT, UNARY_IN_FLIGHT = 100, 8, 256
LIGHT_CALLERS, LIGHT_PAUSE_S = 20, 0.020  # the light load: --light-callers, --light-pause-ms


@dataclass
class Figures:
    cpu_us: dict[str, list[float]] = field(default_factory=dict)      # node CPU per claim, by mode
    per_call: dict[str, list[float]] = field(default_factory=dict)    # claims per call (auto)
    rate: dict[str, list[float]] = field(default_factory=dict)        # claims/s (this machine's)
    p50_ms: dict[str, list[float]] = field(default_factory=dict)
    p99_ms: dict[str, list[float]] = field(default_factory=dict)
    wait_p50_ms: dict[str, list[float]] = field(default_factory=dict)  # in the lane, before sending
    wait_p99_ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, table: dict[str, list[float]], key: str, value: float) -> None:
        table.setdefault(key, []).append(value)


class Users:
    """Fresh user ids: every claim of the run is a grant."""

    def __init__(self) -> None:
        self.n = 0

    def take(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


async def load_auto(client: ClaimClient, users: Users, claims: int) -> None:
    left = [claims]

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            reply = await client.claim(CAMPAIGN, users.take("a"))
            assert reply.outcome == pb.OUTCOME_GRANTED, reply

    await asyncio.gather(*(caller() for _ in range(CALLERS)))


async def load_batch(client: ClaimClient, users: Users, claims: int) -> None:
    left = [claims // BATCH]

    async def sender() -> None:
        while left[0] > 0:
            left[0] -= 1
            batch = [pb.ClaimRequest(campaign_id=CAMPAIGN, user_id=users.take("b"),
                                     request_id=f"r{users.n}") for _ in range(BATCH)]
            reply = await client.claim_batch(batch)
            assert all(r.outcome == pb.OUTCOME_GRANTED for r in reply.replies)

    await asyncio.gather(*(sender() for _ in range(BATCHES_IN_FLIGHT)))


async def load_unary(stub: pb_grpc.ClaimServiceStub, users: Users, claims: int) -> None:
    left = [claims]

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            reply = await stub.Claim(pb.ClaimRequest(campaign_id=CAMPAIGN, user_id=users.take("u"),
                                                     request_id=f"r{users.n}"), timeout=10)
            assert reply.outcome == pb.OUTCOME_GRANTED, reply

    await asyncio.gather(*(caller() for _ in range(UNARY_IN_FLIGHT)))


async def light_latencies(ways: dict[str, Callable[[], Awaitable[object]]], claims: int, callers: int,
                          pause_s: float) -> dict[str, list[float]]:
    """Each claim's latency (s), by way, with `callers` callers pausing 0..pause_s between claims.
    Each claim takes a way at random, so that every way meets the same noise."""
    left, seen = [claims], {name: [] for name in ways}  # type: dict[str, list[float]]
    names = list(ways)

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            await asyncio.sleep(random.random() * pause_s)
            name = random.choice(names)
            t0 = time.perf_counter()
            await ways[name]()
            seen[name].append(time.perf_counter() - t0)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return seen


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_round(address: str, pid: int, args: argparse.Namespace, order: list[str], users: Users,
                    figures: Figures) -> None:
    async with ClaimClient([address]) as auto, ClaimClient([address], linger_s=0.0) as eager, \
            grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ClaimServiceStub(channel)
        loads = {
            "auto": (lambda n: load_auto(auto, users, n), args.claims),
            "batch": (lambda n: load_batch(auto, users, n), args.claims),
            "unary": (lambda n: load_unary(stub, users, n), args.claims // 4),
        }
        for mode in order:
            run, claims = loads[mode]
            await run(min(claims, 2000))  # warm-up
            calls0, claims0 = auto.batching.calls, auto.batching.claims
            cpu0, t0 = process_cpu_seconds(pid), time.perf_counter()
            await run(claims)
            figures.add(figures.rate, mode, claims / (time.perf_counter() - t0))
            figures.add(figures.cpu_us, mode, (process_cpu_seconds(pid) - cpu0) / claims * 1e6)
            if mode == "auto":
                figures.add(figures.per_call, mode, (auto.batching.claims - claims0)
                            / max(1, auto.batching.calls - calls0))

        light: dict[str, Callable[[], Awaitable[object]]] = {
            "linger 1 ms": lambda: auto.claim(CAMPAIGN, users.take("l")),
            "linger 0": lambda: eager.claim(CAMPAIGN, users.take("e")),
            "bare unary": lambda: stub.Claim(pb.ClaimRequest(
                campaign_id=CAMPAIGN, user_id=users.take("x"), request_id=f"r{users.n}"), timeout=10),
        }
        auto.batching.waits, eager.batching.waits = [], []
        for name, seen in (await light_latencies(light, args.light_claims, args.light_callers,
                                                       args.light_pause_ms / 1e3)).items():
            figures.add(figures.p50_ms, name, p(seen, 0.50) * 1e3)
            figures.add(figures.p99_ms, name, p(seen, 0.99) * 1e3)
        for name, client in (("linger 1 ms", auto), ("linger 0", eager)):
            waits = client.batching.waits or [0.0]
            figures.add(figures.wait_p50_ms, name, p(waits, 0.50) * 1e3)
            figures.add(figures.wait_p99_ms, name, p(waits, 0.99) * 1e3)
            client.batching.waits = None


def report(figures: Figures, args: argparse.Namespace) -> None:
    rounds = args.rounds
    med = statistics.median
    print(f"\nnode CPU per claim (µs), median of {rounds} rounds [min .. max]")
    for mode in ("auto", "batch", "unary"):
        values = figures.cpu_us[mode]
        print(f"  {mode:6} {med(values):8.1f}   [{min(values):.1f} .. {max(values):.1f}]"
              f"   ({med(figures.rate[mode]):,.0f} claims/s)")
    print(f"  auto: {med(figures.per_call['auto']):.1f} claims per call "
          f"({CALLERS} callers; batch: {BATCH}; unary: 1)")
    ratios = [a / b for a, b in zip(figures.cpu_us["auto"], figures.cpu_us["batch"], strict=True)]
    verdict = "PASS" if med(ratios) <= 2.0 else "MISS"
    print(f"  target: auto <= 2x batch's CPU per claim: {med(ratios):.2f}x "
          f"[{min(ratios):.2f} .. {max(ratios):.2f}] {verdict}")
    vs_unary = [u / a for a, u in zip(figures.cpu_us["auto"], figures.cpu_us["unary"], strict=True)]
    print(f"  unary costs the node {med(vs_unary):.1f}x the auto-batching client per claim")

    print(f"\nlatency at light load ({args.light_callers} callers pausing 0-{args.light_pause_ms:g} ms), "
          f"ms, median of {rounds} rounds")
    for name in ("linger 1 ms", "linger 0", "bare unary"):
        print(f"  {name:12} p50 {med(figures.p50_ms[name]):6.2f}   p99 {med(figures.p99_ms[name]):6.2f}")
    print("  time in the lane before sending (the client's own delay, measured by its batcher):")
    for name in ("linger 1 ms", "linger 0"):
        print(f"  {name:12} p50 {med(figures.wait_p50_ms[name]):6.2f}   "
              f"p99 {med(figures.wait_p99_ms[name]):6.2f}")
    added = [a - b for a, b in zip(figures.p99_ms["linger 1 ms"], figures.p99_ms["linger 0"], strict=True)]
    waited = [a - b for a, b in zip(figures.wait_p99_ms["linger 1 ms"], figures.wait_p99_ms["linger 0"],
                                    strict=True)]
    for what, values in (("end to end", added), ("in the lane", waited)):
        verdict = "PASS" if med(values) <= 2.0 else "MISS"
        print(f"  target: the linger adds <= 2 ms to the p99, {what}: {med(values):+.2f} ms "
              f"[{min(values):+.2f} .. {max(values):+.2f}] {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--claims", type=int, default=20_000, help="claims per round, auto and batch "
                                                                 "(unary: a quarter)")
    parser.add_argument("--light-claims", type=int, default=6000, help="claims per light-load phase")
    parser.add_argument("--light-callers", type=int, default=LIGHT_CALLERS)
    parser.add_argument("--light-pause-ms", type=float, default=LIGHT_PAUSE_S * 1e3,
                        help="each light-load caller pauses 0 to this between claims")
    args = parser.parse_args()
    per_round = args.claims * 2 + args.claims // 4 + args.light_claims + 8000
    figures, users = Figures(), Users()
    modes = ["auto", "batch", "unary"]
    started = time.monotonic()
    with EmbeddedRedis() as rs:
        node = LocalNode(rs.url, "--recycle-every-s", "0").start()
        try:
            assert node.proc is not None
            with grpc.insecure_channel(node.address) as channel:
                pb_grpc.AdminServiceStub(channel).CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
                    campaign_id=CAMPAIGN, inventory=2 * per_round * args.rounds, shards=16)), timeout=10)
            for r in range(args.rounds):
                order = modes[r % 3:] + modes[:r % 3]
                asyncio.run(one_round(node.address, node.proc.pid, args, order, users, figures))
                print(f"round {r + 1}/{args.rounds} done ({time.monotonic() - started:.0f} s)", flush=True)
        finally:
            node.stop()
    report(figures, args)


if __name__ == "__main__":
    main()
