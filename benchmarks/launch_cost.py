"""One launch, unary against `--client auto`, side by side: `python -m benchmarks.launch_cost`.

Issue 14's targets for the app-backend client: the same launch (N distinct users against N/10
vouchers, most of them within the first second, the rest in a tail until --duration) costs the
front node at most a twentieth of the CPU-seconds through `loadgen --client auto` (each load
process an app backend with one ClaimClient(watch=True)) that it costs in unary mode, and at
least 85 % of the claims answered after sold out never reach a node. Both runs must pass every
loadgen check (exact counts).

One redis-server and one front node (`serve --metrics-port`), started here; `claimcore loadgen`
runs twice against it, each time on a fresh campaign: unary first, recording its arrivals to a
trace, then auto replaying that trace (the same users, request ids, replays, second taps and
timing). The node's CPU-seconds are its own process_cpu_seconds_total read by loadgen before
and after each run (--node-metrics). The machine's cores are shared by the load processes,
the node and Redis: compare the two rows, not machines. Reports go to --out (JSON and text).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.harness.local_node import LocalNode

TARGET_CPU_RATIO = 1 / 20
TARGET_LOCAL_SHARE = 0.85


def loadgen(node: LocalNode, metrics_url: str, mode: str, args: argparse.Namespace, out: Path,
            trace: Path) -> dict[str, Any]:
    """One loadgen run; its JSON report (the text report goes to out/<mode>.txt)."""
    report_path = out / f"{mode}.json"
    command = [
        sys.executable, "-m", "claimcore", "loadgen", "--target", node.address,
        "--node-metrics", metrics_url, "--create-campaign", "--inventory", str(args.inventory),
        "--shards", str(args.shards), "--client", mode, "--processes", str(args.processes),
        "--concurrency", str(args.concurrency), "--no-progress", "--json", str(report_path),
        "--verify-sample", "1000",
    ]  # fmt: skip
    if mode == "unary":
        command += ["--users", str(args.users), "--arrival", "launch", "--duration", str(args.duration),
                    "--launch-window", str(args.launch_window), "--seed", str(args.seed),
                    "--record", str(trace)]
    else:
        command += ["--replay", str(trace), "--seed", str(args.seed)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    (out / f"{mode}.txt").write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 1):
        raise SystemExit(f"loadgen --client {mode} could not run (exit {done.returncode}):\n{done.stderr}")
    report = json.loads(report_path.read_text())
    report["took_s"] = time.monotonic() - started
    return report


def row(mode: str, r: dict[str, Any]) -> str:
    cpu, local = r["front_cpu"], r["answered_locally"]
    share = local["share_after_sold_out"]
    return (f"{mode:<6} {'PASS' if r['ok'] else 'FAIL ' + ','.join(r['failed']):<6} "
            f"{r['replies']:>9,} {r['calls']:>9,} {cpu['cpu_s']:>8.2f} {cpu['per_million_claims']:>11,.1f} "
            f"{local['count']:>9,} {'' if share is None else f'{100 * share:.1f} %':>8} "
            f"{r['burst_wall_s']:>7.1f} {r['latency_ms']['p99']:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--inventory", type=int, help="vouchers (default users / 10)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds the arrivals span")
    parser.add_argument("--launch-window", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=2, help="load (app backend) processes")
    parser.add_argument("--concurrency", type=int, default=256, help="calls / claims in flight per process")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=Path("artifacts/launch_cost"))
    args = parser.parse_args()
    args.inventory = args.inventory or max(1, args.users // 10)
    args.out.mkdir(parents=True, exist_ok=True)
    redis = EmbeddedRedis().start()
    metrics_port = free_port()
    node = LocalNode(redis.url, "--metrics-port", str(metrics_port)).start()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        print(f"launch: {args.users:,} users against {args.inventory:,} vouchers over {args.duration:g} s "
              f"(launch window {args.launch_window:g} s); {args.processes} load processes x "
              f"{args.concurrency}; one node, one redis-server", flush=True)
        trace = args.out / "launch.csv"
        reports = {mode: loadgen(node, metrics_url, mode, args, args.out, trace)
                   for mode in ("unary", "auto")}
    finally:
        node.stop()
        redis.cleanup()
    print(f"{'mode':<6} {'checks':<6} {'claims':>9} {'calls':>9} {'CPU-s':>8} {'CPU-s/1M':>11} "
          f"{'local':>9} {'local %':>8} {'wall s':>7} {'p99 ms':>8}")
    for mode, report in reports.items():
        print(row(mode, report))
    unary, auto = reports["unary"]["front_cpu"]["cpu_s"], reports["auto"]["front_cpu"]["cpu_s"]
    ratio = auto / unary if unary else float("nan")
    share = reports["auto"]["answered_locally"]["share_after_sold_out"] or 0.0
    print(f"front CPU-seconds, auto / unary: {ratio:.3f} (1/{1 / ratio:.1f}; target <= 1/20): "
          f"{'met' if ratio <= TARGET_CPU_RATIO else 'MISSED'}")
    print(f"claims after sold out answered without reaching a node: {100 * share:.1f} % (target >= 85 %): "
          f"{'met' if share >= TARGET_LOCAL_SHARE else 'MISSED'}")
    print(f"every check passed in both runs: {all(r['ok'] for r in reports.values())}; "
          f"reports in {args.out}/")


if __name__ == "__main__":
    main()
