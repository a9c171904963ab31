"""The arithmetic of the system benchmarks (benchmarks/system/maths.py): pure functions only.

Nothing here starts a server or times anything.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: load the module from its file.
_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "system" / "maths.py"
_spec = importlib.util.spec_from_file_location("bench_maths", _PATH)
assert _spec and _spec.loader
maths = importlib.util.module_from_spec(_spec)
sys.modules["bench_maths"] = maths  # dataclasses look their module up
_spec.loader.exec_module(maths)


def test_proc_cpu_seconds_adds_utime_and_stime() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    line = "4242 (python) S 1 4242 4242 0 -1 4194304 10 0 0 0 250 50 0 0 20 0 3 0 100 0 0"
    assert maths.proc_cpu_seconds(line, 100) == pytest.approx(3.0)


def test_proc_cpu_seconds_survives_odd_command_names() -> None:
    line = "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0"
    assert maths.proc_cpu_seconds(line, 10) == pytest.approx(1.0)


def test_redis_cpu_prefers_the_main_thread() -> None:
    info = {"used_cpu_user": 9.0, "used_cpu_sys": 9.0,
            "used_cpu_user_main_thread": 1.5, "used_cpu_sys_main_thread": 0.5}
    assert maths.redis_cpu_seconds(info) == 2.0
    assert maths.redis_cpu_seconds({"used_cpu_user": 1.0, "used_cpu_sys": 0.25}) == 1.25


def test_command_calls_reads_commandstats() -> None:
    info = {"cmdstat_evalsha": {"calls": 12, "usec": 100}}
    assert maths.command_calls(info, "EVALSHA") == 12
    assert maths.command_calls(info, "ping") == 0


def _result(name: str = "x", claims: int = 1000, seconds: float = 2.0, cpu: tuple[float, float] = (1.0, 1.5),
            redis: tuple[float, float] | None = (0.0, 0.1), commands: tuple[int, int] = (100, 351),
            evalsha: tuple[int, int] = (0, 250), outcomes: dict[str, int] | None = None):
    before = maths.Reading(cpu[0], redis and redis[0], redis and commands[0], redis and evalsha[0])
    after = maths.Reading(cpu[1], redis and redis[1], redis and commands[1], redis and evalsha[1])
    return maths.Result(name, name, claims, claims, seconds, before, after,
                        outcomes if outcomes is not None else {"GRANTED": claims})


def test_result_figures_per_claim() -> None:
    r = _result()
    assert r.claims_per_s == 500
    assert r.server_cpu_us == pytest.approx(500.0)
    assert r.redis_cpu_us == pytest.approx(100.0)
    assert r.redis_commands == 250  # the first reading's own INFO is not the server's
    assert r.redis_cmds_per_claim == pytest.approx(0.25)
    assert r.evalsha_per_claim == pytest.approx(0.25)
    assert r.clean


def test_result_without_redis_has_no_redis_figures() -> None:
    r = _result(redis=None)
    assert r.redis_cpu_us is None and r.redis_cmds_per_claim is None and r.evalsha_calls is None


def test_unexpected_outcomes_or_errors_make_a_result_unclean() -> None:
    assert not _result(outcomes={"GRANTED": 999, "SOLD_OUT": 1}).clean
    r = _result()
    r.errors = {"UNAVAILABLE": 1}
    assert not r.clean


def test_per_claim_refuses_an_empty_phase() -> None:
    with pytest.raises(ValueError):
        maths.per_claim_us(0.0, 1.0, 0)


def test_summarize_keeps_rounds_and_takes_medians() -> None:
    rounds = [_result(cpu=(0.0, 0.4)), _result(cpu=(0.0, 0.5)), _result(cpu=(0.0, 3.0), seconds=4.0)]
    s = maths.summarize(rounds)
    assert s.rounds == 3 and s.claims == 3000
    assert s.per_round["server_cpu_us"] == pytest.approx([400.0, 500.0, 3000.0])
    assert s.server_cpu_us == pytest.approx(500.0)  # the disturbed round does not pull the figure
    assert s.claims_per_s == 500
    assert s.evalsha_calls == 750
    assert s.outcomes == {"GRANTED": 3000}
    assert s.clean


def test_paired_ratios_go_round_by_round() -> None:
    a = _summary("a", server_cpu_us=[110.0, 300.0, 120.0])
    b = _summary("b", server_cpu_us=[100.0, 250.0, 100.0])
    assert maths.paired_ratios(a, b, "server_cpu_us") == pytest.approx([1.1, 1.2, 1.2])
    assert maths.paired_ratios(a, None, "server_cpu_us") == []


def _micro(rows: list[tuple[str, str, float]]) -> dict:
    return {"benchmarks": [{"group": g, "params": {"impl": impl}, "stats": {"min": t, "median": 2 * t}}
                           for g, impl, t in rows]}


def test_micro_ratios_pair_compiled_with_twin() -> None:
    report = _micro([("a", "c", 1e-5), ("a", "py", 2e-4), ("b", "py", 1e-3)])
    ratios = maths.micro_ratios(report)
    assert list(ratios) == ["a"]  # b has no compiled run (e.g. CLAIMCORE_NO_EXTENSIONS)
    assert ratios["a"].ratio == pytest.approx(20.0)


def test_compare_ratios_flags_a_drop_beyond_the_margin() -> None:
    rows = {r.group: r for r in maths.compare_ratios(
        {"a": 7.6, "b": 7.4, "new": 3.0}, {"a": 10.0, "b": 10.0, "gone": 5.0}, 0.25)}
    assert rows["a"].ok and not rows["b"].ok
    assert rows["a"].floor == pytest.approx(7.5)
    assert rows["new"].ok  # nothing to regress from
    assert not rows["gone"].ok  # no longer measured
    with pytest.raises(ValueError):
        maths.compare_ratios({}, {}, 1.5)


def test_best_and_median_ratios_over_runs() -> None:
    runs = [{"a": 5.0, "b": 30.0}, {"a": 9.0}, {"a": 8.0, "b": 40.0}]
    assert maths.best_ratios(runs) == {"a": 9.0, "b": 40.0}
    assert maths.median_ratios(runs) == {"a": 8.0, "b": 35.0}


def _summary(name: str, **figures: list[float | None] | float | None) -> maths.Summary:
    """A summary whose figures are given per round (a list) or for a single round (a number)."""
    per_round = {f: [None] for f in maths.FIGURES}
    per_round["claims_per_s"] = [1.0]
    per_round["server_cpu_us"] = [1.0]
    for figure, value in figures.items():
        if figure in per_round:
            per_round[figure] = value if isinstance(value, list) else [value]
    evalsha = figures.get("evalsha_calls")
    return maths.Summary(name=name, label=name, expected_outcome="GRANTED", per_round=per_round,
                         evalsha_calls=evalsha if isinstance(evalsha, int) else None)


def test_targets_are_judged_as_ratios() -> None:
    results = {s.name: s for s in [
        _summary("echo_granted", server_cpu_us=100.0),
        _summary("echo_sold_out", server_cpu_us=80.0),
        _summary("echo_batch", server_cpu_us=[5.0, 6.0]),
        _summary("naive_unary", redis_cpu_us=80.0),
        _summary("claimcore_unary", server_cpu_us=110.0, redis_cpu_us=20.0, claims_per_s=1000.0),
        _summary("claimcore_batch", claims_per_s=25_000.0, server_cpu_us=[6.0, 9.0]),
        _summary("claimcore_sold_out", server_cpu_us=90.0, redis_cmds_per_claim=0.002, evalsha_calls=0),
    ]}
    micro = {"shard_of": maths.MicroRatio("shard_of", 1.0, 40.0)}
    verdicts = {v.name: v for v in maths.targets(results, micro)}
    unary = verdicts["unary Claim granting: node CPU/claim vs echo CPU/call"]
    assert unary.measured == pytest.approx(1.1) and unary.passed
    assert unary.spread == (pytest.approx(1.1), pytest.approx(1.1))
    redis_cpu = verdicts["Redis CPU per granted claim vs naive baseline"]
    assert redis_cpu.measured == pytest.approx(0.25) and not redis_cpu.passed
    assert redis_cpu.vs_target == pytest.approx(2.0)
    assert verdicts["ClaimBatch x100 claims/s vs unary Claim claims/s"].passed
    batch = verdicts["ClaimBatch x100: node CPU/claim vs echo batch CPU/claim"]
    assert batch.spread == (pytest.approx(1.2), pytest.approx(1.5))  # paired round by round
    assert batch.measured == pytest.approx(1.35) and not batch.passed  # the median of 1.2 and 1.5
    assert not verdicts["after sold out: node CPU/claim vs echo CPU/call"].passed  # 1.125 > 1.05
    assert verdicts["after sold out: Redis commands per claim"].passed
    assert verdicts["Cython shard_of vs its pure-Python twin"].passed
    token_bucket = verdicts["Cython token_bucket vs its pure-Python twin"]
    assert token_bucket.measured is None and not token_bucket.passed  # not measured: a MISS


def test_a_claim_script_after_sold_out_misses_the_target() -> None:
    results = {"claimcore_sold_out": _summary("claimcore_sold_out", redis_cmds_per_claim=0.001,
                                              evalsha_calls=3)}
    verdict = next(v for v in maths.targets(results, {}) if v.name.startswith("after sold out: Redis"))
    assert not verdict.passed


def test_verdict_ops() -> None:
    assert maths.Verdict("a", 1.0, "<=", 1.0).passed
    assert not maths.Verdict("b", 0.9, ">=", 1.0).passed
    assert maths.Verdict("c", None, "<=", 1.0).vs_target is None
    assert maths.Verdict("d", 0.5, "<=", 1.0, extra_ok=False).passed is False
