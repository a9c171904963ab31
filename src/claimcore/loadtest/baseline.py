"""A run side by side with an earlier one: `claimcore loadgen --baseline REPORT.json`.

Pure functions over two report dicts (the one `loadgen --json` writes, and this run's): no
node, no files except load_baseline's. For each metric the comparison gives the baseline
value, this run's, the change in per cent, and whether it is a regression: worse than the
baseline by more than the margin, "worse" meaning lower for a throughput and higher for
everything else (latency, response time, time to sold out, node CPU per claim).

A metric missing on either side (not measured, e.g. node CPU without --node-metrics, or
a run that never sold out) is shown as n/a and is never a regression; nor is one whose
baseline is 0 (no per cent change).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MARGIN_PCT = 10.0
CHECK_NAME = "no regression vs baseline"
#: Keys a loadgen --json report has for sure; a file without them is not one.
REQUIRED_KEYS = ("claims_per_s", "latency_ms", "response_ms")


class BaselineError(ValueError):
    """The baseline file cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class Metric:
    label: str  # as the table shows it
    path: tuple[str, ...]  # where it is in a report
    higher_is_better: bool

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def value(self, report: Mapping[str, Any]) -> float | None:
        node: Any = report
        for part in self.path:
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        if isinstance(node, bool) or not isinstance(node, int | float):
            return None
        value = float(node)
        return None if math.isnan(value) or math.isinf(value) else value


def _latencies(summary: str, what: str) -> list[Metric]:
    return [Metric(f"{what} {q}, ms", (summary, q), False) for q in ("p50", "p90", "p99", "p99.9")]


METRICS: tuple[Metric, ...] = (
    Metric("claims/s", ("claims_per_s",), True),
    Metric("claims/s before sold out", ("claims_per_s_before_sold_out",), True),
    *_latencies("latency_ms", "latency"),
    *_latencies("response_ms", "response"),
    Metric("time to sold out, s", ("time_to_sold_out_server_s",), False),
    Metric("node CPU per claim, µs", ("front_cpu", "per_million_claims"), False),
)
#: What "worse" means, for the table's heading.
WORSE = "lower claims/s; higher latency, response time, time to sold out (server), node CPU per claim"
#: Settings that make two runs comparable; differences are listed beside the table.
SETUP_KEYS: tuple[tuple[str, ...], ...] = (
    ("users",), ("inventory",), ("shards",), ("processes",), ("concurrency",),
    ("run", "mode"), ("run", "batch_size"), ("run", "arrival"), ("run", "planned_claims"),
)  # fmt: skip


def load_baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The report in path; raises BaselineError (one line) if it is missing, not JSON or not a report."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BaselineError(f"--baseline {path}: cannot read it: {reason}") from None
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise BaselineError(f"--baseline {path}: not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise BaselineError(f"--baseline {path}: not a loadgen --json report (not a JSON object)")
    missing = [key for key in REQUIRED_KEYS if key not in report]
    if missing:
        raise BaselineError(f"--baseline {path}: not a loadgen --json report (no {', '.join(missing)})")
    return report


def change_pct(baseline: float | None, current: float | None) -> float | None:
    """(current - baseline) / baseline in per cent; None when either is missing or baseline is 0."""
    if baseline is None or current is None or baseline == 0:
        return None
    return (current - baseline) / abs(baseline) * 100.0


def is_regression(metric: Metric, change: float | None, margin_pct: float) -> bool:
    """Worse than the baseline by more than margin_pct (lower throughput, higher anything else)."""
    if change is None:
        return False
    worse_by = -change if metric.higher_is_better else change
    return worse_by > margin_pct + 1e-9  # 2.0 -> 2.2 is 10.000000000000009 % in floats: not over 10


def _setting(report: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = report
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def setup_differences(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The settings in which the two runs differ (then the figures compare different things)."""
    out = []
    for path in SETUP_KEYS:
        before, now = _setting(baseline, path), _setting(current, path)
        if before != now:
            out.append({"setting": ".".join(path), "baseline": before, "current": now})
    return out


def compare(
    baseline: Mapping[str, Any],
    current: Mapping[str, Any],
    margin_pct: float = DEFAULT_MARGIN_PCT,
    source: str | None = None,
) -> dict[str, Any]:
    """The comparison as the JSON report carries it (`baseline`), and format_comparison prints it."""
    if not margin_pct >= 0:
        raise ValueError(f"margin_pct must be >= 0, not {margin_pct}")
    rows = []
    for metric in METRICS:
        before, now = metric.value(baseline), metric.value(current)
        change = change_pct(before, now)
        rows.append({
            "metric": metric.label,
            "key": metric.key,
            "better": "higher" if metric.higher_is_better else "lower",
            "baseline": before,
            "current": now,
            "change_pct": change,
            "regression": is_regression(metric, change, margin_pct),
        })  # fmt: skip
    return {
        "file": source,
        "campaign": baseline.get("campaign"),
        "margin_pct": margin_pct,
        "rows": rows,
        "regressions": [row["metric"] for row in rows if row["regression"]],
        "setup_differences": setup_differences(baseline, current),
    }


def add_regression_check(report: dict[str, Any], comparison: Mapping[str, Any]) -> None:
    """Make "no regression vs baseline" one of the report's checks (--fail-on-regression)."""
    regressions = comparison["regressions"]
    ok = not regressions
    detail = (f"none worse than the baseline by more than {comparison['margin_pct']:g} %" if ok
              else "worse by more than {:g} %: {}".format(comparison["margin_pct"], ", ".join(regressions)))
    report["checks"].append({"name": CHECK_NAME, "ok": ok, "detail": detail})
    if not ok:
        report["failed"].append(CHECK_NAME)
        report["ok"] = False


# ---------------------------------------------------------------- the table


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3f}" if abs(value) < 1 else f"{value:,.2f}"


def _change(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "n/a" if value is None else str(value)


def format_comparison(comparison: Mapping[str, Any], width: int | None = None) -> str:
    """The side-by-side table: metric, baseline, this run, change, and REGRESSION where one is.

    width: characters a line may take; by default the terminal's (shutil.get_terminal_size,
    which reads $COLUMNS first; 100 when there is no terminal). Too narrow for a row on one
    line, each metric's name goes on a line of its own above its figures.
    """
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    wrap = max(width, 40)
    numbers, change = 11, 9
    figures_width = 2 * (numbers + 1) + (change + 1) + len(" REGRESSION")
    label_width = max(len("metric"), *(len(row["metric"]) for row in comparison["rows"]))
    one_line = 1 + label_width + figures_width <= width

    def figures(before: str, now: str, delta: str) -> str:
        return f" {before:>{numbers}} {now:>{numbers}} {delta:>{change}}"

    lines = textwrap.wrap(
        f"compared with baseline {comparison.get('file') or '(report)'}"
        + (f" (campaign {comparison['campaign']})" if comparison.get("campaign") else ""),
        wrap, initial_indent=" ", subsequent_indent="   ")
    lines += textwrap.wrap(
        f"REGRESSION: worse than the baseline by more than {comparison['margin_pct']:g} % ({WORSE})",
        wrap, initial_indent=" ", subsequent_indent="   ")
    heading = figures("baseline", "this run", "change")
    lines.append((" " + "metric".ljust(label_width) + heading) if one_line else " metric\n" + "   " + heading)
    for row in comparison["rows"]:
        line = figures(_number(row["baseline"]), _number(row["current"]), _change(row["change_pct"]))
        line += " REGRESSION" if row["regression"] else ""
        if one_line:
            lines.append(" " + row["metric"].ljust(label_width) + line)
        else:
            lines += [" " + _fit(row["metric"], width - 1), "   " + line]
    differences = comparison.get("setup_differences") or []
    if differences:
        text = "; ".join(f"{d['setting']} {_show(d['baseline'])} -> {_show(d['current'])}"
                         for d in differences)
        lines += textwrap.wrap("note: the runs differ in setup: " + text, wrap,
                               initial_indent=" ", subsequent_indent="   ")
    regressions = comparison["regressions"]
    summary = f"{len(regressions)} regression{'s' if len(regressions) != 1 else ''}"
    lines += textwrap.wrap(summary + (": " + "; ".join(regressions) if regressions else ""), wrap,
                           initial_indent=" ", subsequent_indent="   ")
    return "\n".join(line.rstrip() for line in "\n".join(lines).splitlines())
