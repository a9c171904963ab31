"""The arithmetic of the scaling benchmark, as pure functions (benchmarks/tests/test_bench_scaling.py
checks them).

Readings of each Redis master in, figures out: the work each master did in a
measured phase, how evenly the masters shared it, the split of a master's CPU
into a cost per script call and a cost per grant, and the sizing arithmetic of
docs/scaling.md. Nothing here starts a process, opens a socket or reads a clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.system.maths import command_calls, redis_cpu_seconds

# ------------------------------------------------------------------ readings of one master


@dataclass(frozen=True)
class MasterReading:
    """One master's figures at one moment (INFO cpu, stats, commandstats, memory, keyspace)."""

    port: int
    cpu_main_s: float     # main thread (user + sys): the thread that runs every script
    cpu_s: float          # whole process, used_cpu_user + used_cpu_sys (adds the AOF fsync thread)
    cpu_sys_main_s: float  # the main thread's system time: its reads, writes and epoll
    commands: int         # total_commands_processed (also counts the commands scripts run)
    evalsha: int          # EVALSHA calls so far
    keys: int             # keys in db0
    memory: int           # used_memory, bytes
    granted: int          # sum of the `granted` field of the campaign's shards on this master


def keys_in_db0(info: dict[str, Any]) -> int:
    """Keys in db0 from INFO keyspace as redis-py parses it (0 when the db is empty)."""
    db = info.get("db0")
    return int(db["keys"]) if isinstance(db, dict) else 0


def master_reading(port: int, info: dict[str, Any], granted: int) -> MasterReading:
    """A MasterReading from one `INFO cpu stats commandstats memory keyspace` reply (parsed)."""
    return MasterReading(
        port=port, cpu_main_s=redis_cpu_seconds(info),
        cpu_s=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        cpu_sys_main_s=float(info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])),
        commands=int(info["total_commands_processed"]), evalsha=command_calls(info, "evalsha"),
        keys=keys_in_db0(info), memory=int(info["used_memory"]), granted=granted,
    )


@dataclass(frozen=True)
class MasterDelta:
    """What one master did during a measured phase."""

    port: int
    shards: int           # the campaign's shards whose slot this master owns
    cpu_main_s: float
    cpu_s: float
    cpu_sys_main_s: float
    commands: int         # less the reader's own commands
    evalsha: int
    grants: int
    keys: int             # at the end of the phase
    memory_bytes: int     # growth of used_memory (allocator rounding makes it coarse)

    @property
    def cpu_us_per_grant(self) -> float | None:
        """Main-thread CPU per grant, in µs; the same number is ms per 1,000 grants."""
        return self.cpu_main_s * 1e6 / self.grants if self.grants else None

    @property
    def claims_per_call(self) -> float | None:
        """Grants per claim.lua call: the size of this master's batches."""
        return self.grants / self.evalsha if self.evalsha else None

    @property
    def sys_share(self) -> float | None:
        """The share of the main thread's CPU spent in the kernel (socket reads and writes)."""
        return self.cpu_sys_main_s / self.cpu_main_s if self.cpu_main_s > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {"port": self.port, "shards": self.shards, "cpu_main_s": self.cpu_main_s, "cpu_s": self.cpu_s,
                "cpu_sys_main_s": self.cpu_sys_main_s, "commands": self.commands, "evalsha": self.evalsha,
                "grants": self.grants, "keys": self.keys,
                "memory_bytes": self.memory_bytes, "cpu_us_per_grant": self.cpu_us_per_grant,
                "claims_per_call": self.claims_per_call}


def master_delta(before: MasterReading, after: MasterReading, shards: int, own_commands: int) -> MasterDelta:
    """The work between two readings of one master; `own_commands` are the reader's commands that
    the second reading counts (the first reading's INFO and its HGETs of the shards' `granted`)."""
    if before.port != after.port:
        raise ValueError(f"readings of two masters: {before.port} and {after.port}")
    return MasterDelta(
        port=after.port, shards=shards, cpu_main_s=after.cpu_main_s - before.cpu_main_s,
        cpu_s=after.cpu_s - before.cpu_s, cpu_sys_main_s=after.cpu_sys_main_s - before.cpu_sys_main_s,
        commands=after.commands - before.commands - own_commands,
        evalsha=after.evalsha - before.evalsha, grants=after.granted - before.granted, keys=after.keys,
        memory_bytes=after.memory - before.memory,
    )


# ------------------------------------------------------------------ slots and shards


def slot_owners(cluster_slots: Sequence[Sequence[Any]]) -> list[tuple[int, int, int]]:
    """(first slot, last slot, master port) ranges from a raw CLUSTER SLOTS reply, sorted."""
    ranges = []
    for entry in cluster_slots:
        first, last, master = entry[0], entry[1], entry[2]
        ranges.append((int(first), int(last), int(master[1])))
    return sorted(ranges)


def owner_port(slot: int, ranges: Sequence[tuple[int, int, int]]) -> int:
    """The port of the master that owns `slot`."""
    for first, last, port in ranges:
        if first <= slot <= last:
            return port
    raise ValueError(f"no master owns slot {slot}")


def shards_per_master(shard_slots: Sequence[int], ranges: Sequence[tuple[int, int, int]],
                      ports: Sequence[int]) -> dict[int, list[int]]:
    """port -> the shard numbers whose slot it owns (every port listed, also one owning none)."""
    out: dict[int, list[int]] = {port: [] for port in ports}
    for shard, slot in enumerate(shard_slots):
        out.setdefault(owner_port(slot, ranges), []).append(shard)
    return out


# ------------------------------------------------------------------ evenness


def spread(values: Iterable[float]) -> float | None:
    """max / mean: 1.0 is a perfectly even share; 1.5 means the busiest did half again the average.
    None when there is nothing to share (no values, or all zero)."""
    vals = list(values)
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    return max(vals) / mean if mean > 0 else None


def placement_spread(shards: int, masters: int) -> float:
    """The best max/mean a campaign of `shards` equal shards can reach on `masters` masters:
    with 16 shards on 3 masters, one master must hold 6 and 6 / (16/3) = 1.125."""
    if shards <= 0 or masters <= 0:
        raise ValueError("shards and masters must be positive")
    return math.ceil(shards / masters) / (shards / masters)


# ------------------------------------------------------------------ one measured phase


@dataclass
class Phase:
    """One measured phase: one mode on one cluster size, one round."""

    masters: int
    mode: str                      # "batch" or "unary"
    round: int
    claims: int
    calls: int
    seconds: float
    node_cpu_s: float              # all front processes together
    driver_cpu_s: float
    per_master: list[MasterDelta]
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.errors and set(self.outcomes) == {"GRANTED"}

    @property
    def grants(self) -> int:
        return sum(m.grants for m in self.per_master)

    @property
    def claims_per_s(self) -> float:
        return self.claims / self.seconds

    @property
    def node_cpu_us(self) -> float:
        return self.node_cpu_s * 1e6 / self.claims

    @property
    def redis_cpu_us(self) -> float:
        """All masters' main-thread CPU per claim."""
        return sum(m.cpu_main_s for m in self.per_master) * 1e6 / self.claims

    @property
    def busiest_master_cpu_us(self) -> float:
        """The busiest master's main-thread CPU per claim of the whole phase: what sets the limit."""
        return max(m.cpu_main_s for m in self.per_master) * 1e6 / self.claims

    @property
    def evalsha_per_claim(self) -> float:
        return sum(m.evalsha for m in self.per_master) / self.claims

    @property
    def cpu_spread(self) -> float | None:
        return spread(m.cpu_main_s for m in self.per_master)

    @property
    def calls_spread(self) -> float | None:
        return spread(m.evalsha for m in self.per_master)

    @property
    def grants_spread(self) -> float | None:
        return spread(m.grants for m in self.per_master)

    @property
    def shards_spread(self) -> float | None:
        """What the placement of the shards on the masters alone would give."""
        return spread(m.shards for m in self.per_master)

    @property
    def per_shard_spread(self) -> float | None:
        """Spread of grants per shard held, over masters: 1.0 when users hash evenly onto shards."""
        return spread(m.grants / m.shards for m in self.per_master if m.shards)

    def as_dict(self) -> dict[str, Any]:
        return {"masters": self.masters, "mode": self.mode, "round": self.round, "claims": self.claims,
                "calls": self.calls, "seconds": self.seconds, "claims_per_s": self.claims_per_s,
                "node_cpu_us_per_claim": self.node_cpu_us, "redis_cpu_us_per_claim": self.redis_cpu_us,
                "busiest_master_cpu_us_per_claim": self.busiest_master_cpu_us,
                "evalsha_per_claim": self.evalsha_per_claim, "grants": self.grants,
                "driver_cpu_us_per_claim": self.driver_cpu_s * 1e6 / self.claims,
                "cpu_spread": self.cpu_spread, "calls_spread": self.calls_spread,
                "grants_spread": self.grants_spread, "shards_spread": self.shards_spread,
                "per_shard_spread": self.per_shard_spread,
                "outcomes": self.outcomes, "errors": self.errors, "clean": self.clean,
                "per_master": [m.as_dict() for m in self.per_master]}


#: The figures of a Phase whose median over rounds the summary table shows.
PHASE_FIGURES = ("claims_per_s", "node_cpu_us", "redis_cpu_us", "busiest_master_cpu_us", "evalsha_per_claim",
                 "cpu_spread", "calls_spread", "grants_spread", "shards_spread", "per_shard_spread")


def median_figures(phases: Sequence[Phase]) -> dict[str, float | None]:
    """Each figure's median over the rounds of one (masters, mode)."""
    out: dict[str, float | None] = {}
    for figure in PHASE_FIGURES:
        present = [v for v in (getattr(p, figure) for p in phases) if v is not None]
        out[figure] = statistics.median(present) if present else None
    return out


def total_per_master(phases: Sequence[Phase]) -> list[MasterDelta]:
    """Each master's work summed over rounds (the placement is the same in every round)."""
    if not phases:
        return []
    totals = []
    for i, first in enumerate(phases[0].per_master):
        rows = [p.per_master[i] for p in phases]
        totals.append(MasterDelta(
            port=first.port, shards=first.shards, cpu_main_s=sum(r.cpu_main_s for r in rows),
            cpu_s=sum(r.cpu_s for r in rows), cpu_sys_main_s=sum(r.cpu_sys_main_s for r in rows),
            commands=sum(r.commands for r in rows),
            evalsha=sum(r.evalsha for r in rows), grants=sum(r.grants for r in rows),
            keys=rows[-1].keys, memory_bytes=sum(r.memory_bytes for r in rows),
        ))
    return totals


def paired_ratio(numerator: Sequence[Phase], denominator: Sequence[Phase], figure: str) -> float | None:
    """Median over rounds of figure(numerator round i) / figure(denominator round i)."""
    ratios = []
    for a, b in zip(numerator, denominator, strict=False):
        x, y = getattr(a, figure), getattr(b, figure)
        if x is not None and y:
            ratios.append(x / y)
    return statistics.median(ratios) if ratios else None


# ------------------------------------------------------------------ cost per call and per grant


@dataclass(frozen=True)
class CostSplit:
    """A master's CPU as per_call_us × script calls + per_grant_us × grants (least squares)."""

    per_call_us: float
    per_grant_us: float
    rows: int

    def cpu_us_per_grant(self, claims_per_call: float) -> float:
        """Redis CPU per grant at a given batch size."""
        if claims_per_call <= 0:
            raise ValueError("claims_per_call must be positive")
        return self.per_grant_us + self.per_call_us / claims_per_call


def split_cost(rows: Iterable[tuple[float, float, float]]) -> CostSplit | None:
    """Fit cpu_s = a × calls + b × grants through the origin, from (cpu_s, calls, grants) rows.

    Rows with batches of different sizes (unary load: small batches; ClaimBatch: large
    ones) tell the two costs apart. None when the rows cannot (fewer than two, or all
    with the same calls/grants proportion).
    """
    data = [(c, n, g) for c, n, g in rows if n > 0 and g > 0]
    snn = sum(n * n for _, n, _ in data)
    sgg = sum(g * g for _, _, g in data)
    sng = sum(n * g for _, n, g in data)
    scn = sum(c * n for c, n, _ in data)
    scg = sum(c * g for c, _, g in data)
    det = snn * sgg - sng * sng
    if len(data) < 2 or det <= 1e-9 * snn * sgg:
        return None
    a = (scn * sgg - scg * sng) / det
    b = (scg * snn - scn * sng) / det
    return CostSplit(per_call_us=a * 1e6, per_grant_us=b * 1e6, rows=len(data))


# ------------------------------------------------------------------ sizing (docs/scaling.md)


@dataclass(frozen=True)
class Sizing:
    cores: float          # CPU-seconds per second the work needs
    units: int            # processes or masters, each one core at most `utilisation` busy

    def as_dict(self) -> dict[str, Any]:
        return {"cores": self.cores, "units": self.units}


def size(rate_per_s: float, cpu_us_per_unit_of_work: float, utilisation: float = 0.5) -> Sizing:
    """Single-threaded processes needed for `rate_per_s` units of work costing `cpu_us…` each,
    when none may run above `utilisation` of its core (the rest is headroom)."""
    if not 0 < utilisation <= 1:
        raise ValueError("utilisation must be in (0, 1]")
    if rate_per_s < 0 or cpu_us_per_unit_of_work < 0:
        raise ValueError("rate and cost must not be negative")
    cores = rate_per_s * cpu_us_per_unit_of_work / 1e6
    return Sizing(cores, max(1, math.ceil(cores / utilisation - 1e-9)))


def claims_per_call(lane_rate_per_s: float, flush_interval_s: float, max_batch: int = 256) -> float:
    """Claims a lane carries per script call when claims reach it at `lane_rate_per_s` and the node
    flushes every `flush_interval_s` (linger + round trip); at least 1, at most max_batch."""
    return min(float(max_batch), max(1.0, lane_rate_per_s * flush_interval_s))
