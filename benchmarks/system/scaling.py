"""The scaling benchmark of issue 5: the same burst on a Redis Cluster of one master and of three.

    python -m benchmarks.system.scaling [--rounds 3] [--json artifacts/scaling.json]

Both clusters (EmbeddedCluster) run side by side for the whole run, each with
one front node (`claimcore serve --redis-cluster ...`) and the same campaign
(same id, so the same shards; inventory twice the claims of the whole run, so
every claim is granted). Next to them, as the reference, a plain redis-server
(no cluster) with its own node (`claimcore serve --redis URL`): the pipelined
path `make bench` measures. Each round drives the same burst through each
set-up in turn with benchmarks/system/driver.py (ClaimBatch of 100, then
unary Claim), alternating the order from round to round, so a neighbour's
burst on this shared machine hits every size alike.

Around each measured phase it reads, per master: INFO cpu (main thread and
whole process), total commands, EVALSHA calls, keys, used_memory, and the
`granted` field of the campaign's shards on that master (so grants per master
are exact); and the front node's CPU from /proc. The tables show per phase
claims/s, node and Redis CPU per claim and how evenly the masters shared the
work (max/mean: 1.0 is perfectly even), and per master the totals over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import redis
from benchmarks.system import scaling_maths as sm
from benchmarks.system.common import CATEGORY, MIN_SPEND_CENTS, VALUE_CENTS
from benchmarks.system.driver import Load, run_load
from benchmarks.system.servers import process_cpu_seconds
from redis.crc import key_slot

from claimcore.harness.embedded_redis import EmbeddedCluster, EmbeddedRedis
from claimcore.harness.local_node import LocalNode
from claimcore.store.keyspace import shard_keys
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

MODES = ("batch", "unary")
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    masters: tuple[int, ...] = (0, 1, 3)  # 0: a plain redis-server, no cluster
    rounds: int = 5
    shards: int = 16
    # The shards' slots decide which master holds which shard. "burst" places 16 shards 5/6/5 on
    # three masters, as evenly as 16 over 3 can be; other ids place them from 5/6/5 to 8/4/4.
    campaign_id: str = "burst"
    modes: tuple[str, ...] = MODES
    batch_calls: int = 400        # ClaimBatch calls per phase, of batch_size claims each
    batch_warmup: int = 40
    batch_size: int = 100
    unary_calls: int = 6_000      # unary Claim calls per phase
    unary_warmup: int = 500
    processes: int = 2            # driver processes
    concurrency: int = 256        # unary calls in flight per driver process
    batch_concurrency: int = 4    # ClaimBatch calls in flight per driver process
    idle_s: float = 2.0           # the clusters' own CPU while idle is read over this long

    def load(self, target: str, mode: str, prefix: str) -> Load:
        if mode == "batch":
            return Load(target, self.campaign_id, self.batch_calls, self.batch_warmup, self.batch_size,
                        self.processes, self.batch_concurrency, user_prefix=prefix)
        return Load(target, self.campaign_id, self.unary_calls, self.unary_warmup, 0,
                    self.processes, self.concurrency, user_prefix=prefix)

    def inventory(self) -> int:
        """Twice every claim of the run: no shard runs dry, so no claim waits for a borrow."""
        per_round = 0
        if "batch" in self.modes:
            per_round += (self.batch_calls + self.batch_warmup) * self.batch_size
        if "unary" in self.modes:
            per_round += self.unary_calls + self.unary_warmup
        return max(self.shards, 2 * per_round * self.rounds)


def label(masters: int) -> str:
    return "plain" if masters == 0 else str(masters)


class ClusterProbe:
    """Reads the front node's CPU and every master's figures (sm.MasterReading) of one cluster
    (or of one plain redis-server, which owns every slot)."""

    def __init__(self, ports: list[int], cluster: bool, node_pids: list[int], campaign_id: str,
                 shards: int) -> None:
        self.node_pids = node_pids
        self.ports = ports
        self.clients = {port: redis.Redis(port=port, decode_responses=True) for port in self.ports}
        ranges = (sm.slot_owners(self.clients[self.ports[0]].execute_command("CLUSTER", "SLOTS")) if cluster
                  else [(0, 16383, ports[0])])
        slots = [key_slot(shard_keys(campaign_id, s).state.encode()) for s in range(shards)]
        self.shards = sm.shards_per_master(slots, ranges, self.ports)
        self.state_keys = {port: [shard_keys(campaign_id, s).state for s in owned]
                           for port, owned in self.shards.items()}

    def own_commands(self, port: int) -> int:
        """Commands one reading sends to a master: one INFO, one HGET per shard it holds."""
        return 1 + len(self.state_keys[port])

    def _granted(self, port: int) -> int:
        keys = self.state_keys[port]
        if not keys:
            return 0
        pipe = self.clients[port].pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "granted")
        return sum(int(v or 0) for v in pipe.execute())

    def __call__(self) -> tuple[float, list[sm.MasterReading]]:
        node_cpu = sum(process_cpu_seconds(pid) for pid in self.node_pids)
        readings = []
        for port, client in self.clients.items():
            granted = self._granted(port)
            info = client.info("cpu", "stats", "commandstats", "memory", "keyspace")
            readings.append(sm.master_reading(port, info, granted))
        return node_cpu, readings

    def deltas(self, before: list[sm.MasterReading], after: list[sm.MasterReading]) -> list[sm.MasterDelta]:
        return [sm.master_delta(b, a, len(self.shards[a.port]), self.own_commands(a.port))
                for b, a in zip(before, after, strict=True)]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@dataclass
class Setup:
    masters: int                    # 0: a plain redis-server
    node: LocalNode
    probe: ClusterProbe
    idle_cpu_ms_per_s: list[float]  # per master, main thread, with no load


def create_campaign(address: str, settings: Settings) -> None:
    campaign = pb.Campaign(campaign_id=settings.campaign_id, inventory=settings.inventory(),
                           shards=settings.shards, value_cents=VALUE_CENTS, min_spend_cents=MIN_SPEND_CENTS,
                           category=CATEGORY)
    with grpc.insecure_channel(address) as channel:
        pb_grpc.AdminServiceStub(channel).CreateCampaign(pb.CreateCampaignRequest(campaign=campaign),
                                                         timeout=10)


@contextlib.contextmanager
def cluster_setup(masters: int, settings: Settings) -> Iterator[Setup]:
    """A cluster of `masters` (0: a plain redis-server), its front node, and the campaign."""
    with contextlib.ExitStack() as stack:
        if masters:
            cluster = stack.enter_context(EmbeddedCluster(masters=masters))
            ports = [n.port for n in cluster.nodes]
            node = LocalNode("", "--redis-cluster", cluster.addresses)
        else:
            plain = stack.enter_context(EmbeddedRedis())
            ports = [plain.port]
            node = LocalNode(plain.url)
        node.start()
        try:
            assert node.proc is not None
            create_campaign(node.address, settings)
            probe = ClusterProbe(ports, masters > 0, [node.proc.pid], settings.campaign_id, settings.shards)
            try:
                yield Setup(masters, node, probe, [])
            finally:
                probe.close()
        finally:
            node.stop()


def measure_idle(setups: list[Setup], seconds: float) -> None:
    """Each master's main-thread CPU per second with no load (cron, cluster bus, the node's pings)."""
    before = [s.probe()[1] for s in setups]
    time.sleep(seconds)
    after = [s.probe()[1] for s in setups]
    for setup, b, a in zip(setups, before, after, strict=True):
        setup.idle_cpu_ms_per_s = [(y.cpu_main_s - x.cpu_main_s) * 1e3 / seconds
                                   for x, y in zip(b, a, strict=True)]


def run_phase(setup: Setup, settings: Settings, mode: str, round_no: int) -> sm.Phase:
    load = settings.load(setup.node.address, mode, prefix=f"m{setup.masters}r{round_no}{mode[0]}-")
    print(f"  {label(setup.masters)} master(s), {mode}: {load.calls:,} calls of {load.claims_per_call} "
          f"claim(s) ...", end="", flush=True)
    (cpu0, masters0), (cpu1, masters1), phase = run_load(load, setup.probe)
    result = sm.Phase(
        masters=setup.masters, mode=mode, round=round_no, claims=phase.claims, calls=phase.calls,
        seconds=phase.seconds, node_cpu_s=cpu1 - cpu0, driver_cpu_s=phase.driver_cpu_s,
        per_master=setup.probe.deltas(masters0, masters1), outcomes=phase.outcomes, errors=phase.errors,
    )
    print(f" {result.claims_per_s:,.0f} claims/s, node {result.node_cpu_us:.0f} µs/claim, "
          f"Redis {result.redis_cpu_us:.1f} µs/claim", flush=True)
    return result


# ------------------------------------------------------------------ tables


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def summary_table(phases: dict[tuple[int, str], list[sm.Phase]]) -> str:
    head = (f"{'mode':<6} {'masters':>7} {'claims/s':>9} {'node CPU':>9} {'Redis CPU':>10} {'busiest':>8} "
            f"{'EVALSHA':>8} {'claims':>7} {'spread: CPU':>12} {'calls':>6} {'grants':>7} {'shards':>7} "
            f"{'grants':>7}\n"
            f"{'':<6} {'':>7} {'':>9} {'µs/claim':>9} {'µs/claim':>10} {'master':>8} {'/claim':>8} "
            f"{'/call':>7} {'max/mean':>12} {'':>6} {'':>7} {'':>7} {'/shard':>7}")
    lines = [head, "-" * 112]
    notes = []
    for (masters, mode), rows in phases.items():
        m = sm.median_figures(rows)
        mark = " " if all(p.clean for p in rows) else "*"
        per_call = m["evalsha_per_claim"]
        lines.append(
            f"{mode:<6} {label(masters):>7}{mark}{_num(m['claims_per_s'], ',.0f'):>9} "
            f"{_num(m['node_cpu_us'], '.1f'):>9} "
            f"{_num(m['redis_cpu_us'], '.2f'):>10} {_num(m['busiest_master_cpu_us'], '.2f'):>8} "
            f"{_num(per_call, '.4f'):>8} {_num(1 / per_call if per_call else None, '.1f'):>7} "
            f"{_num(m['cpu_spread'], '.2f'):>12} {_num(m['calls_spread'], '.2f'):>6} "
            f"{_num(m['grants_spread'], '.2f'):>7} {_num(m['shards_spread'], '.2f'):>7} "
            f"{_num(m['per_shard_spread'], '.2f'):>7}")
        if mark == "*":
            outcomes: dict[str, int] = {}
            for p in rows:
                for k, v in p.outcomes.items():
                    outcomes[k] = outcomes.get(k, 0) + v
            notes.append(f"* {mode} on {label(masters)} master(s): not every claim GRANTED: {outcomes}, "
                         f"failed calls {[p.errors for p in rows if p.errors]}")
    return "\n".join(lines + notes)


def master_table(phases: dict[tuple[int, str], list[sm.Phase]], idle: dict[int, list[float]]) -> str:
    head = (f"{'mode':<6} {'masters':>7} {'master':>6} {'shards':>6} {'EVALSHA':>8} {'commands':>9} "
            f"{'grants':>8} {'claims':>7} {'CPU main':>9} {'CPU proc':>9} {'CPU µs':>7} {'keys':>5} "
            f"{'sys':>4} {'memory':>7} {'idle CPU':>9}\n"
            f"{'':<6} {'':>7} {'':>6} {'':>6} {'calls':>8} {'':>9} {'':>8} {'/call':>7} {'ms':>9} {'ms':>9} "
            f"{'/grant':>7} {'':>5} {'%':>4} {'B/grant':>7} {'ms/s':>9}")
    lines = [head, "-" * 118]
    for (masters, mode), rows in phases.items():
        for i, t in enumerate(sm.total_per_master(rows)):
            idle_ms = idle.get(masters, [])
            lines.append(
                f"{mode:<6} {label(masters):>7} {i + 1:>6} {t.shards:>6} {t.evalsha:>8,} {t.commands:>9,} "
                f"{t.grants:>8,} {_num(t.claims_per_call, '.1f'):>7} {t.cpu_main_s * 1e3:>9.0f} "
                f"{t.cpu_s * 1e3:>9.0f} {_num(t.cpu_us_per_grant, '.2f'):>7} {t.keys:>5} "
                f"{_num(None if t.sys_share is None else t.sys_share * 100, '.0f'):>4} "
                f"{_num(t.memory_bytes / t.grants if t.grants else None, '.0f'):>7} "
                f"{_num(idle_ms[i] if i < len(idle_ms) else None, '.1f'):>9}")
    return "\n".join(lines)


def ratio_lines(phases: dict[tuple[int, str], list[sm.Phase]], masters: tuple[int, ...]) -> list[str]:
    """Paired per-round ratios: the largest cluster against the smallest, and one master against plain."""
    clusters = [m for m in masters if m > 0]
    pairs = []
    if len(clusters) >= 2:
        pairs.append((max(clusters), min(clusters)))
    if 0 in masters and clusters:
        pairs.append((min(clusters), 0))
    lines = []
    for big, small in pairs:
        for mode in MODES:
            a, b = phases.get((big, mode)), phases.get((small, mode))
            if not a or not b:
                continue
            parts = [f"{name} {_num(sm.paired_ratio(a, b, fig), '.2f')}x" for name, fig in (
                ("claims/s", "claims_per_s"), ("node CPU/claim", "node_cpu_us"),
                ("Redis CPU/claim (all masters)", "redis_cpu_us"),
                ("busiest master CPU/claim", "busiest_master_cpu_us"),
                ("EVALSHA/claim", "evalsha_per_claim"))]
            lines.append(f"{mode}, {label(big)} master(s) / {label(small)}: " + ", ".join(parts))
    return lines


def cost_splits(phases: dict[tuple[int, str], list[sm.Phase]]) -> dict[str, sm.CostSplit | None]:
    """Redis CPU = a × calls + b × grants, fitted separately for cluster masters and the plain server."""
    out: dict[str, sm.CostSplit | None] = {}
    for kind, wanted in (("cluster", lambda m: m > 0), ("plain", lambda m: m == 0)):
        rows = [(d.cpu_main_s, d.evalsha, d.grants) for (m, _), ps in phases.items() if wanted(m)
                for p in ps for d in p.per_master]
        if rows:
            out[kind] = sm.split_cost(rows)
    return out


def cost_split_lines(splits: dict[str, sm.CostSplit | None]) -> list[str]:
    lines = []
    for kind, fit in splits.items():
        if fit is None:
            lines.append(f"{kind}: not enough different batch sizes to tell call cost from grant cost")
        else:
            lines.append(f"Redis main-thread CPU on {kind} masters, fitted over {fit.rows} (master, phase) "
                         f"rows: {fit.per_call_us:.1f} µs per claim.lua call "
                         f"+ {fit.per_grant_us:.2f} µs per grant")
    return lines


# ------------------------------------------------------------------ main


def cluster_calls_state() -> str:
    """Whether src/claimcore/store/cluster_calls.py pipelines per master in the code this run used."""
    path = ROOT / "src" / "claimcore" / "cluster_calls.py"
    try:
        text = path.read_text()
    except OSError:
        return "unknown"
    doc = text.split('"""')[1].strip().splitlines()[0] if text.count('"""') >= 2 else ""
    pipelined = "pipeline(" in text or "per master" in text.lower()
    if pipelined and os.environ.get("CLAIMCORE_CLUSTER_PIPELINING") == "0":
        return f"one EVALSHA per call: CLAIMCORE_CLUSTER_PIPELINING=0 ({doc})"
    return f"{'grouped per master' if pipelined else 'one EVALSHA per call'} ({doc})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.system.scaling",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("artifacts/scaling.json"))
    parser.add_argument("--rounds", type=int, default=Settings.rounds)
    parser.add_argument("--masters", default="0,1,3",
                        help="cluster sizes, comma-separated; 0 is a plain redis-server (default 0,1,3)")
    parser.add_argument("--modes", default=",".join(MODES), help="batch, unary or both")
    parser.add_argument("--shards", type=int, default=Settings.shards)
    parser.add_argument("--campaign-id", default=Settings.campaign_id,
                        help="the campaign's id: it decides which master holds which shard")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every call count")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    modes = tuple(m for m in MODES if m in {x.strip() for x in args.modes.split(",")})
    masters = tuple(sorted({int(x) for x in args.masters.split(",") if x.strip()}))
    if not modes or not masters or min(masters) < 0:
        raise SystemExit("give at least one mode (batch, unary) and cluster sizes >= 0")
    base = Settings()
    settings = replace(
        base, masters=masters, rounds=max(1, args.rounds), shards=args.shards, campaign_id=args.campaign_id,
        modes=modes, batch_calls=max(10, int(base.batch_calls * args.scale)),
        batch_warmup=max(2, int(base.batch_warmup * args.scale)),
        unary_calls=max(100, int(base.unary_calls * args.scale)),
        unary_warmup=max(10, int(base.unary_warmup * args.scale)),
    )
    code_state = cluster_calls_state()
    started = time.monotonic()
    phases: dict[tuple[int, str], list[sm.Phase]] = {(m, mode): [] for mode in modes for m in masters}
    with contextlib.ExitStack() as stack:
        setups = [stack.enter_context(cluster_setup(m, settings)) for m in masters]
        for s in setups:
            placement = "/".join(str(len(v)) for v in s.probe.shards.values())
            print(f"{label(s.masters)} master(s): campaign {settings.campaign_id!r}, {settings.shards} "
                  f"shards placed {placement}, inventory {settings.inventory():,}; node {s.node.address}",
                  flush=True)
        measure_idle(setups, settings.idle_s)
        for r in range(settings.rounds):
            print(f"scaling benchmark, round {r + 1} of {settings.rounds}", flush=True)
            order = setups if r % 2 == 0 else setups[::-1]
            for mode in modes:
                for setup in order:
                    phases[(setup.masters, mode)].append(run_phase(setup, settings, mode, r + 1))
        idle = {s.masters: s.idle_cpu_ms_per_s for s in setups}
    elapsed = time.monotonic() - started

    splits = cost_splits(phases)
    print()
    print(f"claimcore scaling benchmark ({os.cpu_count()} CPUs shared by every master, the front node and "
          f"the driver; {settings.shards} shards; one front node per cluster; driver {settings.processes} "
          f"processes x {settings.batch_concurrency} ClaimBatch of {settings.batch_size} or "
          f"{settings.concurrency} unary calls in flight; {settings.batch_calls:,} batch / "
          f"{settings.unary_calls:,} unary calls per phase; medians of {settings.rounds} rounds)")
    print(f"cluster script calls in this code: {code_state}")
    print(summary_table(phases))
    print()
    print("per master, totals over all rounds (CPU µs/grant is also CPU ms per 1,000 grants; "
          "memory is used_memory growth)")
    print(master_table(phases, idle))
    print()
    for line in ratio_lines(phases, masters):
        print(line)
    for line in cost_split_lines(splits):
        print(line)
    print(f"\n(took {elapsed:.0f} s; spread = max/mean over masters, 1.00 = perfectly even; 'shards' spread "
          f"is what the placement alone gives; Redis CPU is INFO main-thread CPU, node CPU /proc "
          f"utime+stime)")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, Any]] = []
    for (m, mode), rows in phases.items():
        summary.append({"masters": m, "mode": mode, **sm.median_figures(rows),
                        "per_master_totals": [t.as_dict() for t in sm.total_per_master(rows)]})
    args.json.write_text(json.dumps({
        "settings": asdict(settings),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "cluster_calls": code_state,
        "idle_cpu_ms_per_s": {str(k): v for k, v in idle.items()},
        "summary": summary,
        "ratios": ratio_lines(phases, masters),
        "cost_split": {k: None if v is None else asdict(v) for k, v in splits.items()},
        "phases": [p.as_dict() for rows in phases.values() for p in rows],
        "elapsed_s": elapsed,
    }, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
