"""`claimcore demo`: replay a launch-second burst and prove nothing went wrong.

The demo starts its own Redis (unless --redis is given) and one front node
(`python -m claimcore serve`) as child processes, creates a campaign, then
fires one claim per user from several worker processes that all start at the
same instant. Some users resend the same request_id (a lost reply), some tap
twice with a fresh request_id. Afterwards it checks, against the server's own
figures, that no voucher was granted twice, nothing was oversold, exactly
min(inventory, users) vouchers went out, and replays were answered
consistently; it prints a short report and exits 0 only if every check passed.
Its own node serves /metrics, so the report gives the CPU-seconds the burst cost it.

Exit codes: 0 all checks passed, 1 a check failed, 2 the demo could not run,
130 interrupted.

This module only orchestrates: the burst is claimcore.loadtest.burst, the node
claimcore.harness.local_node, the checks and the report claimcore.loadtest.report.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.harness.local_node import LocalNode, NodeStartError
from claimcore.loadtest.burst import BurstError, run_burst
from claimcore.loadtest.charts import render_html
from claimcore.loadtest.node_cpu import CpuMeter, NodeCpuError
from claimcore.loadtest.report_text import format_report, report_json
from claimcore.loadtest.server_check import ServerCheckError, check_against_server
from claimcore.loadtest.stock_sampler import StockSampler
from claimcore.security import access
from claimcore.v1 import claims_pb2, claims_pb2_grpc

NODE_START_TIMEOUT_S = 30.0
#: Sent with every claim, so the demo's vouchers say where they came from.
CHANNEL_ID = "demo"

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class DemoError(RuntimeError):
    """The demo could not run (as opposed to: it ran and a check failed)."""


# ---------------------------------------------------------------- admin calls


def create_campaign(channel: grpc.Channel, args: argparse.Namespace, campaign_id: str) -> Any:
    admin = claims_pb2_grpc.AdminServiceStub(channel)
    campaign = claims_pb2.Campaign(
        campaign_id=campaign_id,
        name=f"claimcore demo {campaign_id}",
        inventory=args.inventory,
        shards=args.shards,
        per_user_limit=1,
        admission_rate=0,
        value_cents=6000,
        min_spend_cents=120000,
        category="dining",
    )
    try:
        info = admin.CreateCampaign(claims_pb2.CreateCampaignRequest(campaign=campaign), timeout=30).campaign
    except grpc.RpcError as exc:
        raise DemoError(
            f"CreateCampaign failed: {exc.code().name} {exc.details()}"  # type: ignore[attr-defined]
        ) from exc
    if info.granted != 0:
        raise DemoError(f"campaign {campaign_id} is not fresh: {info.granted} already granted")
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("burst")
    g.add_argument("--users", type=int, default=100_000, help="distinct users (default 100000)")
    g.add_argument("--inventory", type=int, default=10_000, help="vouchers (default 10000)")
    g.add_argument("--shards", type=int, default=8, help="Redis shards (default 8)")
    g.add_argument("--processes", type=int, default=3, help="client worker processes (default 3)")
    g.add_argument(
        "--concurrency",
        type=int,
        default=128,
        help="concurrent claims per worker process (default 128)",
    )
    g.add_argument(
        "--retry-share",
        type=float,
        default=0.1,
        help="share of users resending the same request_id after the reply (default 0.1)",
    )
    g.add_argument(
        "--double-tap-share",
        type=float,
        default=0.05,
        help="share of users claiming again with a new request_id (default 0.05)",
    )
    g.add_argument(
        "--deadline", type=float, default=5.0, help="per-call deadline in seconds (default 5.0)"
    )
    g.add_argument(
        "--seed", type=int, default=None, help="seed for who retries / double-taps (default random)"
    )
    g.add_argument(
        "--verify-sample",
        type=int,
        default=1000,
        help="grants re-read with GetClaim(user_id) after the burst (default 1000; 0 = none)",
    )
    t = parser.add_argument_group("target")
    t.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="Redis for the front node (default: start a private redis-server)",
    )
    t.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=None,
        help="use this running front node instead of starting Redis and a node",
    )
    parser.add_argument(
        "--json", metavar="PATH", default=None, help="also write the report as JSON to PATH"
    )
    parser.add_argument(
        "--html", metavar="PATH", default=None,
        help="also write the report as a self-contained HTML page with charts to PATH "
             "(docs/load-reports.md)",
    )


def _validate(args: argparse.Namespace) -> None:
    problems = []
    if args.users < 1:
        problems.append("--users must be >= 1")
    if not 1 <= args.inventory <= 100_000_000:
        problems.append("--inventory must be within 1..100000000")
    if not 1 <= args.shards <= 1024:
        problems.append("--shards must be within 1..1024")
    if args.processes < 1:
        problems.append("--processes must be >= 1")
    if args.concurrency < 1:
        problems.append("--concurrency must be >= 1")
    for name in ("retry_share", "double_tap_share"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            problems.append(f"--{name.replace('_', '-')} must be within 0..1")
    if args.deadline <= 0:
        problems.append("--deadline must be > 0")
    if problems:
        raise DemoError("; ".join(problems))


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the process exit code (0 = all checks passed)."""
    redis_server = None
    node: LocalNode | None = None
    metrics_urls: list[str] = []  # the demo's own node: its CPU-seconds go in the report
    out = sys.stdout
    try:
        _validate(args)
        seed = args.seed if args.seed is not None else secrets.randbits(31)
        target = args.target
        if target:
            print(f"demo: using front node {target}", file=out, flush=True)
        else:
            redis_url = args.redis
            if not redis_url:
                redis_server = EmbeddedRedis().start()
                redis_url = redis_server.url
                print(f"demo: started redis-server at {redis_url}", file=out, flush=True)
            metrics_port = free_port()
            node = LocalNode(redis_url, "--metrics-port", str(metrics_port))
            node.start(NODE_START_TIMEOUT_S)
            metrics_urls = [f"http://127.0.0.1:{metrics_port}/metrics"]
            target = node.address
            print(f"demo: front node serving on {target}", file=out, flush=True)

        campaign_id = f"demo-{int(time.time())}-{secrets.token_hex(3)}"
        with access.dial(target) as channel:
            create_campaign(channel, args, campaign_id)
        processes = min(args.processes, args.users)
        print(
            f"demo: campaign {campaign_id} (inventory {args.inventory:,}, {args.shards} shards); "
            f"{args.users:,} users from {processes} processes x {args.concurrency} "
            f"concurrent (seed {seed})",
            file=out,
            flush=True,
        )
        meter = CpuMeter(metrics_urls).start() if metrics_urls else None
        stock = StockSampler(target, campaign_id)
        try:
            results = run_burst(
                target=target,
                campaign_id=campaign_id,
                users=args.users,
                processes=processes,
                concurrency=args.concurrency,
                retry_share=args.retry_share,
                double_tap_share=args.double_tap_share,
                deadline=args.deadline,
                seed=seed,
                channel_id=CHANNEL_ID,
                on_start=stock.start,
            )
        finally:
            stock_samples = stock.stop()
        if node is not None and not node.alive():
            raise DemoError(f"front node died during the burst:\n{node.log_tail()}")
        front_cpu = meter.stop() if meter is not None else None
        report = check_against_server(
            target, campaign_id, results, args.verify_sample, seed,
            inventory=args.inventory, shards=args.shards, users=args.users,
            processes=processes, concurrency=args.concurrency, front_cpu=front_cpu,
            stock_samples=stock_samples,
        )
        report["seed"] = seed
        print(format_report(report), file=out, flush=True)
        if args.json:
            Path(args.json).write_text(report_json(report) + "\n")
        if args.html:
            Path(args.html).write_text(render_html(report))
        return EXIT_OK if report["ok"] else EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (DemoError, NodeStartError, BurstError, ServerCheckError, NodeCpuError, OSError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    finally:
        if node is not None:
            code = node.stop()
            if code not in (0, -signal.SIGTERM):
                print(
                    f"demo: front node exited with code {code}:\n{node.log_tail(4000)}",
                    file=sys.stderr,
                    flush=True,
                )
        if redis_server is not None:
            redis_server.cleanup()
