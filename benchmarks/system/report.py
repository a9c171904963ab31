"""The printed table: one row per configuration, the microbenchmark ratios, then the targets."""

from __future__ import annotations

from benchmarks.system.maths import MicroRatio, Summary, Verdict


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def results_table(results: list[Summary]) -> str:
    head = (f"{'configuration':<52} {'claims/s':>10} {'server CPU':>11} {'Redis CPU':>10} "
            f"{'Redis cmds':>11} {'EVALSHA':>8}\n"
            f"{'':<52} {'':>10} {'µs/claim':>11} {'µs/claim':>10} {'/claim':>11} {'/claim':>8}")
    lines = [head, "-" * 107]
    notes = []
    for r in results:
        mark = " " if r.clean else "*"
        lines.append(f"{r.label:<51}{mark} {_num(r.claims_per_s, ',.0f'):>10} "
                     f"{_num(r.server_cpu_us, '.1f'):>11} {_num(r.redis_cpu_us, '.2f'):>10} "
                     f"{_num(r.redis_cmds_per_claim, '.4f'):>11} {_num(r.evalsha_per_claim, '.4f'):>8}")
        if not r.clean:
            notes.append(f"* {r.label}: expected every claim {r.expected_outcome} in {r.rounds} round(s); "
                         f"got outcomes {r.outcomes}, failed calls {r.errors or 'none'}")
    return "\n".join(lines + notes)


def micro_table(micro: dict[str, MicroRatio]) -> str:
    if not micro:
        return "microbenchmarks: no compiled/twin pair measured (not run, or CLAIMCORE_NO_EXTENSIONS set)"
    title = "microbenchmark (fastest round of 1,000 calls)"
    lines = [f"{title:<44} {'compiled':>12} {'twin':>12} {'ratio':>8}", "-" * 79]
    for m in micro.values():
        lines.append(f"{m.group:<44} {m.compiled_s * 1e6:>9.1f} µs {m.twin_s * 1e6:>9.1f} µs "
                     f"{m.ratio:>7.1f}x")
    return "\n".join(lines)


def targets_table(verdicts: list[Verdict]) -> str:
    """measured: median over rounds of the per-round figure; rounds: its lowest and highest."""
    lines = [f"{'target (reported only: never fails the run)':<54} {'measured':>9} {'target':>10} "
             f"{'vs target':>9} {'rounds: low-high':>17}  verdict", "-" * 115]
    for v in verdicts:
        digits = ".4f" if v.target < 0.1 else ".3f" if v.target < 1 else ".2f"
        measured = "-" if v.measured is None else f"{v.measured:{digits}}{v.unit}"
        target = f"{v.op} {v.target:{digits}}{v.unit}"
        spread = "-" if v.spread is None else f"{v.spread[0]:{digits}}-{v.spread[1]:{digits}}"
        verdict = "PASS" if v.passed else "MISS"
        if v.note:
            verdict += f"  ({v.note})"
        lines.append(f"{v.name:<54} {measured:>9} {target:>10} {_num(v.vs_target, '.2f'):>9} {spread:>17}  "
                     f"{verdict}")
    return "\n".join(lines)
