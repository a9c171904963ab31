"""The arithmetic of the benchmarks, as pure functions (benchmarks/tests/test_bench_maths.py checks them).

Readings in, figures out: CPU seconds from /proc and from Redis INFO, figures
per claim, the targets of issue 4 with their verdicts, the compiled/twin
ratios of the microbenchmarks, and their comparison with a saved baseline.
Nothing here starts a process or reads a clock.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


def proc_cpu_seconds(stat_line: str, ticks_per_second: int) -> float:
    """utime + stime, in seconds, from the text of /proc/<pid>/stat (all threads of the process)."""
    # Field 2, the command name, is in parentheses and may itself hold spaces or ')':
    # count from the last ')'. What follows starts at field 3; utime and stime are fields 14 and 15.
    rest = stat_line[stat_line.rindex(")") + 1:].split()
    return (int(rest[11]) + int(rest[12])) / ticks_per_second


def redis_cpu_seconds(info: dict[str, Any]) -> float:
    """Redis main-thread CPU (user + sys) from INFO cpu; the whole process on Redis before 6.2.

    The main thread runs every command and script; the background threads
    (AOF fsync, lazy free) do the same work whichever server sent the commands.
    """
    if "used_cpu_user_main_thread" in info:
        return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_calls(info: dict[str, Any], command: str) -> int:
    """Calls of one command so far, from INFO commandstats as redis-py parses it."""
    stat = info.get(f"cmdstat_{command.lower()}")
    return int(stat["calls"]) if stat else 0


@dataclass(frozen=True)
class Reading:
    """What is read just before and just after the measured phase."""

    server_cpu_s: float
    redis_cpu_s: float | None = None  # None: no Redis behind this server
    redis_commands: int | None = None  # total_commands_processed: also counts commands run by scripts
    redis_evalsha: int | None = None


def per_claim_us(before_s: float, after_s: float, claims: int) -> float:
    """Microseconds of CPU per claim over a phase."""
    if claims <= 0:
        raise ValueError("a phase needs at least one claim")
    return (after_s - before_s) * 1e6 / claims


#: INFO calls the runner makes between two readings that Redis counts in the second one:
#: the first reading's own INFO (a command is counted once it has run).
OWN_COMMANDS = 1


@dataclass
class Result:
    """One configuration's measured phase."""

    name: str           # short key, e.g. "claimcore_unary"
    label: str          # row title in the table
    calls: int
    claims: int
    seconds: float      # wall time of the measured phase
    before: Reading
    after: Reading
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    expected_outcome: str = "GRANTED"
    driver_cpu_s: float | None = None  # the load driver's own CPU (it shares the machine)

    @property
    def claims_per_s(self) -> float:
        return self.claims / self.seconds

    @property
    def server_cpu_us(self) -> float:
        return per_claim_us(self.before.server_cpu_s, self.after.server_cpu_s, self.claims)

    @property
    def redis_cpu_us(self) -> float | None:
        if self.before.redis_cpu_s is None or self.after.redis_cpu_s is None:
            return None
        return per_claim_us(self.before.redis_cpu_s, self.after.redis_cpu_s, self.claims)

    @property
    def redis_commands(self) -> int | None:
        if self.before.redis_commands is None or self.after.redis_commands is None:
            return None
        return self.after.redis_commands - self.before.redis_commands - OWN_COMMANDS

    @property
    def redis_cmds_per_claim(self) -> float | None:
        commands = self.redis_commands
        return None if commands is None else commands / self.claims

    @property
    def evalsha_calls(self) -> int | None:
        if self.before.redis_evalsha is None or self.after.redis_evalsha is None:
            return None
        return self.after.redis_evalsha - self.before.redis_evalsha

    @property
    def evalsha_per_claim(self) -> float | None:
        """Claim scripts per claim: 1 without batching; 1/n for batches of n."""
        calls = self.evalsha_calls
        return None if calls is None else calls / self.claims

    @property
    def clean(self) -> bool:
        """Every claim got the expected outcome and no call failed."""
        return not self.errors and set(self.outcomes) == {self.expected_outcome}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label, "calls": self.calls, "claims": self.claims,
            "seconds": self.seconds, "claims_per_s": self.claims_per_s,
            "server_cpu_us_per_claim": self.server_cpu_us, "redis_cpu_us_per_claim": self.redis_cpu_us,
            "redis_commands": self.redis_commands, "redis_cmds_per_claim": self.redis_cmds_per_claim,
            "evalsha_calls": self.evalsha_calls, "evalsha_per_claim": self.evalsha_per_claim,
            "outcomes": self.outcomes, "errors": self.errors,
            "expected_outcome": self.expected_outcome, "clean": self.clean,
            "driver_cpu_us_per_claim": (None if self.driver_cpu_s is None
                                        else self.driver_cpu_s * 1e6 / self.claims),
        }


#: The figures of a Result that a Summary keeps per round.
FIGURES = ("claims_per_s", "server_cpu_us", "redis_cpu_us", "redis_cmds_per_claim", "evalsha_per_claim")


@dataclass
class Summary:
    """One configuration over several rounds: each figure per round, medians, and totals of the counts."""

    name: str
    label: str
    expected_outcome: str
    per_round: dict[str, list[float | None]]  # figure -> its value in each round, in order
    claims: int = 0                           # measured claims, all rounds
    evalsha_calls: int | None = None          # all rounds
    outcomes: dict[str, int] = field(default_factory=dict)  # all rounds
    errors: dict[str, int] = field(default_factory=dict)    # all rounds
    clean: bool = True                        # every round clean

    @property
    def rounds(self) -> int:
        return len(self.per_round["claims_per_s"])

    def median(self, figure: str) -> float | None:
        """The median over rounds (a round a neighbour disturbed does not move it much)."""
        present = [v for v in self.per_round[figure] if v is not None]
        return statistics.median(present) if present else None

    @property
    def claims_per_s(self) -> float | None:
        return self.median("claims_per_s")

    @property
    def server_cpu_us(self) -> float | None:
        return self.median("server_cpu_us")

    @property
    def redis_cpu_us(self) -> float | None:
        return self.median("redis_cpu_us")

    @property
    def redis_cmds_per_claim(self) -> float | None:
        return self.median("redis_cmds_per_claim")

    @property
    def evalsha_per_claim(self) -> float | None:
        return self.median("evalsha_per_claim")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "rounds": self.rounds, "claims": self.claims,
                **{figure: self.median(figure) for figure in FIGURES}, "per_round": self.per_round,
                "evalsha_calls": self.evalsha_calls, "outcomes": self.outcomes, "errors": self.errors,
                "expected_outcome": self.expected_outcome, "clean": self.clean}


def _total(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, n in count.items():
            total[key] = total.get(key, 0) + n
    return total


def summarize(rounds: list[Result]) -> Summary:
    """One configuration's rounds, folded into a Summary."""
    if not rounds:
        raise ValueError("no rounds to summarize")
    first = rounds[0]
    evalsha = [r.evalsha_calls for r in rounds]
    return Summary(
        name=first.name, label=first.label, expected_outcome=first.expected_outcome,
        per_round={figure: [getattr(r, figure) for r in rounds] for figure in FIGURES},
        claims=sum(r.claims for r in rounds),
        evalsha_calls=None if None in evalsha else sum(e for e in evalsha if e is not None),
        outcomes=_total([r.outcomes for r in rounds]), errors=_total([r.errors for r in rounds]),
        clean=all(r.clean for r in rounds),
    )


# ------------------------------------------------------------------ microbenchmarks


@dataclass(frozen=True)
class MicroRatio:
    """One pytest-benchmark group: the compiled module against its pure-Python twin.

    Times are the fastest round of each (see micro_ratios for why the minimum).
    """

    group: str
    compiled_s: float
    twin_s: float

    @property
    def ratio(self) -> float:
        """How many times faster the compiled module is."""
        return self.twin_s / self.compiled_s


#: The statistic the ratios use. On a shared machine other processes only ever add time to a
#: round, so the fastest round is the one closest to the code's own cost; medians of the slow
#: twin (few rounds) swing by several times under a neighbour's load.
MICRO_STAT = "min"


def micro_ratios(benchmark_json: dict[str, Any], stat: str = MICRO_STAT) -> dict[str, MicroRatio]:
    """Compiled/twin ratios per group from a pytest-benchmark JSON report.

    A benchmark's implementation is its `impl` parameter: "c" (compiled) or
    "py" (twin). Groups lacking either (e.g. under CLAIMCORE_NO_EXTENSIONS) are left out.
    """
    times: dict[str, dict[str, float]] = {}
    for bench in benchmark_json.get("benchmarks", []):
        impl = (bench.get("params") or {}).get("impl")
        if impl in ("c", "py"):
            times.setdefault(bench["group"], {})[impl] = float(bench["stats"][stat])
    return {
        group: MicroRatio(group, t["c"], t["py"])
        for group, t in sorted(times.items()) if "c" in t and "py" in t
    }


@dataclass(frozen=True)
class Regression:
    group: str
    baseline: float | None  # the baseline's ratio; None: the group is new
    current: float | None   # None: the group is gone, or runs only one twin now
    floor: float | None     # the lowest ratio that passes

    @property
    def ok(self) -> bool:
        if self.baseline is None:
            return True  # a new group has nothing to regress from
        return self.current is not None and self.floor is not None and self.current >= self.floor


def best_ratios(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each group's highest ratio over several runs (a regression must show in every run)."""
    best: dict[str, float] = {}
    for run in runs:
        for group, value in run.items():
            best[group] = max(value, best.get(group, value))
    return best


def median_ratios(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each group's median ratio over several runs (the typical figure, for a baseline)."""
    groups = sorted({g for run in runs for g in run})
    return {g: statistics.median(run[g] for run in runs if g in run) for g in groups}


def compare_ratios(current: dict[str, float], baseline: dict[str, float], margin: float) -> list[Regression]:
    """Each group's compiled/twin ratio against the baseline's: a regression is a ratio more
    than `margin` (a fraction, 0.25 = 25 %) below the baseline's ratio."""
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be a fraction in [0, 1), not {margin}")
    rows = []
    for group in sorted(set(current) | set(baseline)):
        base = baseline.get(group)
        floor = None if base is None else base * (1 - margin)
        rows.append(Regression(group, base, current.get(group), floor))
    return rows


# ------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Verdict:
    """A target of issue 4: measured against target, with op '<=' or '>='."""

    name: str
    measured: float | None  # None: could not be measured in this run
    op: str
    target: float
    unit: str = "x"
    extra_ok: bool = True   # a further condition of the target (e.g. no claim scripts at all)
    note: str = ""
    rounds: tuple[float, ...] = ()  # the measured figure in each round, when there are rounds

    @property
    def spread(self) -> tuple[float, float] | None:
        """The lowest and highest per-round figure: how much the verdict could owe to noise."""
        return (min(self.rounds), max(self.rounds)) if self.rounds else None

    @property
    def vs_target(self) -> float | None:
        """measured / target: at most 1 passes a '<=' target, at least 1 a '>=' target."""
        if self.measured is None:
            return None
        return self.measured / self.target

    @property
    def passed(self) -> bool:
        if self.measured is None or not self.extra_ok:
            return False
        if self.op == "<=":
            return self.measured <= self.target
        if self.op == ">=":
            return self.measured >= self.target
        raise ValueError(f"op must be '<=' or '>=', not {self.op!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "op": self.op, "target": self.target,
                "unit": self.unit, "vs_target": self.vs_target, "passed": self.passed, "note": self.note,
                "rounds": list(self.rounds)}


#: "No Redis command per claim" after sold out: no claim script at all, and every other command
#: together (the node's PING and its 1 s sold-out refresh) fewer than one per this many claims.
SOLD_OUT_MAX_CMDS_PER_CLAIM = 0.01
MICRO_MIN_RATIO = 10.0
# The groups of benchmarks/test_bench_fast.py; listed even if not run.
MICRO_GROUPS = ("claim_codec", "claim_reply", "shard_of", "token_bucket")


def paired_ratios(numerator: Summary | None, denominator: Summary | None, figure: str) -> list[float]:
    """figure of numerator / figure of denominator, round by round.

    Round i of two configurations ran minutes apart at most (run.RUN_ORDER puts
    the pairs of a target back to back), so the machine's load changed little
    between them; the median of these ratios resists drift better than the
    ratio of two medians.
    """
    if numerator is None or denominator is None:
        return []
    pairs = zip(numerator.per_round[figure], denominator.per_round[figure], strict=True)
    return [a / b for a, b in pairs if a is not None and b]


def _paired(name: str, results: dict[str, Summary], numerator: str, denominator: str, figure: str,
            op: str, target: float) -> Verdict:
    ratios = paired_ratios(results.get(numerator), results.get(denominator), figure)
    return Verdict(name, statistics.median(ratios) if ratios else None, op, target, rounds=tuple(ratios))


def targets(results: dict[str, Summary], micro: dict[str, MicroRatio]) -> list[Verdict]:
    """The targets of issues 4 and 14, judged from the summaries keyed by configuration name.

    Expected names: echo_granted, echo_sold_out, echo_batch, naive_unary, claimcore_unary,
    claimcore_batch, claimcore_sold_out. A missing one gives an unmeasured (MISS) verdict.
    """
    sold_out = results.get("claimcore_sold_out")
    evalsha = sold_out.evalsha_calls if sold_out else None
    cmds = [c for c in sold_out.per_round["redis_cmds_per_claim"] if c is not None] if sold_out else []
    verdicts = [
        _paired("unary Claim granting: node CPU/claim vs echo CPU/call", results,
                "claimcore_unary", "echo_granted", "server_cpu_us", "<=", 1.2),
        _paired("Redis CPU per granted claim vs naive baseline", results,
                "claimcore_unary", "naive_unary", "redis_cpu_us", "<=", 1 / 8),
        _paired("ClaimBatch x100 claims/s vs unary Claim claims/s", results,
                "claimcore_batch", "claimcore_unary", "claims_per_s", ">=", 20.0),
        _paired("ClaimBatch x100: node CPU/claim vs echo batch CPU/claim", results,
                "claimcore_batch", "echo_batch", "server_cpu_us", "<=", 1.3),
        _paired("after sold out: node CPU/claim vs echo CPU/call", results,
                "claimcore_sold_out", "echo_sold_out", "server_cpu_us", "<=", 1.05),
        Verdict("after sold out: Redis commands per claim",
                sold_out.redis_cmds_per_claim if sold_out else None, "<=", SOLD_OUT_MAX_CMDS_PER_CLAIM,
                unit="", extra_ok=evalsha == 0, note=f"EVALSHA calls in the phase: {evalsha}",
                rounds=tuple(cmds)),
    ]
    for group in sorted(set(micro) | set(MICRO_GROUPS)):
        m = micro.get(group)
        verdicts.append(Verdict(f"Cython {group} vs its pure-Python twin",
                                None if m is None else m.ratio, ">=", MICRO_MIN_RATIO))
    return verdicts
