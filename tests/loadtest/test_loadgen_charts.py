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


def sample_report(series: list[dict]) -> dict:
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
        "outcomes": {"GRANTED": 9, "SOLD_OUT": 11},
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p99.9": 4.0, "max": 5.0},
        "response_ms": {"p50": None},
        "lateness_ms": {},
        "series": series,
        "checks": [{"name": "exact", "ok": False, "detail": "client 9 <> 10"}],
    }


def test_page_is_self_contained_and_shows_the_run():
    series = [
        {"t_s": 0.0, "claims_per_s": 100.0, "granted_per_s": 90.0, "sold_out_per_s": 0.0,
         "p50_ms": 1.0, "p99_ms": 3.0},
        {"t_s": 0.1, "claims_per_s": 0.0, "granted_per_s": 0.0, "sold_out_per_s": 0.0,
         "p50_ms": None, "p99_ms": None},  # an empty slice, as JSON has it
        {"t_s": 0.2, "claims_per_s": 110.0, "granted_per_s": 0.0, "sold_out_per_s": 110.0,
         "p50_ms": 2.0, "p99_ms": 4.0},
    ]  # fmt: skip
    page = render_html(sample_report(series))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2
    assert not re.search(r"<script|<link|src=|href=", page)  # nothing fetched from elsewhere
    assert "c&lt;1&gt;" in page and "client 9 &lt;&gt; 10" in page
    assert "FAIL (exact)" in page and "sold out" in page


def test_page_of_a_run_without_series():
    page = render_html(sample_report([]))
    assert page.count("<svg") == 2
