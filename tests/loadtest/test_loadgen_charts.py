"""Tests of the HTML picture: self-contained, escaped, and drawn from the report's series."""

from __future__ import annotations

import math
import re
from xml.etree import ElementTree

import pytest

from claimcore.loadtest.charts import line_chart, nice_ceiling, render_html


@pytest.mark.parametrize(
    "value,ceiling",
    [(0, 1.0), (-3, 1.0), (math.nan, 1.0), (1, 1), (1.2, 2), (2.2, 2.5), (3, 5), (7, 10), (0.03, 0.05),
     (12_345, 20_000)],
)  # fmt: skip
def test_nice_ceiling(value, ceiling):
    assert nice_ceiling(value) == pytest.approx(ceiling)


def test_line_chart_is_valid_svg_and_breaks_lines_at_gaps():
    svg = line_chart(
        "t <&>",
        [("a", "#000", [(0, 1.0), (1, 2.0), (2, math.nan), (3, 4.0), (4, 3.0)]),
         ("lonely", "#111", [(0, math.nan), (1, 5.0)])],
        x_max=4, y_label="per second", marker_x=2.5,
    )  # fmt: skip
    root = ElementTree.fromstring(svg)  # well-formed, title escaped
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 2  # one line, split at the gap
    assert len(root.findall(f"{ns}circle")) == 1  # a single point is a dot
    assert "sold out" in svg and "t &lt;&amp;&gt;" in svg


def sample_report(per_slice: list[dict], **extra) -> dict:
    return {
        "title": "claimcore loadgen",
        "campaign": "c<1>",
        "ok": False,
        "failed": ["exact"],
        "inventory": 10,
        "shards": 2,
        "users": 20,
        "granted": 9,
        "time_to_sold_out_server_s": 0.15,
        "claims_per_s": 123.0,
        "burst_wall_s": 0.3,
        "outcomes": {"GRANTED": 11, "SOLD_OUT": 11},
        "flow_totals": {"planned": 22, "sent": 22, "resent": 0, "replies": 22, "granted_first": 9,
                        "granted_replays": 2, "already_claimed": 0, "sold_out": 11, "other": 0},
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p99.9": 4.0, "max": 5.0},
        "response_ms": {"p50": None},
        "lateness_ms": {},
        "slice_s": 0.1,
        "per_slice": per_slice,
        "latency_distribution": [{"percentile": q, "latency_ms": q / 10, "response_ms": q / 5}
                                 for q in (0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0)],
        "checks": [{"name": "exact", "ok": False, "detail": "client 9 <> 10"}],
        **extra,
    }  # fmt: skip


def slice_row(t_s: float, planned: int, sent: int, first: int, replays: int, sold_out: int, stock: int,
              p50: float | None, p99: float | None) -> dict:
    return {"t_s": t_s, "planned": planned, "sent": sent, "resent": 0,
            "replies": first + replays + sold_out, "granted_first": first, "granted_replays": replays,
            "already_claimed": 0, "sold_out": sold_out, "other": 0, "stock_remaining": stock,
            "latency_p50_ms": p50, "latency_p99_ms": p99, "response_p50_ms": p50, "response_p99_ms": p99}


SLICES = [slice_row(0.0, 12, 10, 5, 0, 0, 5, 1.0, 3.0),
          slice_row(0.1, 10, 2, 0, 0, 0, 5, None, None),  # an empty slice, as JSON has it
          slice_row(0.2, 0, 10, 4, 2, 11, 1, 2.0, 4.0)]  # fmt: skip
RESHARDS = [{"at_s": 0.05, "from_shards": 2, "to_shards": 4, "took_s": 0.1, "frozen_ms": 3,
             "moved_users": 5, "moved_records": 6, "moved_stock": 2, "error": None},
            {"at_s": 0.2, "from_shards": None, "to_shards": 1, "took_s": 0.0, "frozen_ms": None,
             "moved_users": None, "moved_records": None, "moved_stock": None, "error": "ABORTED <x>"}]
SVG = "{http://www.w3.org/2000/svg}"
SECTIONS = ("verdict", "arrivals", "outcomes", "stock", "latency", "reshards", "distribution", "checks")


def svgs(page: str) -> dict[str, ElementTree.Element]:
    """Each chart of the page by its id, parsed (so: well-formed)."""
    found = re.findall(r"<svg .*?</svg>", page, re.S)
    parsed = [ElementTree.fromstring(svg) for svg in found]
    return {root.get("id"): root for root in parsed}


def test_page_is_self_contained_and_in_launch_order():
    page = render_html(sample_report(SLICES, reshards=RESHARDS, behind_plan="fell <behind>"))
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|src=|href=|@import|url\(", page)  # nothing fetched from elsewhere
    assert "c&lt;1&gt;" in page and "client 9 &lt;&gt; 10" in page and "fell &lt;behind&gt;" in page
    assert "FAIL (exact)" in page and 'id="behind-plan"' in page
    places = [page.index(f'id="{name}"') for name in SECTIONS]
    assert places == sorted(places)
    assert set(svgs(page)) == {"arrivals-chart", "outcomes-chart", "stock-chart", "latency-chart",
                               "distribution"}


def test_the_planned_line_is_drawn_dashed_beside_sends_and_replies():
    chart = svgs(render_html(sample_report(SLICES)))["arrivals-chart"]
    lines = chart.findall(f"{SVG}polyline")
    dashed = [line for line in lines if line.get("stroke-dasharray")]
    assert len(dashed) == 1 and len(lines) == 3  # planned; sent and replies
    # Planned 12 then 10 per 100 ms: 120 and 100 per second, above the sends (100, 20).
    ys = [float(p.split(",")[1]) for p in dashed[0].get("points").split()]
    sent = [float(p.split(",")[1]) for p in lines[2].get("points").split()]
    assert ys[1] < sent[1]  # higher on the page: more planned than sent in the second slice
    legend = [t.text for t in chart.iter(f"{SVG}text")]
    assert "planned arrivals (the offered load)" in legend and "sent (first sends)" in legend


def test_replies_by_outcome_show_replays_of_a_grant_apart():
    page = render_html(sample_report(SLICES))
    chart = svgs(page)["outcomes-chart"]
    assert len(chart.findall(f"{SVG}polygon")) == 3  # first grants, replays, SOLD_OUT: layers with replies
    legend = [t.text for t in chart.iter(f"{SVG}text")]
    assert "GRANTED, first grants" in legend and "GRANTED, replays of a grant (same voucher)" in legend
    assert "ALREADY_CLAIMED" not in legend  # no such reply: no layer, no legend
    assert "9 first grants (+2 replays of a grant, not new vouchers)" in page


def test_every_time_chart_marks_sold_out_and_the_reshards_and_the_table_lists_them():
    page = render_html(sample_report(SLICES, reshards=RESHARDS))
    charts = svgs(page)
    for name in ("arrivals-chart", "outcomes-chart", "stock-chart", "latency-chart"):
        labels = [t.text for t in charts[name].iter(f"{SVG}text")]
        assert "sold out (server)" in labels and "reshard -> 4" in labels, name
        assert "reshard -> 1 (failed)" in labels, name
        assert len([m for m in charts[name].iter(f"{SVG}line") if m.get("class") == "marker"]) == 3
    table = page[page.index('id="reshard-table"'):]
    assert "2 -&gt; 4" in table and "100" in table and "failed: ABORTED &lt;x&gt;" in table


def test_stock_line_falls_from_the_inventory_and_samples_are_dots():
    samples = [{"t_s": 0.1, "remaining": 6}, {"t_s": 0.3, "remaining": 0}]
    chart = svgs(render_html(sample_report(SLICES, stock_samples=samples)))["stock-chart"]
    (line,) = chart.findall(f"{SVG}polyline")
    ys = [float(p.split(",")[1]) for p in line.get("points").split()]
    assert len(ys) == 4 and ys == sorted(ys)  # 10, 5, 5, 1 left: never rising (y grows downwards)
    assert len([c for c in chart.iter(f"{SVG}circle") if c.get("class") == "dot"]) == 2


def test_page_of_a_run_without_slices():
    page = render_html(sample_report([]))
    assert set(svgs(page)) == {"arrivals-chart", "outcomes-chart", "stock-chart", "latency-chart",
                               "distribution"}
    assert "No reshard during this run" in page
