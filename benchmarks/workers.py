"""`serve --workers 1` against `--workers 2`, side by side: `python -m benchmarks.workers`.

Issue 14's targets for every core: with 2 workers, node CPU per claim within 10 % of one
worker's, and the claims spread over the workers within 20 % of even. Both nodes run at once
on one shared redis-server (so Redis is not a variable), each with --metrics-port (the same
interceptor cost); the configurations alternate within each round.

The load: `--processes` driver processes, each with `--connections` gRPC channels to the node
(a local subchannel pool each, so each is its own TCP connection: SO_REUSEPORT hands out
connections, not calls) and `--concurrency` unary Claim calls in flight spread over them. Every
claim has a fresh user and is granted. Node CPU is utime + stime from /proc of every process of
the node: the one process, or the parent and its workers. The spread is read from the parent's
merged /metrics (claimcore_worker_claims_total per worker), before and after each phase.

Printed: per round and configuration claims/s and node CPU µs per claim; then the medians, the
ratio of CPU per claim (2 workers / 1, median of the per-round ratios, with its range) and the
spread (largest distance of a worker's share from an even share, as a fraction of it). The
machine's cores are shared by the drivers, the nodes and Redis: compare the rows, not machines.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import statistics
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.harness.local_node import LocalNode
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_CPU_RATIO = 1.10
TARGET_SPREAD = 0.20
CALL_TIMEOUT_S = 60.0


@dataclass
class Node:
    name: str
    local: LocalNode
    metrics_port: int
    pids: list[int]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), from /proc/<pid>/stat."""
    total = 0.0
    for pid in pids:
        rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(rest[11]) + int(rest[12])) / CLK_TCK
    return total


def scrape(port: int) -> tuple[dict[str, float], float]:
    """From the node's /metrics: claims per worker (none for one process), Redis round trips."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        samples = [s for f in text_string_to_metric_families(reply.read().decode()) for s in f.samples]
    return ({s.labels["worker"]: s.value for s in samples if s.name == "claimcore_worker_claims_total"},
            sum(s.value for s in samples if s.name == "claimcore_redis_round_trips_total"))


def connections_per_worker(node: Node) -> dict[str, int]:
    """Established connections to the node's port held by each worker (from `ss`; {} without it)."""
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established", "sport", "=",
                              f":{node.local.port}"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    held = [int(p) for p in re.findall(r"pid=(\d+)", out)]
    return {str(i): held.count(pid) for i, pid in enumerate(node.pids[1:])}


def start_node(name: str, redis_url: str, workers: int) -> Node:
    port = free_port()
    local = LocalNode(redis_url, "--workers", str(workers), "--metrics-port", str(port),
                      "--recycle-every-s", "0").start()
    assert local.proc is not None
    pids = [local.proc.pid]
    if workers > 1:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"workers, pids ([\d ]+)", local.log_tail())):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no workers line:\n{local.log_tail()}")
            time.sleep(0.05)
        pids += [int(p) for p in found.group(1).split()]
    return Node(name, local, port, pids)


def create_campaign(address: str, inventory: int) -> str:
    cid = f"bw-{uuid.uuid4().hex[:10]}"
    with grpc.insecure_channel(address) as ch:
        pb_grpc.AdminServiceStub(ch).CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
            campaign_id=cid, inventory=inventory, shards=8, value_cents=5_000)), timeout=10)
    return cid


# ---------------------------------------------------------------------- the driver processes


async def _drive(target: str, cid: str, prefix: str, warmup: int, calls: int, connections: int,
                 concurrency: int, ready: Any, go: Any) -> tuple[int, dict[str, int]]:
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
    await asyncio.gather(*(ch.channel_ready() for ch in channels))
    stubs = [pb_grpc.ClaimServiceStub(ch) for ch in channels]
    outcomes: dict[str, int] = {}

    async def send(count: int, tag: str) -> None:
        # Each lane sends a fixed share, as ClaimClient's round robin over its channels does: a
        # worker that the machine's scheduler favours must not take over the others' claims.
        async def lane(stub: Any, lane_no: int) -> None:
            for n in range(lane_no, count, concurrency):
                reply = await stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"{prefix}{tag}{n}",
                                                         request_id="r"), timeout=CALL_TIMEOUT_S)
                name = short_name(pb.Outcome, reply.outcome)
                outcomes[name] = outcomes.get(name, 0) + 1

        await asyncio.gather(*(lane(stubs[i % len(stubs)], i) for i in range(concurrency)))

    await send(warmup, "w")
    outcomes.clear()
    ready.set()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    await send(calls, "m")
    for ch in channels:
        await ch.close()
    return calls, outcomes


def _driver(args: tuple[Any, ...], results: Any) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results.put(runner.run(_drive(*args)))


def phase(node: Node, settings: argparse.Namespace, round_no: int) -> dict[str, Any]:
    per_process = settings.calls // settings.processes
    warmup = settings.warmup // settings.processes
    cid = create_campaign(node.local.address, 2 * settings.processes * (per_process + warmup))
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    go = ctx.Event()
    readies = [ctx.Event() for _ in range(settings.processes)]
    procs = [ctx.Process(target=_driver, args=((node.local.address, cid, f"u{round_no}-{i}-", warmup,
                                                per_process, settings.connections, settings.concurrency,
                                                readies[i], go), results))
             for i in range(settings.processes)]
    for p in procs:
        p.start()
    for ready in readies:
        if not ready.wait(120):
            raise RuntimeError("a driver did not warm up")
    spread0, trips0 = scrape(node.metrics_port)
    held = connections_per_worker(node) if len(node.pids) > 1 else {}
    cpu0, t0 = cpu_seconds(node.pids), time.monotonic()
    go.set()
    done = [results.get(timeout=600) for _ in procs]
    t1, cpu1 = time.monotonic(), cpu_seconds(node.pids)
    spread1, trips1 = scrape(node.metrics_port)
    for p in procs:
        p.join()
    claims = sum(n for n, _ in done)
    granted = sum(o.get("GRANTED", 0) for _, o in done)
    if granted != claims:
        raise RuntimeError(f"{node.name}: {granted} of {claims} granted: {[o for _, o in done]}")
    return {"claims": claims, "claims_per_s": claims / (t1 - t0), "cpu_us": (cpu1 - cpu0) / claims * 1e6,
            "claims_per_trip": claims / max(1.0, trips1 - trips0),
            "workers": {w: spread1[w] - spread0.get(w, 0) for w in spread1}, "connections": held}


def unevenness(counts: dict[str, float]) -> float:
    """Largest distance of a worker's claims from an even share, as a fraction of that share."""
    even = sum(counts.values()) / len(counts)
    return max(abs(n - even) for n in counts.values()) / even


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=6_000, help="measured claims per phase")
    parser.add_argument("--warmup", type=int, default=600)
    parser.add_argument("--processes", type=int, default=2, help="driver processes")
    parser.add_argument("--connections", type=int, default=64, help="connections per driver process")
    parser.add_argument("--concurrency", type=int, default=256, help="calls in flight per driver process")
    settings = parser.parse_args(argv)
    with EmbeddedRedis() as redis_server:
        nodes = [start_node("workers=1", redis_server.url, 1), start_node("workers=2", redis_server.url, 2)]
        try:
            rows: dict[str, list[dict[str, Any]]] = {n.name: [] for n in nodes}
            for r in range(settings.rounds):
                order = nodes if r % 2 == 0 else nodes[::-1]
                for node in order:
                    row = phase(node, settings, r)
                    rows[node.name].append(row)
                    spread = (f"  claims per worker {row['workers']}, connections {row['connections']}"
                              if row["workers"] else "")
                    print(f"round {r + 1} {node.name}: {row['claims_per_s']:8.0f} claims/s  "
                          f"{row['cpu_us']:6.1f} µs CPU/claim  {row['claims_per_trip']:5.1f} claims per "
                          f"Redis round trip{spread}", flush=True)
        finally:
            for node in nodes:
                node.local.stop()
    one, two = rows["workers=1"], rows["workers=2"]
    ratios = [b["cpu_us"] / a["cpu_us"] for a, b in zip(one, two, strict=True)]
    spreads = [unevenness(row["workers"]) for row in two]
    print()
    for name, rs in rows.items():
        print(f"{name}: median {statistics.median(r['claims_per_s'] for r in rs):8.0f} claims/s, "
              f"{statistics.median(r['cpu_us'] for r in rs):6.1f} µs node CPU per claim")
    ratio = statistics.median(ratios)
    spread = statistics.median(spreads)
    print(f"CPU per claim, 2 workers / 1: {ratio:.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}; "
          f"target <= {TARGET_CPU_RATIO:.2f}: {'PASS' if ratio <= TARGET_CPU_RATIO else 'MISS'})")
    verdict = "PASS" if spread <= TARGET_SPREAD else "MISS"
    print(f"spread over the workers, largest distance from even: {spread:.1%} (rounds {min(spreads):.1%}-"
          f"{max(spreads):.1%}; target <= {TARGET_SPREAD:.0%}: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
