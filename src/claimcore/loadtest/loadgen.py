"""`claimcore loadgen`: replay a launch's first seconds against running front nodes, and check it.

It drives one or more front nodes (round robin per call) from several worker processes:
N distinct users claim one campaign, arriving in a chosen shape (burst, ramp, poisson,
launch), some replaying their request_id or tapping twice, by unary Claim, by ClaimBatch, or
(--client auto) through an app backend's ClaimClient(watch=True) per worker process, which batches
the claims itself and answers those of a sold-out campaign without reaching a node.
With --node-metrics it reads the front nodes' process_cpu_seconds_total before and after the
load and reports what the run cost them (claimcore.loadtest.node_cpu).
The plan can be recorded to a trace file, with the campaign's settings, the arrival settings and
the seed in leading comment lines (claimcore.loadtest.recording), and replayed later with the
same timing and ids: `--replay FILE` alone creates a campaign like the recorded one.
While it runs, a progress line goes to stderr; at the end it prints the report, checks
it against the server's own figures (AdminService.GetCampaign), and writes JSON and an
HTML picture if asked. With --baseline REPORT.json it also prints the run side by side with
an earlier one (claimcore.loadtest.baseline), flagging regressions beyond --baseline-margin;
--fail-on-regression makes a regression a failed check.

Exit codes: 0 all checks passed, 1 a check failed, 2 it could not run (bad flags, a target
that does not answer, a --node-metrics address that does not answer, an unknown or used
campaign, a bad trace, a --baseline file that is missing or not a report), 130 interrupted.

This module only orchestrates: the plan is claimcore.loadtest.arrivals (or claimcore.loadtest.recording), the
sending claimcore.loadtest.burst, the checks and the report claimcore.loadtest.report, the picture
claimcore.loadtest.charts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from claimcore import validation
from claimcore.loadtest.arrivals import SHAPES, ArrivalShape, Plan, plan_claims
from claimcore.loadtest.baseline import (
    DEFAULT_MARGIN_PCT,
    BaselineError,
    add_regression_check,
    compare,
    format_comparison,
    load_baseline,
)
from claimcore.loadtest.burst import BurstError, run_load
from claimcore.loadtest.charts import render_html
from claimcore.loadtest.driver import MAX_ATTEMPTS, MODES, Progress
from claimcore.loadtest.node_cpu import CpuMeter, NodeCpuError, parse_metrics_urls
from claimcore.loadtest.recording import (
    Recording,
    TraceError,
    campaign_from_spec,
    campaign_spec,
    read_recording,
    write_trace,
)
from claimcore.loadtest.report_text import format_report, report_json
from claimcore.loadtest.reshard_schedule import ReshardSchedule, parse_schedule
from claimcore.loadtest.server_check import ServerCheckError, check_against_server
from claimcore.loadtest.stock_sampler import StockSampler
from claimcore.security import access
from claimcore.v1 import claims_pb2, claims_pb2_grpc

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
CHANNEL_ID = "loadgen"
#: Default --duration per arrival shape (poisson: the rate is users / duration unless --rate).
DEFAULT_DURATION_S = {"burst": 1.0, "ramp": 10.0, "poisson": 10.0, "launch": 10.0}
DEFAULTS = {
    "users": 100_000,
    "arrival": "launch",
    "tail_share": 0.3,
    "launch_window": 1.0,
    "retry_share": 0.1,
    "double_tap_share": 0.05,
    "follow_up_within": 0.5,
    "batch_size": 100,
}
#: Flags that shape a generated plan; a replayed trace already fixes all of them.
PLAN_FLAGS = ("users", "arrival", "duration", "rate", "tail_share", "launch_window", "retry_share",
              "double_tap_share", "follow_up_within")  # fmt: skip
#: A node that has just seen a campaign id as unknown keeps saying so this long (docs/architecture.md).
NOT_FOUND_MEMORY_S = 0.6
MAX_CONNECTIONS = 64  # per process and target


class LoadgenError(RuntimeError):
    """loadgen could not run (as opposed to: it ran and a check failed)."""


# ---------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    t = parser.add_argument_group("target")
    t.add_argument("--target", required=True, metavar="HOST:PORT[,HOST:PORT...]",
                   help="front nodes to drive, used round robin per call")
    t.add_argument("--campaign", metavar="ID",
                   help="the campaign to claim (must exist unless --create-campaign)")
    t.add_argument("--create-campaign", action="store_true",
                   help="create the campaign through the first target (id generated if --campaign is absent)")
    t.add_argument("--inventory", type=int, help="vouchers of the created campaign")
    t.add_argument("--shards", type=int, help="Redis shards of the created campaign (default 8)")
    t.add_argument("--admission-rate", type=int,
                   help="per-node admission rate of the created campaign, claims/s (default 0 = none)")
    t.add_argument("--reshard", metavar="SHARDS@SECONDS[,...]",
                   help="reshard the campaign while the load runs, e.g. 16@1.5,4@4: to 16 shards 1.5 s "
                        "after sending starts, then to 4 (an operator's rehearsal; see docs/resharding.md)")
    t.add_argument("--node-metrics", metavar="URL[,URL...]",
                   help="the front nodes' /metrics (HOST:PORT or URL; `serve --metrics-port`): their "
                        "process_cpu_seconds_total is read before and after the load, and the report "
                        "gives the CPU-seconds the run cost them (without it: not measured)")
    t.add_argument("--connect-timeout", type=float, default=5.0,
                   help="seconds to wait for each target to answer (default 5)")
    w = parser.add_argument_group("workload")
    w.add_argument("--users", type=int, help=f"distinct users (default {DEFAULTS['users']})")
    w.add_argument("--retry-share", type=float,
                   help="share of users resending their request_id later (default 0.1)")
    w.add_argument("--double-tap-share", type=float,
                   help="share of users claiming again with a new request_id (default 0.05)")
    w.add_argument("--follow-up-within", type=float, metavar="SECONDS",
                   help="a resend or second tap is planned within this long of the first claim, and "
                        "sent no earlier than its answer (default 0.5)")
    w.add_argument("--arrival", choices=SHAPES,
                   help="burst: all within --duration (default 1 s); ramp: rising rate over --duration; "
                        "poisson: at --rate per second; launch (default): most within --launch-window, "
                        "then a tail until --duration")
    w.add_argument("--duration", type=float, help="seconds the arrivals span (default by shape: "
                   + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_DURATION_S.items()) + ")")
    w.add_argument("--rate", type=float, help="poisson arrivals per second (default users / duration)")
    w.add_argument("--tail-share", type=float,
                   help="launch: share of users arriving in the tail (default 0.3)")
    w.add_argument("--launch-window", type=float, help="launch: seconds of the launch burst (default 1)")
    w.add_argument("--seed", type=int, help="seed for arrivals, follow-ups and jitter (default random)")
    s = parser.add_argument_group("sending")
    s.add_argument("--mode", "--client", choices=MODES, default="unary", dest="mode",
                   help="unary: a Claim per user; batch: ClaimBatch calls; auto: each process is an app "
                        "backend claiming through one ClaimClient(watch=True), which batches and "
                        "answers claims of a sold-out campaign itself (default unary)")
    s.add_argument("--batch-size", type=int, help="claims per ClaimBatch call, 1..1000 (default 100)")
    s.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: CPU count)")
    s.add_argument("--concurrency", type=int, default=128,
                   help="calls in flight per process; auto mode: claims in flight (default 128)")
    s.add_argument("--connections", type=int, default=1, metavar="N",
                   help="TCP connections per process to each target (auto mode: the client's "
                        "connections_per_node); a node run with serve --workers N needs at least N "
                        "(default 1)")
    s.add_argument("--deadline", type=float, default=5.0, help="per-call deadline in seconds (default 5)")
    s.add_argument("--redeem-share", type=float, default=0.0, metavar="F",
                   help="redeem this share of new grants at once at a loadgen merchant, then reconcile "
                        "the ledger at the end (default 0: claims only)")
    s.add_argument("--max-attempts", type=int, default=MAX_ATTEMPTS,
                   help=f"sends per claim, counting resends (default {MAX_ATTEMPTS})")
    o = parser.add_argument_group("trace and output")
    trace = o.add_mutually_exclusive_group()
    trace.add_argument("--record", metavar="PATH",
                       help="write the planned arrivals to a trace file, after # lines with the campaign's "
                            "settings, the arrival settings and the seed (docs/cli.md)")
    trace.add_argument("--replay", metavar="PATH",
                       help="send the arrivals of a recorded trace, with their timing; without --campaign "
                            "it creates a campaign like the recorded one from the trace's spec lines (and "
                            "takes its seed); --inventory, --shards, --admission-rate, --seed or "
                            "--campaign given on the command line override the trace")
    o.add_argument("--json", metavar="PATH", help="write the report as JSON")
    o.add_argument("--html", metavar="PATH", help="write a self-contained HTML picture of the run")
    o.add_argument("--verify-sample", type=int, default=1000,
                   help="grants re-read with GetClaim(user_id) afterwards (default 1000; 0 = none)")
    o.add_argument("--max-lateness", type=float, metavar="MS",
                   help="fail the run (check \"generator kept up\") when 1 %% of the sends went out more "
                        "than MS after their planned arrival; without it a run later than 1000 ms is only "
                        "warned about (default: warn only)")
    o.add_argument("--baseline", metavar="REPORT.json",
                   help="after the run, print it side by side with an earlier run's --json report "
                        "(throughput, latency and response percentiles, time to sold out, node CPU per "
                        "claim), flagging REGRESSION where this run is worse by more than "
                        "--baseline-margin; the --json report gets a `baseline` section")
    o.add_argument("--baseline-margin", type=float, metavar="PCT",
                   help=f"per cent a metric may be worse than the baseline before it is flagged "
                        f"(default {DEFAULT_MARGIN_PCT:g})")
    o.add_argument("--fail-on-regression", action="store_true",
                   help="with --baseline: a regression fails the run (check \"no regression vs "
                        "baseline\", exit 1); without it regressions are only flagged")
    o.add_argument("--no-progress", action="store_true", help="no live progress line on stderr")


def parse_targets(text: str) -> list[str]:
    """'host:port,host:port' -> ['host:port', ...]; raises LoadgenError naming a bad entry."""
    targets = [t.strip() for t in text.split(",") if t.strip()]
    if not targets:
        raise LoadgenError("--target needs at least one HOST:PORT")
    for target in targets:
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise LoadgenError(f"--target {target!r} is not HOST:PORT")
    return targets


def shape_of(args: argparse.Namespace) -> ArrivalShape:
    kind = args.arrival or DEFAULTS["arrival"]
    duration = args.duration if args.duration is not None else DEFAULT_DURATION_S[kind]
    users = args.users if args.users is not None else DEFAULTS["users"]
    rate = args.rate if args.rate is not None else (users / duration if duration > 0 else 0.0)
    return ArrivalShape(
        kind=kind,
        duration_s=duration,
        rate=rate,
        tail_share=args.tail_share if args.tail_share is not None else DEFAULTS["tail_share"],
        launch_s=args.launch_window if args.launch_window is not None else DEFAULTS["launch_window"],
    )


def creates_campaign(args: argparse.Namespace) -> bool:
    """--create-campaign, or --replay without --campaign (the trace's campaign spec is created)."""
    return bool(args.create_campaign or (args.replay and args.campaign is None))


def check_arguments(args: argparse.Namespace) -> list[str]:
    """What is wrong with the flags, as messages naming them (empty when fine)."""
    problems = []
    if args.campaign is None and not args.create_campaign and not args.replay:
        problems.append("--campaign ID is required (or --create-campaign, or --replay a trace that carries "
                        "its campaign)")
    if args.campaign is not None and not validation.CAMPAIGN_ID.fullmatch(args.campaign):
        problems.append(f"--campaign {args.campaign!r} must match {validation.CAMPAIGN_ID.pattern}")
    if creates_campaign(args):
        if args.inventory is None:
            if not args.replay:  # a replayed trace may carry it: checked once read (check_replay)
                problems.append("--create-campaign needs --inventory N")
        elif not 1 <= args.inventory <= validation.MAX_INVENTORY:
            problems.append(f"--inventory must be within 1..{validation.MAX_INVENTORY}")
        if args.shards is not None and not 1 <= args.shards <= validation.MAX_SHARDS:
            problems.append(f"--shards must be within 1..{validation.MAX_SHARDS}")
        elif (args.inventory is not None and not args.replay  # replay: against the spec, in check_replay
              and (args.shards if args.shards is not None else 8) > args.inventory):
            problems.append("--shards must not exceed --inventory")
        if args.admission_rate is not None and not 0 <= args.admission_rate <= validation.MAX_RATE:
            problems.append(f"--admission-rate must be within 0..{validation.MAX_RATE}")
    else:
        for flag in ("inventory", "shards", "admission_rate"):
            if getattr(args, flag) is not None:
                problems.append(f"--{flag.replace('_', '-')} only applies with --create-campaign")
    if args.replay:
        given = [f"--{f.replace('_', '-')}" for f in PLAN_FLAGS if getattr(args, f) is not None]
        if given:
            problems.append(f"--replay takes users and timing from the trace; drop {', '.join(given)}")
    else:
        if args.users is not None and args.users < 1:
            problems.append("--users must be >= 1")
        for name in ("retry_share", "double_tap_share"):
            value = getattr(args, name)
            if value is not None and not 0.0 <= value <= 1.0:
                problems.append(f"--{name.replace('_', '-')} must be within 0..1")
        if args.follow_up_within is not None and args.follow_up_within < 0:
            problems.append("--follow-up-within must be >= 0")
        problems += shape_of(args).problems()
    if args.processes < 1:
        problems.append("--processes must be >= 1")
    if args.concurrency < 1:
        problems.append("--concurrency must be >= 1")
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        problems.append(f"--connections must be within 1..{MAX_CONNECTIONS}")
    if args.batch_size is not None:
        if args.mode != "batch":
            problems.append("--batch-size needs --mode batch")
        elif not 1 <= args.batch_size <= validation.MAX_BATCH:
            problems.append(f"--batch-size must be within 1..{validation.MAX_BATCH}")
    if args.deadline <= 0:
        problems.append("--deadline must be > 0")
    if args.max_attempts < 1:
        problems.append("--max-attempts must be >= 1")
    if args.verify_sample < 0:
        problems.append("--verify-sample must be >= 0")
    if args.max_lateness is not None and not args.max_lateness > 0:
        problems.append("--max-lateness must be > 0 (milliseconds)")
    if args.connect_timeout <= 0:
        problems.append("--connect-timeout must be > 0")
    if args.baseline is None:
        for flag, given in (("--baseline-margin", args.baseline_margin is not None),
                            ("--fail-on-regression", args.fail_on_regression)):
            if given:
                problems.append(f"{flag} needs --baseline REPORT.json")
    elif args.baseline_margin is not None and not args.baseline_margin >= 0:
        problems.append("--baseline-margin must be >= 0 (per cent)")
    if not 0.0 <= args.redeem_share <= 1.0:
        problems.append("--redeem-share must be within 0..1")
    for parse in (lambda: parse_schedule(args.reshard),
                  lambda: args.node_metrics is None or parse_metrics_urls(args.node_metrics)):
        try:
            parse()
        except ValueError as exc:
            problems.append(str(exc))
    return problems


# ---------------------------------------------------------------- the campaign


def _rpc_error(what: str, exc: grpc.RpcError) -> LoadgenError:
    return LoadgenError(f"{what}: {exc.code().name} {exc.details()}")  # type: ignore[attr-defined]


def connect(targets: Sequence[str], timeout: float) -> None:
    """Fail clearly, before any worker starts, if a target does not answer."""
    for target in targets:
        with access.dial(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=timeout)
            except grpc.FutureTimeoutError:
                raise LoadgenError(f"cannot reach front node {target} within {timeout:g} s") from None


def campaign_to_create(
    args: argparse.Namespace, campaign_id: str, recorded: Mapping[str, Any] | None, sending_at_ms: int
) -> claims_pb2.Campaign:
    """The campaign --create-campaign makes: the replayed trace's campaign spec if it has one,
    with --inventory, --shards and --admission-rate given on the command line taking precedence."""
    name = f"claimcore loadgen {campaign_id}"
    if recorded is not None:
        campaign = campaign_from_spec(recorded, campaign_id, name, sending_at_ms)
    else:
        campaign = claims_pb2.Campaign(campaign_id=campaign_id, name=name, shards=8, per_user_limit=1)
    if args.inventory is not None:
        campaign.inventory = args.inventory
    if args.shards is not None:
        campaign.shards = args.shards
    if args.admission_rate is not None:
        campaign.admission_rate = args.admission_rate
    return campaign


def check_replay(args: argparse.Namespace, recording: Recording) -> list[str]:
    """What stops the replayed trace's campaign from being created (empty when fine)."""
    if not creates_campaign(args):
        return []
    recorded = recording.campaign or {}
    if args.inventory is None and "inventory" not in recorded:
        return [f"--replay {args.replay}: the trace carries no campaign spec (recorded by an older "
                "claimcore); give --campaign ID, or --create-campaign --inventory N [--shards N]"]
    inventory = args.inventory if args.inventory is not None else recorded["inventory"]
    shards = args.shards if args.shards is not None else recorded.get("shards", 8)
    if isinstance(inventory, int) and isinstance(shards, int) and shards > inventory:
        return [f"--shards {shards} (from {'the command line' if args.shards is not None else 'the trace'}) "
                f"must not exceed --inventory {inventory} (from "
                f"{'the command line' if args.inventory is not None else 'the trace'})"]
    return []


def create_campaign(channel: grpc.Channel, campaign: claims_pb2.Campaign) -> None:
    admin = claims_pb2_grpc.AdminServiceStub(channel)
    try:
        admin.CreateCampaign(claims_pb2.CreateCampaignRequest(campaign=campaign), timeout=30)
    except grpc.RpcError as exc:
        raise _rpc_error(f"CreateCampaign({campaign.campaign_id}) failed", exc) from exc


def campaign_on_every_target(
    targets: Sequence[str], campaign_id: str, patient: bool
) -> claims_pb2.CampaignInfo:
    """The campaign as each target sees it (the first target's answer is returned).

    patient: the campaign was just created, so a node may still remember the id as unknown
    for a moment; ask again rather than fail.
    """
    first = None
    for target in targets:
        with access.dial(target) as channel:
            admin = claims_pb2_grpc.AdminServiceStub(channel)
            give_up = time.monotonic() + (NOT_FOUND_MEMORY_S if patient else 0)
            while True:
                try:
                    request = claims_pb2.GetCampaignRequest(campaign_id=campaign_id)
                    info = admin.GetCampaign(request, timeout=10).campaign
                    break
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < give_up:  # type: ignore[attr-defined]
                        time.sleep(0.1)
                        continue
                    raise _rpc_error(f"GetCampaign({campaign_id}) on {target} failed", exc) from exc
        first = first or info
    assert first is not None
    return first


LOADGEN_MERCHANT = "loadgen-merchant"


def register_merchant(target: str, campaign: claims_pb2.Campaign) -> tuple[str, int]:
    """A merchant that may redeem the campaign's vouchers, and an order amount that qualifies."""
    with access.dial(target) as channel:
        try:
            merchant = claims_pb2.Merchant(
                campaign_id=campaign.campaign_id, merchant_id=LOADGEN_MERCHANT, name="claimcore loadgen",
                category=campaign.category, region=campaign.regions[0] if campaign.regions else "")
            claims_pb2_grpc.AdminServiceStub(channel).RegisterMerchant(
                claims_pb2.RegisterMerchantRequest(merchant=merchant), timeout=10)
        except grpc.RpcError as exc:
            raise _rpc_error("RegisterMerchant", exc) from exc
    return LOADGEN_MERCHANT, max(1, campaign.min_spend_cents)


def add_reconcile(report: dict[str, Any], target: str, campaign_id: str) -> None:
    """Reconcile the campaign's ledger with its live figures; a difference fails the run."""
    with access.dial(target) as channel:
        try:
            reply = claims_pb2_grpc.AdminServiceStub(channel).Reconcile(
                claims_pb2.ReconcileRequest(campaign_id=campaign_id), timeout=300)
        except grpc.RpcError as exc:
            raise _rpc_error("Reconcile", exc) from exc
    report["reconcile"] = {"ok": reply.ok, "events": reply.events, "figures": [
        {"name": f.name, "from_ledger": f.from_ledger, "live": f.live, "ok": f.ok} for f in reply.figures]}
    report["checks"].append({"name": "reconcile", "ok": reply.ok,
                             "detail": "ledger and live figures agree" if reply.ok else "differences"})
    if not reply.ok:
        report["failed"].append("reconcile")
        report["ok"] = False


def check_campaign(info: claims_pb2.CampaignInfo) -> None:
    c = info.campaign
    if c.per_user_limit not in (0, 1):
        raise LoadgenError(
            f"campaign {c.campaign_id} allows {c.per_user_limit} vouchers per user; the checks assume 1"
        )
    if info.granted:
        raise LoadgenError(
            f"campaign {c.campaign_id} already granted {info.granted:,} vouchers; the checks need a fresh "
            "campaign (use --create-campaign, or a new --campaign id)"
        )
    if info.paused:
        raise LoadgenError(f"campaign {c.campaign_id} is paused")


# ---------------------------------------------------------------- progress


class ProgressLine:
    """One status line on stderr, rewritten in place on a terminal (every 5 s otherwise).

    Stock left is the StockSampler's latest reading of the node's figure (GetCampaign every 250 ms).
    """

    def __init__(self, stock: StockSampler, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.sampler = stock
        self.printed_at = 0.0
        self.last: tuple[float, int] = (0.0, 0)
        self.drawn = False

    def _stock(self) -> str:
        latest = self.sampler.latest()
        return "?" if latest is None else f"{latest:,}"

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        then, replies_then = self.last
        if p.finished >= p.planned and p.replies == replies_then:
            return  # the last line already showed the end
        if not self.tty and now - self.printed_at < 5.0 and p.finished < p.planned:
            return
        rate = (p.replies - replies_then) / (now - then) if then and now > then else 0.0
        self.last = (now, p.replies)
        self.printed_at = now
        line = (
            f"loadgen {p.elapsed_s:6.1f} s  done {p.finished:,}/{p.planned:,}  {rate:,.0f} claims/s  "
            f"granted {p.granted:,} · already {p.already_claimed:,} · sold out {p.sold_out:,} · "
            f"other {p.other:,}  resent {p.retried:,} · failed {p.failed:,}  stock left {self._stock()}"
        )
        if self.tty:
            self.out.write("\r" + line + "\x1b[K")
            self.drawn = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()


# ---------------------------------------------------------------- the command


def arrival_settings(args: argparse.Namespace) -> dict[str, Any]:
    """How a generated plan is made, as a trace's arrival.* lines record it."""
    shape = shape_of(args)
    return {
        "shape": shape.kind,
        "users": args.users if args.users is not None else DEFAULTS["users"],
        "duration_s": shape.duration_s,
        "rate": shape.rate,
        "tail_share": shape.tail_share,
        "launch_window_s": shape.launch_s,
        "retry_share": args.retry_share if args.retry_share is not None else DEFAULTS["retry_share"],
        "double_tap_share": (
            args.double_tap_share if args.double_tap_share is not None else DEFAULTS["double_tap_share"]
        ),
        "follow_up_within_s": (
            args.follow_up_within if args.follow_up_within is not None else DEFAULTS["follow_up_within"]
        ),
    }


def build_plan(
    args: argparse.Namespace, seed: int, recording: Recording | None = None
) -> tuple[Plan, dict[str, Any]]:
    """The plan to send, and how it was made (for the report)."""
    if recording is not None:
        plan = recording.plan
        return plan, {"shape": "trace", "claims": len(plan)}
    shape = shape_of(args)
    plan = plan_claims(
        users=args.users if args.users is not None else DEFAULTS["users"],
        shape=shape,
        seed=seed,
        retry_share=args.retry_share if args.retry_share is not None else DEFAULTS["retry_share"],
        double_tap_share=(
            args.double_tap_share if args.double_tap_share is not None else DEFAULTS["double_tap_share"]
        ),
        follow_up_within_s=(
            args.follow_up_within if args.follow_up_within is not None else DEFAULTS["follow_up_within"]
        ),
        run_tag=secrets.token_hex(4),
    )
    return plan, shape.describe()


def run(args: argparse.Namespace) -> int:
    """Run loadgen; returns the process exit code (0 = all checks passed)."""
    out, err = sys.stdout, sys.stderr
    progress: ProgressLine | None = None
    try:
        problems = check_arguments(args)
        if problems:
            raise LoadgenError("; ".join(problems))
        baseline = load_baseline(args.baseline) if args.baseline else None  # a bad one: nothing run
        recording = read_recording(args.replay) if args.replay else None  # a bad trace: nothing created
        if recording is not None:
            problems = check_replay(args, recording)
            if problems:
                raise LoadgenError("; ".join(problems))
        targets = parse_targets(args.target)
        recorded_seed = recording.spec.get("seed") if recording is not None else None
        if args.seed is not None:
            seed = args.seed
        elif isinstance(recorded_seed, int):
            seed = recorded_seed
        else:
            seed = secrets.randbits(31)
        connect(targets, args.connect_timeout)
        metrics_urls = parse_metrics_urls(args.node_metrics) if args.node_metrics else []
        CpuMeter(metrics_urls).start()  # a /metrics that does not answer fails before anything is written
        campaign_id = args.campaign or f"loadgen-{int(time.time())}-{secrets.token_hex(3)}"
        creating = creates_campaign(args)
        if creating:
            recorded = recording.campaign if recording is not None else None
            campaign = campaign_to_create(args, campaign_id, recorded, int(time.time() * 1000))
            with access.dial(targets[0]) as channel:
                create_campaign(channel, campaign)
        info = campaign_on_every_target(targets, campaign_id, patient=creating)
        check_campaign(info)
        inventory, shards = info.campaign.inventory, info.campaign.shards

        plan, arrival = build_plan(args, seed, recording)
        users = plan.distinct_users()
        if args.record:
            write_trace(plan, args.record, spec={
                "campaign": campaign_spec(info.campaign, int(time.time() * 1000)),
                "arrival": arrival_settings(args),
                "seed": seed,
            })
        processes = min(args.processes, users)
        batch_size = (args.batch_size or DEFAULTS["batch_size"]) if args.mode == "batch" else 1
        counts = plan.counts()
        print(
            f"loadgen: campaign {campaign_id} (inventory {inventory:,}, {shards} shards) on "
            f"{', '.join(targets)}; {users:,} users, {counts['replay']:,} replays, "
            f"{counts['double_tap']:,} second taps over {plan.span_s():.3f} s; {args.mode} mode; "
            f"{processes} processes x {args.concurrency} in flight (seed {seed})",
            file=out,
            flush=True,
        )
        stock = StockSampler(targets[0], campaign_id)
        if not args.no_progress:
            progress = ProgressLine(stock, err)
        merchant, order_amount = "", 0
        if args.redeem_share:
            merchant, order_amount = register_merchant(targets[0], info.campaign)
        meter = CpuMeter(metrics_urls).start() if metrics_urls else None
        reshards = ReshardSchedule(targets[0], campaign_id, parse_schedule(args.reshard))

        def started(at_unix: float) -> None:  # the schedule and the readings count from here
            reshards.start(at_unix)
            stock.start(at_unix)

        try:
            results = run_load(
                targets=targets,
                campaign_id=campaign_id,
                plan=plan,
                processes=processes,
                concurrency=args.concurrency,
                mode=args.mode,
                batch_size=batch_size,
                deadline=args.deadline,
                max_attempts=args.max_attempts,
                seed=seed,
                channel_id=CHANNEL_ID,
                on_progress=progress,
                on_start=started,
                redeem_share=args.redeem_share,
                merchant_id=merchant,
                order_amount_cents=order_amount,
                connections=args.connections,
            )
        finally:
            stock_samples = stock.stop()
        front_cpu = meter.stop() if meter is not None else None
        if progress is not None:
            progress.close()
            progress = None
        resharded = reshards.join()
        report = check_against_server(
            targets[0], campaign_id, results, args.verify_sample, seed,
            inventory=inventory,
            shards=shards,
            users=users,
            processes=processes,
            concurrency=args.concurrency,
            title="claimcore loadgen",
            front_cpu=front_cpu,
            max_lateness_ms=args.max_lateness,
            stock_samples=stock_samples,
            run={
                "targets": targets,
                "mode": args.mode,
                "batch_size": batch_size,
                "deadline_s": args.deadline,
                "connections": args.connections,
                "max_attempts": args.max_attempts,
                "arrival": arrival,
                "planned_claims": len(plan),
                "planned_span_s": plan.span_s(),
                "seed": seed,
                "recorded_to": args.record,
                "replayed_from": args.replay,
                "recorded_arrival": recording.spec.get("arrival") if recording is not None else None,
                "reshards": resharded,
            },
        )
        if args.redeem_share:
            add_reconcile(report, targets[0], campaign_id)
        comparison = None
        if baseline is not None:
            margin = args.baseline_margin if args.baseline_margin is not None else DEFAULT_MARGIN_PCT
            comparison = compare(baseline, report, margin, source=args.baseline)
            report["baseline"] = comparison
            if args.fail_on_regression:
                add_regression_check(report, comparison)
        print(format_report(report), file=out, flush=True)
        if comparison is not None:
            print(format_comparison(comparison), file=out, flush=True)
        if args.json:
            Path(args.json).write_text(report_json(report) + "\n")
        if args.html:
            Path(args.html).write_text(render_html(report))
        ok = report["ok"] and not any("error" in step for step in resharded)
        return EXIT_OK if ok else EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print("\nloadgen: interrupted", file=err, flush=True)
        return EXIT_INTERRUPTED
    except (LoadgenError, ServerCheckError, TraceError, BurstError, NodeCpuError, BaselineError,
            OSError) as exc:
        print(f"loadgen: error: {exc}", file=err, flush=True)
        return EXIT_ERROR
    finally:
        if progress is not None:
            progress.close()
