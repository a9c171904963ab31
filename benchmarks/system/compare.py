"""`make bench-compare`: run the microbenchmarks and compare them with benchmarks/baseline.json.

    python -m benchmarks.system.compare            # exit 1 on a regression
    python -m benchmarks.system.compare --update   # measure anew and write the baseline

The gate is each group's compiled/twin ratio (of fastest rounds, maths.MICRO_STAT):
a regression is a ratio more than --margin (default 25 %) below the baseline's.
Both twins run in one session on one machine, so the ratio stays put when the
machine is faster or slower, where absolute times do not; those are printed
next to the baseline's for information only. On a shared machine a neighbour
can still slow one twin's test and not the other's, so a group that regresses
is measured again (up to --runs sessions in all) and fails only if it regresses
in every one: a real regression does, a neighbour's burst does not. The
baseline is the median ratio of --runs sessions. benchmarks/README.md says more.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.system import maths

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "benchmarks" / "baseline.json"
MARGIN = 0.25
RUNS = 3
#: The microbenchmarks, as `make bench` runs them; at least 30 rounds, so the slow twin gets a fair minimum.
PYTEST = [sys.executable, "-m", "pytest", "benchmarks", "--benchmark-only", "--benchmark-min-rounds=30",
          "-q", "-p", "no:cacheprovider"]


def run_micro(json_path: Path) -> dict[str, Any]:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*PYTEST, f"--benchmark-json={json_path}"], cwd=ROOT, check=True)
    return json.loads(json_path.read_text())


def ratios_of(report: dict[str, Any]) -> dict[str, float]:
    return {g: m.ratio for g, m in maths.micro_ratios(report).items()}


def times_of(report: dict[str, Any]) -> dict[str, float]:
    return {b["name"]: float(b["stats"][maths.MICRO_STAT]) for b in report.get("benchmarks", [])}


def update(runs: int, baseline_path: Path, artifacts: Path) -> int:
    reports = [run_micro(artifacts / f"micro-baseline-{i + 1}.json") for i in range(runs)]
    times = [times_of(r) for r in reports]
    baseline = {
        "about": "claimcore microbenchmark baseline for `make bench-compare`; see benchmarks/README.md",
        "statistic": maths.MICRO_STAT,
        "created": datetime.date.today().isoformat(),
        "machine": {"cpu": reports[0].get("machine_info", {}).get("cpu", {}).get("brand_raw", ""),
                    "cpus": reports[0].get("machine_info", {}).get("cpu", {}).get("count"),
                    "python": platform.python_version()},
        "runs": runs,
        "ratios": {g: round(r, 2) for g, r in maths.median_ratios([ratios_of(r) for r in reports]).items()},
        "ratios_per_run": [{g: round(r, 2) for g, r in ratios_of(rep).items()} for rep in reports],
        "times_s": {name: statistics.median(t[name] for t in times) for name in times[0]},
    }
    baseline_path.write_text(json.dumps(baseline, indent=2) + "\n")
    print(f"baseline written to {baseline_path}: ratios {baseline['ratios']} "
          f"(per run: {baseline['ratios_per_run']})")
    return 0


def compare(runs: int, margin: float, baseline_path: Path, artifacts: Path) -> int:
    baseline = json.loads(baseline_path.read_text())
    seen: list[dict[str, float]] = []
    report: dict[str, Any] = {}
    for i in range(runs):
        report = run_micro(artifacts / f"micro-compare-{i + 1}.json")
        seen.append(ratios_of(report))
        rows = maths.compare_ratios(maths.best_ratios(seen), baseline["ratios"], margin)
        failing = [row.group for row in rows if not row.ok]
        print(f"session {i + 1}: ratios {_fmt(seen[-1])}"
              + (f"; regressed so far: {', '.join(failing)}" if failing else ""), flush=True)
        if not failing:
            break

    print(f"\ncompiled/twin ratios ({maths.MICRO_STAT} of rounds; best of {len(seen)} session(s)) "
          f"against {baseline_path.name} of {baseline.get('created', '?')}: "
          f"a regression is a ratio more than {margin:.0%} below the baseline's")
    print(f"{'group':<16} {'baseline':>9} {'floor':>8} {'now':>8}  verdict")
    for row in rows:
        verdict = "ok" if row.ok else "REGRESSION"
        if row.baseline is None:
            verdict = "new (not in the baseline)"
        elif row.current is None:
            verdict = "REGRESSION (not measured: group gone, or compiled modules missing)"
        print(f"{row.group:<16} {_x(row.baseline):>9} {_x(row.floor):>8} {_x(row.current):>8}  {verdict}")
    print("\nabsolute times of the last session, for information only (they move with the machine's load):")
    for name, now in times_of(report).items():
        then = baseline.get("times_s", {}).get(name)
        change = f"  ({now / then - 1:+.0%} against the baseline's {then * 1e6:.1f} µs)" if then else ""
        print(f"  {name:<28} {now * 1e6:>9.1f} µs{change}")
    failed = [row.group for row in rows if not row.ok]
    if failed:
        print(f"\nbench-compare: FAIL: compiled/twin ratio regressed beyond {margin:.0%}: "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nbench-compare: ok (no ratio more than {margin:.0%} below the baseline's)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.system.compare",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--margin", type=float, default=MARGIN,
                        help="fail if a ratio falls more than this fraction below the baseline's (0.25)")
    parser.add_argument("--runs", type=int, default=RUNS,
                        help="pytest sessions at most: a regression must show in each (3)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts",
                        help="where the pytest-benchmark JSON reports go")
    parser.add_argument("--update", action="store_true", help="write a new baseline instead of comparing")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.update:
        return update(args.runs, args.baseline, args.artifacts)
    return compare(args.runs, args.margin, args.baseline, args.artifacts)


def _fmt(ratios: dict[str, float]) -> str:
    return ", ".join(f"{g} {r:.1f}x" for g, r in ratios.items()) or "none"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


if __name__ == "__main__":
    raise SystemExit(main())
