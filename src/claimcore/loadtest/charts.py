"""The picture of a run: one self-contained HTML page, inline SVG drawn here, no scripts.

Two panels over the run's time, one point per 100 ms slice of report["series"]: replies
and grants per second, and p50 / p99 call latency. A dashed line marks the moment the
server recorded the campaign sold out. A table above gives the outcomes, the latency
percentiles and the checks.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from claimcore.loadtest.report import QUANTILES
from claimcore.loadtest.report_text import front_cpu_text, local_answers_text

WIDTH = 960
HEIGHT = 260
MARGIN = {"left": 70, "right": 20, "top": 28, "bottom": 36}
COLOURS = {"claims": "#3366cc", "granted": "#109618", "p50": "#ff9900", "p99": "#dc3912", "mark": "#888"}


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= value (1 for value <= 0)."""
    if not value > 0 or math.isinf(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and not math.isinf(value)


def line_chart(
    title: str,
    lines: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    x_max: float,
    y_label: str,
    marker_x: float | None = None,
) -> str:
    """An SVG line chart: lines are (label, colour, [(x, y), ...]); points with NaN y are gaps."""
    left, top = MARGIN["left"], MARGIN["top"]
    plot_w = WIDTH - left - MARGIN["right"]
    plot_h = HEIGHT - top - MARGIN["bottom"]
    ys = [y for _, _, pts in lines for _, y in pts if _finite(y)]
    y_max = nice_ceiling(max(ys, default=0.0))
    # The time axis ends at the first whole tick past the run, ticks a nice step apart.
    x_step = nice_ceiling(x_max / 10) if x_max > 0 else 0.1
    x_ticks = max(1, math.ceil(x_max / x_step - 1e-9))
    x_max = x_step * x_ticks

    def px(x: float) -> float:
        return left + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - y / y_max)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i in range(5):  # horizontal grid with y labels
        y = y_max * i / 4
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" font-size="11" text-anchor="end">{_fmt(y)}</text>'
        )
    for i in range(x_ticks + 1):  # x ticks, seconds
        x = x_step * i
        out.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" '
            f'stroke="#444"/><text x="{px(x):.1f}" y="{top + plot_h + 16}" font-size="11" '
            f'text-anchor="middle">{_fmt(x)}</text>'
        )
    out.append(
        f'<text x="{left + plot_w / 2}" y="{HEIGHT - 4}" font-size="11" text-anchor="middle">'
        f"seconds since start</text>"
        f'<text x="14" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">{html.escape(y_label)}</text>'
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>'
    )
    if marker_x is not None and 0 <= marker_x <= x_max:
        out.append(
            f'<line x1="{px(marker_x):.1f}" x2="{px(marker_x):.1f}" y1="{top}" y2="{top + plot_h}" '
            f'stroke="{COLOURS["mark"]}" stroke-dasharray="4 3"/>'
            f'<text x="{px(marker_x) + 4:.1f}" y="{top + 12}" font-size="11" fill="#555">sold out</text>'
        )
    for n, (label, colour, points) in enumerate(lines):
        segments: list[list[str]] = [[]]
        for x, y in points:
            if _finite(y):
                segments[-1].append(f"{px(x):.1f},{py(y):.1f}")
            elif segments[-1]:
                segments.append([])
        for seg in segments:
            if len(seg) == 1:
                x, y = seg[0].split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="1.5" fill="{colour}"/>')
            elif seg:
                out.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(seg)}"/>'
                )
        lx = left + plot_w - 150
        ly = top + 14 + 16 * n
        out.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="3"/>'
            f'<text x="{lx + 24}" y="{ly}" font-size="11">{html.escape(label)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _row(cells: Sequence[Any], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def _ms(value: Any) -> str:
    return f"{value:,.2f}" if _finite(value) else "n/a"


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for a report as built by claimcore.loadtest.report.build_report."""
    series = report.get("series") or []
    slice_s = series[1]["t_s"] - series[0]["t_s"] if len(series) > 1 else 0.1
    mid = slice_s / 2  # plot each slice at its middle

    def points(key: str) -> list[tuple[float, float]]:
        return [(row["t_s"] + mid, row[key] if row[key] is not None else math.nan) for row in series]

    x_max = (series[-1]["t_s"] + slice_s) if series else 1.0
    sold_out = report.get("time_to_sold_out_server_s")
    throughput = line_chart(
        f"replies per second ({slice_s * 1000:.0f} ms slices)",
        [("all replies", COLOURS["claims"], points("claims_per_s")),
         ("GRANTED", COLOURS["granted"], points("granted_per_s"))],
        x_max=x_max, y_label="per second", marker_x=sold_out,
    )  # fmt: skip
    latency = line_chart(
        "call latency per slice",
        [("p50", COLOURS["p50"], points("p50_ms")), ("p99", COLOURS["p99"], points("p99_ms"))],
        x_max=x_max, y_label="milliseconds", marker_x=sold_out,
    )  # fmt: skip
    title = f"{report.get('title', 'claimcore')}: {report.get('campaign', '')}"
    verdict = "PASS" if report.get("ok") else "FAIL (" + ", ".join(report.get("failed", [])) + ")"
    outcomes = "".join(_row([k, f"{v:,}"]) for k, v in report.get("outcomes", {}).items())
    lat_rows = "".join(
        _row([label] + [_ms(report.get(key, {}).get(name)) for name, _ in QUANTILES]
             + [_ms(report.get(key, {}).get("max"))])
        for label, key in (("per call", "latency_ms"), ("from planned arrival", "response_ms"),
                           ("send lateness", "lateness_ms"))
    )  # fmt: skip
    checks = "".join(
        _row(["PASS" if c["ok"] else "FAIL", c["name"], c["detail"]]) for c in report.get("checks", [])
    )
    facts = [
        ("inventory / shards", f"{report.get('inventory', 0):,} / {report.get('shards', '')}"),
        ("users", f"{report.get('users', 0):,}"),
        ("granted (server)", f"{report.get('granted', 0):,}"),
        ("time to sold out (server)", f"{sold_out:.3f} s" if _finite(sold_out) else "n/a"),
        ("claims/s", f"{report['claims_per_s']:,.0f}" if _finite(report.get("claims_per_s")) else "n/a"),
        ("wall", f"{report['burst_wall_s']:.3f} s" if _finite(report.get("burst_wall_s")) else "n/a"),
        ("front node CPU", front_cpu_text(report)),
        ("answered without reaching a node", local_answers_text(report)),
    ]
    head = "".join(f"<th>{name}</th>" for name, _ in QUANTILES)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 24px 16px 0; display: inline-table; vertical-align: top; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; text-align: left; }}
.pass {{ color: #109618; }} .fail {{ color: #dc3912; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="{'pass' if report.get('ok') else 'fail'}"><strong>{html.escape(verdict)}</strong></p>
{f'<p class="fail" id="behind-plan"><strong>Warning:</strong> {html.escape(report["behind_plan"])}</p>'
 if report.get("behind_plan") else ""}
<table>{"".join(_row(f) for f in facts)}</table>
<table><tr><th>outcome</th><th>replies</th></tr>{outcomes}</table>
<table><tr><th>ms</th>{head}<th>max</th></tr>{lat_rows}</table>
<div>{throughput}</div>
<div>{latency}</div>
<table><tr><th></th><th>check</th><th>detail</th></tr>{checks}</table>
</body></html>
"""
