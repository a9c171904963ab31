"""The picture of a run: one self-contained HTML page, inline SVG drawn here, no scripts.

The sections follow the launch: the verdict (and the warning when the generator fell behind its
plan); the arrivals, planned against sent and answered; the replies by outcome; the stock
remaining; the latency percentiles over time; the reshards; the latency distribution; the checks.
The time charts take report["per_slice"] (one point per 100 ms slice, drawn as a rate per
second) and mark the server's sold-out moment and each reshard. docs/load-reports.md says how
to read each section.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from claimcore.loadtest.report import QUANTILES
from claimcore.loadtest.report_text import front_cpu_text, granted_text, local_answers_text

WIDTH = 1100
HEIGHT = 300
MARGIN = {"left": 78, "right": 24, "top": 52, "bottom": 40}
COLOURS = {
    "planned": "#222222", "sent": "#3366cc", "replies": "#109618", "resent": "#999999",
    "granted_first": "#109618", "granted_replays": "#8fd18f", "already_claimed": "#8e44ad",
    "sold_out": "#f39c12", "other": "#dc3912", "stock": "#16697a", "sampled": "#000000",
    "p50": "#ff9900", "p99": "#dc3912", "call_p50": "#7fa7e6", "call_p99": "#3366cc",
    "mark": "#777777", "reshard": "#8e44ad", "claims": "#3366cc", "granted": "#109618",
}  # fmt: skip
#: The replies by outcome, bottom to top of the stack: (per_slice key, legend).
OUTCOME_LAYERS = (
    ("granted_first", "GRANTED, first grants"),
    ("granted_replays", "GRANTED, replays of a grant (same voucher)"),
    ("already_claimed", "ALREADY_CLAIMED"),
    ("sold_out", "SOLD_OUT"),
    ("other", "other (RATE_LIMITED, ...)"),
)
X_LABEL = "seconds since the load started"
#: A line_chart line drawn as dots only (samples).
DOTS = "dots"
#: The percentile curve's axis: x = log10(1 / (1 - q)), so 90 % is 1, 99 % is 2, 99.9 % is 3.
DISTRIBUTION_TICKS = ((0.0, 0.0), (50.0, 0.30103), (90.0, 1.0), (99.0, 2.0), (99.9, 3.0), (99.99, 4.0))


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


class _Frame:
    """A chart's axes: the title, the legend under it, the grid, the ticks and the axis labels."""

    def __init__(self, title: str, *, x_max: float, y_max: float, y_label: str, x_label: str = X_LABEL,
                 x_ticks: Sequence[tuple[float, str]] | None = None, chart_id: str = "") -> None:
        self.left, self.top = MARGIN["left"], MARGIN["top"]
        self.plot_w = WIDTH - self.left - MARGIN["right"]
        self.plot_h = HEIGHT - self.top - MARGIN["bottom"]
        if x_ticks is None:  # the time axis ends at the first whole tick past the run
            step = nice_ceiling(x_max / 10) if x_max > 0 else 0.1
            count = max(1, math.ceil(x_max / step - 1e-9))
            x_max = step * count
            x_ticks = [(step * i, _fmt(round(step * i, 6))) for i in range(count + 1)]
        self.x_max, self.y_max = x_max, y_max
        self.legend_x = self.left
        ident = f' id="{html.escape(chart_id)}"' if chart_id else ""
        self.out = [
            f'<svg xmlns="http://www.w3.org/2000/svg"{ident} width="100%" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'role="img" aria-label="{html.escape(title)}" style="max-width:{WIDTH}px">',
            f'<text x="{self.left}" y="18" font-size="15" font-weight="bold">{html.escape(title)}</text>',
        ]
        bottom = self.top + self.plot_h
        for i in range(5):  # horizontal grid with y labels
            y = y_max * i / 4
            self.out.append(
                f'<line x1="{self.left}" x2="{self.left + self.plot_w}" y1="{self.py(y):.1f}" '
                f'y2="{self.py(y):.1f}" stroke="#e6e6e6"/><text x="{self.left - 6}" y="{self.py(y) + 4:.1f}" '
                f'font-size="12" text-anchor="end">{_fmt(y)}</text>')
        for x, label in x_ticks:
            self.out.append(
                f'<line x1="{self.px(x):.1f}" x2="{self.px(x):.1f}" y1="{bottom}" y2="{bottom + 4}" '
                f'stroke="#444"/><text x="{self.px(x):.1f}" y="{bottom + 17}" font-size="12" '
                f'text-anchor="middle">{html.escape(label)}</text>')
        middle = self.top + self.plot_h / 2
        self.out.append(
            f'<text x="{self.left + self.plot_w / 2}" y="{HEIGHT - 5}" font-size="12" text-anchor="middle">'
            f"{html.escape(x_label)}</text>"
            f'<text x="16" y="{middle}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 16 {middle})">{html.escape(y_label)}</text>'
            f'<rect x="{self.left}" y="{self.top}" width="{self.plot_w}" height="{self.plot_h}" '
            'fill="none" stroke="#444"/>')

    def px(self, x: float) -> float:
        return self.left + self.plot_w * min(max(x, 0.0), self.x_max) / self.x_max

    def py(self, y: float) -> float:
        return self.top + self.plot_h * (1 - min(max(y, 0.0), self.y_max) / self.y_max)

    def legend(self, label: str, colour: str, *, dash: str = "", area: bool = False) -> None:
        """One legend entry, left to right under the title."""
        x, y = self.legend_x, 38
        if area:
            self.out.append(f'<rect x="{x}" y="{y - 9}" width="18" height="10" fill="{colour}"/>')
        else:
            dashed = f' stroke-dasharray="{dash}"' if dash else ""
            self.out.append(f'<line x1="{x}" x2="{x + 18}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" '
                            f'stroke-width="3"{dashed}/>')
        self.out.append(f'<text x="{x + 23}" y="{y}" font-size="12">{html.escape(label)}</text>')
        self.legend_x += 23 + 6.6 * len(label) + 18

    def marker(self, x: float, label: str, *, colour: str = COLOURS["mark"], until: float | None = None,
               row: int = 0) -> None:
        """A vertical dashed line at x (a band to `until`, if later), labelled at the top of the plot."""
        if not 0 <= x <= self.x_max:
            return
        top, bottom = self.top, self.top + self.plot_h
        if until is not None and self.px(until) - self.px(x) >= 1:
            self.out.append(f'<rect x="{self.px(x):.1f}" y="{top}" width="{self.px(until) - self.px(x):.1f}" '
                            f'height="{self.plot_h}" fill="{colour}" fill-opacity="0.12"/>')
        self.out.append(
            f'<line class="marker" x1="{self.px(x):.1f}" x2="{self.px(x):.1f}" y1="{top}" y2="{bottom}" '
            f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 3"/>'
            f'<text x="{self.px(x) + 4:.1f}" y="{top + 14 + 14 * row}" font-size="12" fill="{colour}">'
            f"{html.escape(label)}</text>")

    def line(self, colour: str, points: Sequence[tuple[float, float]], *, dash: str = "",
             width: float = 1.8) -> None:
        """A polyline through the points, broken where y is not a number (a lone point is a dot)."""
        segments: list[list[str]] = [[]]
        for x, y in points:
            if _finite(y):
                segments[-1].append(f"{self.px(x):.1f},{self.py(y):.1f}")
            elif segments[-1]:
                segments.append([])
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        for seg in segments:
            if len(seg) == 1:
                x, y = seg[0].split(",")
                self.out.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{colour}"/>')
            elif seg:
                self.out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{width}"{dashed} '
                                f'stroke-linejoin="round" points="{" ".join(seg)}"/>')

    def svg(self) -> str:
        return "\n".join([*self.out, "</svg>"])


def line_chart(
    title: str,
    lines: Sequence[tuple[Any, ...]],
    *,
    x_max: float,
    y_label: str,
    marker_x: float | None = None,
    markers: Sequence[tuple[float, float | None, str]] = (),
    y_max: float | None = None,
    chart_id: str = "",
) -> str:
    """An SVG line chart over the run's time: lines are (label, colour, [(x, y), ...]) with an optional
    fourth item, a stroke-dasharray (DOTS: dots, no line), and fifth, a stroke width; points with NaN y
    are gaps. marker_x: the sold-out moment; markers: (x, until or None, label) reshards."""
    ys = [y for line in lines for _, y in line[2] if _finite(y)]
    frame = _Frame(title, x_max=x_max, y_max=y_max or nice_ceiling(max(ys, default=0.0)), y_label=y_label,
                   chart_id=chart_id)
    _marks(frame, marker_x, markers)
    for label, colour, points, *rest in lines:
        dash = rest[0] if rest else ""
        width = rest[1] if len(rest) > 1 else 2.5 if dash else 1.8
        if dash == DOTS:
            frame.out.extend(f'<circle class="dot" cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" '
                             f'fill="{colour}"/>' for x, y in points if _finite(y))
            frame.legend(label, colour, dash="1 4")
            continue
        frame.line(colour, points, dash=dash, width=width)
        frame.legend(label, colour, dash=dash)
    return frame.svg()


def stacked_chart(
    title: str,
    layers: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    x_max: float,
    y_label: str,
    marker_x: float | None = None,
    markers: Sequence[tuple[float, float | None, str]] = (),
    chart_id: str = "",
) -> str:
    """Areas stacked bottom to top; every layer has the same x's (a layer all zero gets no legend)."""
    xs = [x for x, _ in layers[0][2]] if layers else []
    totals = [0.0] * len(xs)
    stacked = []
    for label, colour, points in layers:
        below = list(totals)
        totals = [t + (y if _finite(y) else 0.0) for t, (_, y) in zip(totals, points, strict=True)]
        stacked.append((label, colour, below, list(totals), any(_finite(y) and y for _, y in points)))
    frame = _Frame(title, x_max=x_max, y_max=nice_ceiling(max(totals, default=0.0)), y_label=y_label,
                   chart_id=chart_id)
    for label, colour, below, above, shown in stacked:
        if not shown:
            continue
        upper = [f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in zip(xs, above, strict=True)]
        lower = [f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in zip(xs, below, strict=True)][::-1]
        frame.out.append(f'<polygon class="layer" fill="{colour}" fill-opacity="0.85" stroke="{colour}" '
                         f'points="{" ".join(upper + lower)}"/>')
        frame.legend(label, colour, area=True)
    _marks(frame, marker_x, markers)
    return frame.svg()


def _marks(frame: _Frame, sold_out: float | None, markers: Sequence[tuple[float, float | None, str]]) -> None:
    if _finite(sold_out):
        frame.marker(float(sold_out), "sold out (server)")  # type: ignore[arg-type]
    for n, (x, until, label) in enumerate(markers):
        frame.marker(x, label, colour=COLOURS["reshard"], until=until, row=1 + n % 3)


def distribution_chart(rows: Sequence[Mapping[str, Any]], chart_id: str = "distribution") -> str:
    """The percentile curve of the response time and of the call latency, on a log axis of 1/(1-q)."""
    def x_of(q: float) -> float:
        return math.log10(1.0 / (1.0 - q / 100.0))

    shown = [r for r in rows if r["percentile"] <= 99.99]
    ys = [r[k] for r in shown for k in ("response_ms", "latency_ms") if _finite(r.get(k))]
    frame = _Frame("latency distribution: the share of claims answered within a time",
                   x_max=DISTRIBUTION_TICKS[-1][1], y_max=nice_ceiling(max(ys, default=0.0)),
                   y_label="milliseconds", x_label="percentile (log scale: 90 %, 99 %, 99.9 % evenly apart)",
                   x_ticks=[(x, f"{q:g} %") for q, x in DISTRIBUTION_TICKS], chart_id=chart_id)
    for key, label, colour in (("response_ms", "response time (planned arrival to answer)", COLOURS["p99"]),
                               ("latency_ms", "call latency (one RPC)", COLOURS["call_p99"])):
        frame.line(colour, [(x_of(r["percentile"]), r[key] if r.get(key) is not None else math.nan)
                            for r in shown], width=2.2)
        frame.legend(label, colour)
    return frame.svg()


# ---------------------------------------------------------------- the page


def _row(cells: Sequence[Any], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def _ms(value: Any) -> str:
    return f"{value:,.2f}" if _finite(value) else "n/a"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "n/a" if value is None else str(value)


def _time_charts(report: Mapping[str, Any]) -> dict[str, str]:
    rows = report.get("per_slice") or []
    slice_s = float(report.get("slice_s") or 0.1)
    mid = slice_s / 2  # each slice's rate drawn at its middle

    def rate(key: str) -> list[tuple[float, float]]:
        return [(r["t_s"] + mid, r[key] / slice_s) for r in rows]

    def value(key: str) -> list[tuple[float, float]]:
        return [(r["t_s"] + mid, r[key] if r.get(key) is not None else math.nan) for r in rows]

    span = (rows[-1]["t_s"] + slice_s) if rows else 1.0
    reshards = [(r["at_s"], r["at_s"] + (r.get("took_s") or 0.0),
                 f"reshard -> {r['to_shards']}" + (" (failed)" if r.get("error") else ""))
                for r in report.get("reshards") or []]  # fmt: skip
    span = max([span, *(until for _, until, _ in reshards)])
    sold_out = report.get("time_to_sold_out_server_s")
    common: dict[str, Any] = {"x_max": span, "marker_x": sold_out, "markers": reshards}
    per = f"{slice_s * 1000:.0f} ms slices, as a rate per second"
    # Replies drawn wide under the sends: where the nodes keep up the two lines lie on each other.
    arrivals = [("planned arrivals (the offered load)", COLOURS["planned"], rate("planned"), "7 4"),
                ("replies", COLOURS["replies"], rate("replies"), "", 4.0),
                ("sent (first sends)", COLOURS["sent"], rate("sent"), "", 1.6)]
    if any(r["resent"] for r in rows):
        arrivals.append(("sent again (resends)", COLOURS["resent"], rate("resent")))
    inventory = int(report.get("inventory") or 0)
    stock = [(0.0, float(inventory))] + [(r["t_s"] + slice_s, float(r["stock_remaining"])) for r in rows]
    stock_lines: list[tuple[Any, ...]] = [("stock remaining: inventory - first grants received",
                                           COLOURS["stock"], stock)]
    samples = report.get("stock_samples") or []
    if samples:  # read from the server during the run: dots over the derived line
        stock_lines.append(("remaining as read from the server", COLOURS["sampled"],
                            [(s["t_s"], float(s["remaining"])) for s in samples], DOTS))
    stock_chart = line_chart(
        "stock remaining", stock_lines, x_max=span, y_label="vouchers", marker_x=sold_out, markers=reshards,
        y_max=nice_ceiling(max([inventory, *(s["remaining"] for s in samples)])), chart_id="stock-chart")
    return {
        "arrivals": line_chart(f"arrivals: planned against sent and answered ({per})", arrivals,
                               y_label="claims per second", chart_id="arrivals-chart", **common),
        "outcomes": stacked_chart(
            f"replies by outcome ({per}, stacked)",
            [(label, COLOURS[key], rate(key)) for key, label in OUTCOME_LAYERS],
            y_label="replies per second", chart_id="outcomes-chart", **common),
        "stock": stock_chart,
        "latency": line_chart(
            f"latency percentiles over time (of the replies in each {slice_s * 1000:.0f} ms slice)",
            [("response time p50", COLOURS["p50"], value("response_p50_ms")),
             ("response time p99", COLOURS["p99"], value("response_p99_ms")),
             ("call latency p50", COLOURS["call_p50"], value("latency_p50_ms"), "4 3"),
             ("call latency p99", COLOURS["call_p99"], value("latency_p99_ms"), "4 3")],
            y_label="milliseconds", chart_id="latency-chart", **common),
    }


def _reshard_table(report: Mapping[str, Any]) -> str:
    steps = report.get("reshards") or []
    if not steps:
        return "<p>No reshard during this run (<code>loadgen --reshard SHARDS@SECONDS</code>).</p>"
    head = _row(["at (s since start)", "shards", "took (ms)", "claims frozen (ms)", "users moved",
                 "records moved", "stock moved", "result"], "th")
    body = "".join(
        _row([f"{s['at_s']:.2f}", f"{_count(s.get('from_shards'))} -> {s['to_shards']}",
              _count(round(s["took_s"] * 1000)) if s.get("took_s") else "n/a", _count(s.get("frozen_ms")),
              _count(s.get("moved_users")), _count(s.get("moved_records")), _count(s.get("moved_stock")),
              f"failed: {s['error']}" if s.get("error") else "done"])
        for s in steps)  # fmt: skip
    return f'<table id="reshard-table">{head}{body}</table>'


CAPTIONS = {
    "arrivals": "The dashed line is the plan: when the claims were due. Sends under it mean the "
                "generator fell behind (the figures then describe the generator more than the nodes); "
                "replies under the sends mean the nodes were slower than the offered load.",
    "outcomes": "Every reply, by what it said. Green below is a voucher given out; the light green above "
                "it is a replayed request answered with the voucher it already got (not a new voucher).",
    "stock": "Vouchers left: the inventory minus the first grants the load generator received (the "
             "server's own figure at the end is in the checks). It reaches 0 at the sold-out line.",
    "latency": "Response time runs from a claim's planned arrival to its answer (it includes any wait in "
               "the generator); call latency is one RPC. p99: 1 in 100 replies took longer.",
    "reshards": "Reshards called during the run (purple bands on the charts above: from the call to "
                "its end).",
    "distribution": "Read across: at 99 %, the line's height is the time 99 claims in 100 were answered "
                    "within.",
}  # fmt: skip


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for a report as built by claimcore.loadtest.report.build_report."""
    charts = _time_charts(report)
    sold_out = report.get("time_to_sold_out_server_s")
    title = f"{report.get('title', 'claimcore')}: {report.get('campaign', '')}"
    verdict = "PASS" if report.get("ok") else "FAIL (" + ", ".join(report.get("failed", [])) + ")"
    outcomes = dict(report.get("outcomes", {}))
    outcome_rows = "".join(
        _row([k, granted_text(report) if k == "GRANTED" else f"{v:,}"]) for k, v in outcomes.items())
    lat_rows = "".join(
        _row([label] + [_ms(report.get(key, {}).get(name)) for name, _ in QUANTILES]
             + [_ms(report.get(key, {}).get("max"))])
        for label, key in (("response time (from planned arrival)", "response_ms"),
                           ("call latency (one RPC)", "latency_ms"), ("send lateness", "lateness_ms"))
    )  # fmt: skip
    checks = "".join(
        f'<tr class="{"pass" if c["ok"] else "fail"}"><td>{"PASS" if c["ok"] else "FAIL"}</td>'
        f'<td>{html.escape(c["name"])}</td><td>{html.escape(c["detail"])}</td></tr>'
        for c in report.get("checks", []))  # fmt: skip
    totals = report.get("flow_totals") or {}
    facts = [
        ("inventory / shards", f"{report.get('inventory', 0):,} / {report.get('shards', '')}"),
        ("users", f"{report.get('users', 0):,}"),
        ("claims planned / sent / answered",
         f"{_count(totals.get('planned'))} / {_count(totals.get('sent'))} / {_count(totals.get('replies'))}"),
        ("vouchers granted (server)", f"{report.get('granted', 0):,}"),
        ("time to sold out (server)", f"{sold_out:.3f} s" if _finite(sold_out) else "n/a"),
        ("claims/s", f"{report['claims_per_s']:,.0f}" if _finite(report.get("claims_per_s")) else "n/a"),
        ("wall", f"{report['burst_wall_s']:.3f} s" if _finite(report.get("burst_wall_s")) else "n/a"),
        ("front node CPU", front_cpu_text(report)),
        ("answered without reaching a node", local_answers_text(report)),
    ]
    head = "".join(f"<th>{name}</th>" for name, _ in QUANTILES)
    behind = report.get("behind_plan")
    distribution = (distribution_chart(report.get("latency_distribution") or [])
                    + f"<table><tr><th>ms</th>{head}<th>max</th></tr>{lat_rows}</table>")

    def section(key: str, heading: str, body: str) -> str:
        return (f'<section id="{key}"><h2>{html.escape(heading)}</h2>'
                f'<p class="caption">{html.escape(CAPTIONS[key])}</p>{body}</section>')

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1140px; padding: 0 16px;
  color: #222; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin: 28px 0 2px; }}
.caption {{ color: #555; font-size: 13px; margin: 2px 0 6px; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 8px 24px 16px 0; display: inline-table; vertical-align: top; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; text-align: left; }}
th {{ background: #f4f4f4; }}
.verdict {{ font-size: 20px; font-weight: bold; padding: 6px 12px; display: inline-block; color: #fff; }}
.verdict.pass {{ background: #109618; }} .verdict.fail {{ background: #dc3912; }}
tr.pass td:first-child {{ color: #109618; font-weight: bold; }}
tr.fail td:first-child {{ color: #dc3912; font-weight: bold; }}
#behind-plan {{ border-left: 4px solid #dc3912; background: #fdecea; padding: 8px 12px; color: #a00; }}
svg {{ display: block; margin: 4px 0 8px; }}
</style></head><body>
<header id="verdict">
<h1>{html.escape(title)}</h1>
<div class="verdict {'pass' if report.get('ok') else 'fail'}">{html.escape(verdict)}</div>
{f'<p id="behind-plan"><strong>Warning:</strong> {html.escape(behind)}</p>' if behind else ""}
<div><table>{"".join(_row(f) for f in facts)}</table>
<table><tr><th>outcome</th><th>replies</th></tr>{outcome_rows}</table></div>
</header>
{section("arrivals", "1. Arrivals: planned against achieved", charts["arrivals"])}
{section("outcomes", "2. Replies by outcome", charts["outcomes"])}
{section("stock", "3. Stock remaining", charts["stock"])}
{section("latency", "4. Latency over time", charts["latency"])}
{section("reshards", "5. Reshards", _reshard_table(report))}
{section("distribution", "6. Latency distribution", distribution)}
<section id="checks"><h2>7. Checks</h2>
<table><tr><th></th><th>check</th><th>detail</th></tr>{checks}</table></section>
</body></html>
"""
