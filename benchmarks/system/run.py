"""Run every system benchmark of issue 4 side by side and print one table.

    python -m benchmarks.system [--micro artifacts/micro.json] [--json artifacts/bench.json]

Configurations, each on fresh processes (and a fresh redis-server where there is one),
all run once per round (5 rounds by default); the table shows each figure's median:

  echo_granted        bare grpc.aio echo, Claim, replies the size of a grant
  echo_sold_out       bare grpc.aio echo, Claim, replies the size of a SOLD_OUT
  echo_batch          bare grpc.aio echo, ClaimBatch of 100
  naive_unary         grpc.aio + redis-py, one EVALSHA per claim, granting
  claimcore_unary     claimcore Claim, granting
  claimcore_batch     claimcore ClaimBatch of 100, granting
  claimcore_sold_out  claimcore Claim after the campaign sold out

The same driver sends the same calls to each (benchmarks/system/driver.py).
Within a round, configurations compared by a target run back to back (RUN_ORDER),
so a change in the machine's load between them is as short as it can be.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import grpc
import redis
from benchmarks.system import maths, naive_server, report
from benchmarks.system.common import CATEGORY, MIN_SPEND_CENTS, VALUE_CENTS
from benchmarks.system.driver import Load, run_load
from benchmarks.system.servers import BenchServer, Probe

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.harness.local_node import LocalNode
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

ALL = ("echo_granted", "echo_sold_out", "echo_batch", "naive_unary",
       "claimcore_unary", "claimcore_batch", "claimcore_sold_out")  # the table's order
RUN_ORDER = ("echo_granted", "claimcore_unary", "naive_unary", "echo_sold_out", "claimcore_sold_out",
             "echo_batch", "claimcore_batch")


@dataclass(frozen=True)
class Settings:
    rounds: int = 5               # a neighbour's burst spoils a round, not the median of five
    unary_calls: int = 6_000      # per configuration and round
    unary_warmup: int = 500
    batch_calls: int = 600        # of batch_size claims each
    batch_warmup: int = 50
    batch_size: int = 100
    processes: int = 2            # driver processes
    concurrency: int = 256        # unary calls in flight per driver process: a launch burst
    batch_concurrency: int = 4    # ClaimBatch calls in flight per driver process
    sold_out_inventory: int = 1_000

    def load(self, target: str, campaign_id: str, batch: bool = False) -> Load:
        if batch:
            return Load(target, campaign_id, self.batch_calls, self.batch_warmup, self.batch_size,
                        self.processes, self.batch_concurrency)
        return Load(target, campaign_id, self.unary_calls, self.unary_warmup, 0,
                    self.processes, self.concurrency)


def granting_inventory(load: Load) -> int:
    """Twice the claims a load makes: no shard of a campaign runs dry, so no claim waits for a borrow."""
    return 2 * (load.calls + load.warmup_calls) * load.claims_per_call


def measure(name: str, label: str, load: Load, server_pid: int, redis_port: int | None,
            expected: str = "GRANTED") -> maths.Result:
    print(f"  {name}: {load.calls:,} calls of {load.claims_per_call} claim(s), "
          f"{load.processes} x {load.concurrency} in flight ...", end="", flush=True)
    probe = Probe(server_pid, redis_port)
    try:
        before, after, phase = run_load(load, probe)
    finally:
        probe.close()
    result = maths.Result(name, label, phase.calls, phase.claims, phase.seconds, before, after,
                          phase.outcomes, phase.errors, expected, phase.driver_cpu_s)
    print(f" {result.claims_per_s:,.0f} claims/s", flush=True)
    return result


# ------------------------------------------------------------------ set-ups


@contextlib.contextmanager
def redis_server() -> Iterator[EmbeddedRedis]:
    """A fresh redis-server, configured as `claimcore serve` configures its own (AOF, everysec)."""
    with EmbeddedRedis() as server:
        yield server


Server = TypeVar("Server", BenchServer, LocalNode)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def node_pid(node: LocalNode) -> int:
    assert node.proc is not None
    return node.proc.pid


def create_claimcore_campaign(address: str, campaign_id: str, inventory: int) -> None:
    campaign = pb.Campaign(campaign_id=campaign_id, inventory=inventory, value_cents=VALUE_CENTS,
                           min_spend_cents=MIN_SPEND_CENTS, category=CATEGORY)
    with grpc.insecure_channel(address) as channel:
        pb_grpc.AdminServiceStub(channel).CreateCampaign(pb.CreateCampaignRequest(campaign=campaign),
                                                         timeout=10)


def check_naive(address: str, client: redis.Redis) -> None:
    """The baseline must be correct, or beating it means nothing: stock, per-user limit, replay."""
    naive_server.create_campaign(client, "naive-check", inventory=2)
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ClaimServiceStub(channel)

        def claim(user: str, request_id: str) -> pb.ClaimResponse:
            return stub.Claim(pb.ClaimRequest(campaign_id="naive-check", user_id=user,
                                              request_id=request_id), timeout=10)

        first, replay, second_tap = claim("ann", "r1"), claim("ann", "r1"), claim("ann", "r2")
        other, late = claim("bob", "r1"), claim("cat", "r1")
    stock = client.hget(naive_server.keys("naive-check")[0], "stock")
    checks = {
        "a first claim is granted": first.outcome == pb.OUTCOME_GRANTED,
        "a replay gets the same voucher": replay.outcome == pb.OUTCOME_GRANTED
        and replay.voucher.voucher_id == first.voucher.voucher_id,
        "a second request of the user is ALREADY_CLAIMED": second_tap.outcome == pb.OUTCOME_ALREADY_CLAIMED
        and second_tap.voucher.voucher_id == first.voucher.voucher_id,
        "another user gets another voucher": other.outcome == pb.OUTCOME_GRANTED
        and other.voucher.voucher_id != first.voucher.voucher_id,
        "no grant beyond the stock": late.outcome == pb.OUTCOME_SOLD_OUT and stock in (b"0", "0"),
    }
    failed = [what for what, ok in checks.items() if not ok]
    if failed:
        raise RuntimeError(f"the naive baseline is wrong: {failed}")


def wait_until_answered_locally(address: str, redis_port: int, campaign_id: str,
                                timeout: float = 15.0) -> None:
    """Wait until the node answers claims of a sold-out campaign without running a claim script."""
    client = redis.Redis(port=redis_port)
    deadline = time.monotonic() + timeout
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ClaimServiceStub(channel)
            for attempt in range(10_000):
                scripts_before = maths.command_calls(client.info("commandstats"), "evalsha")
                for i in range(50):
                    stub.Claim(pb.ClaimRequest(campaign_id=campaign_id, user_id=f"probe-{attempt}-{i}",
                                               request_id="r1"), timeout=10)
                if maths.command_calls(client.info("commandstats"), "evalsha") == scripts_before:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node still runs claim scripts for sold-out {campaign_id} "
                                       f"after {timeout:.0f} s")
                time.sleep(0.25)
    finally:
        client.close()


# ------------------------------------------------------------------ configurations


def run_echo(settings: Settings, name: str) -> maths.Result:
    reply = "sold-out" if name == "echo_sold_out" else "granted"
    batch = name == "echo_batch"
    labels = {
        "echo_granted": "1 echo server, Claim (reply the size of a grant)",
        "echo_sold_out": "1 echo server, Claim (reply the size of SOLD_OUT)",
        "echo_batch": f"1 echo server, ClaimBatch x{settings.batch_size}",
    }
    with running(BenchServer("benchmarks.system.echo_server", "--reply", reply)) as server:
        load = settings.load(server.address, "echo", batch)
        return measure(name, labels[name], load, server.pid, None,
                       "SOLD_OUT" if reply == "sold-out" else "GRANTED")


def run_naive(settings: Settings, name: str) -> maths.Result:
    with redis_server() as rs, running(BenchServer("benchmarks.system.naive_server", "--redis", rs.url)) \
            as server:
        client = redis.Redis(port=rs.port)
        try:
            check_naive(server.address, client)
            load = settings.load(server.address, "naive")
            naive_server.create_campaign(client, "naive", granting_inventory(load))
        finally:
            client.close()
        return measure(name, "2 naive: grpc.aio + redis-py, EVALSHA per claim", load, server.pid, rs.port)


def run_claimcore(settings: Settings, name: str) -> maths.Result:
    with redis_server() as rs, running(LocalNode(rs.url)) as node:
        if name == "claimcore_sold_out":
            cid = "sold-out"
            create_claimcore_campaign(node.address, cid, settings.sold_out_inventory)
            drain = Load(node.address, cid, calls=settings.sold_out_inventory * 3 // 2, warmup_calls=0,
                         processes=1, concurrency=32, user_prefix="drain")
            _, _, phase = run_load(drain, lambda: None)
            if phase.outcomes.get("GRANTED") != settings.sold_out_inventory:
                raise RuntimeError(f"draining the sold-out campaign gave {phase.outcomes}")
            time.sleep(1.0)  # the node's sold-out snapshot refreshes every second
            wait_until_answered_locally(node.address, rs.port, cid)
            return measure(name, "5 claimcore Claim, after sold out", settings.load(node.address, cid),
                           node_pid(node), rs.port, "SOLD_OUT")
        batch = name == "claimcore_batch"
        cid = "granting"
        load = settings.load(node.address, cid, batch)
        create_claimcore_campaign(node.address, cid, granting_inventory(load))
        label = (f"4 claimcore ClaimBatch x{settings.batch_size}, granting" if batch
                 else "3 claimcore Claim, granting")
        return measure(name, label, load, node_pid(node), rs.port)


RUNNERS: dict[str, Callable[[Settings, str], maths.Result]] = {
    "echo_granted": run_echo, "echo_sold_out": run_echo, "echo_batch": run_echo,
    "naive_unary": run_naive,
    "claimcore_unary": run_claimcore, "claimcore_batch": run_claimcore, "claimcore_sold_out": run_claimcore,
}


# ------------------------------------------------------------------ main


def load_micro(path: Path | None) -> dict[str, maths.MicroRatio]:
    if path is None or not path.exists():
        return {}
    return maths.micro_ratios(json.loads(path.read_text()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.system", description=__doc__.splitlines()[0])
    parser.add_argument("--micro", type=Path, default=Path("artifacts/micro.json"),
                        help="pytest-benchmark JSON of the microbenchmarks (their ratios join the table)")
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench.json"),
                        help="write the results here")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of: {', '.join(ALL)}")
    parser.add_argument("--rounds", type=int, default=Settings.rounds)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every call count (0.1 for a quick look; figures get noisier)")
    parser.add_argument("--processes", type=int, default=Settings.processes)
    parser.add_argument("--concurrency", type=int, default=Settings.concurrency)
    parser.add_argument("--batch-concurrency", type=int, default=Settings.batch_concurrency)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        print(f"unknown configuration(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    base = Settings()
    settings = replace(
        base, rounds=max(1, args.rounds), processes=args.processes, concurrency=args.concurrency,
        batch_concurrency=args.batch_concurrency,
        unary_calls=max(100, int(base.unary_calls * args.scale)),
        unary_warmup=max(10, int(base.unary_warmup * args.scale)),
        batch_calls=max(10, int(base.batch_calls * args.scale)),
        batch_warmup=max(2, int(base.batch_warmup * args.scale)),
    )
    started = time.monotonic()
    rounds: dict[str, list[maths.Result]] = {name: [] for name in names}
    for i in range(settings.rounds):
        print(f"system benchmarks, round {i + 1} of {settings.rounds}", flush=True)
        for name in RUN_ORDER:
            if name in rounds:
                rounds[name].append(RUNNERS[name](settings, name))
    results = [maths.summarize(rounds[name]) for name in ALL if name in rounds]
    micro = load_micro(args.micro)
    verdicts = maths.targets({r.name: r for r in results}, micro)

    print()
    print(f"claimcore system benchmarks ({os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}; driver: {settings.processes} processes x {settings.concurrency} "
          f"unary / {settings.batch_concurrency} batch calls in flight; per configuration and round "
          f"{settings.unary_calls:,} unary calls or {settings.batch_calls:,} x {settings.batch_size} batched "
          f"claims; medians of {settings.rounds} rounds)")
    print(report.results_table(results))
    print()
    print(report.micro_table(micro))
    print()
    print(report.targets_table(verdicts))
    elapsed = time.monotonic() - started
    print(f"\n(system benchmarks took {elapsed:.0f} s; CPU figures from /proc/<pid>/stat of the front "
          f"process and Redis INFO main-thread CPU, read before and after each measured phase)")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "settings": asdict(settings),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "results": [r.as_dict() for r in results],
        "rounds": {name: [r.as_dict() for r in rs] for name, rs in rounds.items()},
        "micro": {g: {"compiled_s": m.compiled_s, "twin_s": m.twin_s, "ratio": m.ratio}
                  for g, m in micro.items()},
        "targets": [v.as_dict() for v in verdicts],
        "elapsed_s": elapsed,
    }, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0
