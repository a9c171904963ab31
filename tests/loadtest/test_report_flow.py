"""The report's offered-against-achieved figures, from synthetic worker results (no server): planned
arrivals, sends and replies by outcome per slice and per second, the stock remaining, the latency
distribution and the encoded histograms; and the text report's GRANTED row and width."""

from __future__ import annotations

import json

import pytest

from claimcore.loadtest.histogram import LatencyHistogram
from claimcore.loadtest.report import (
    FLOW_COLUMNS,
    REPLY_COLUMNS,
    STOCK_DERIVED,
    build_report,
    merge_worker_results,
)
from claimcore.loadtest.report_text import format_report, report_json, terminal_width
from claimcore.v1 import claims_pb2

OUTCOME_OF = {"granted_first": claims_pb2.OUTCOME_GRANTED, "granted_replays": claims_pb2.OUTCOME_GRANTED,
              "already_claimed": claims_pb2.OUTCOME_ALREADY_CLAIMED, "sold_out": claims_pb2.OUTCOME_SOLD_OUT,
              "other": claims_pb2.OUTCOME_RATE_LIMITED}  # fmt: skip


def hist(values_ms: list[float], digits: int = 2) -> LatencyHistogram:
    h = LatencyHistogram(digits)
    for value in values_ms:
        h.record(round(value * 1000))
    return h


def worker(index: int, flow: dict[int, list[int]], *,
           responses: dict[int, list[float]] | None = None) -> dict:
    """A worker's result as driver.py returns it, its outcomes and ticks made from its flow rows."""
    outcomes: dict[int, int] = {}
    ticks: dict[int, list[int]] = {}
    latencies: list[float] = []
    for key, row in flow.items():
        counts = dict(zip(FLOW_COLUMNS, row, strict=True))
        for column in REPLY_COLUMNS:
            outcomes[OUTCOME_OF[column]] = outcomes.get(OUTCOME_OF[column], 0) + counts[column]
        replies = sum(counts[c] for c in REPLY_COLUMNS)
        ticks[key * 10] = [replies, counts["granted_first"], counts["sold_out"]]
        latencies += [2.0 + key] * replies
    slices = {key: hist([2.0 + key] * sum(row[3:])) for key, row in flow.items() if sum(row[3:])}
    return {
        "index": index, "sent": sum(r[1] + r[2] for r in flow.values()),
        "calls": sum(r[1] + r[2] for r in flow.values()), "outcomes": outcomes, "transient": {},
        "errors": {}, "error_examples": [], "latency": hist(latencies, 3).state(),
        "response": hist(latencies, 3).state(), "lateness": LatencyHistogram().state(),
        "tick_s": 0.01, "ticks": ticks, "slice_s": 0.1, "slices": {k: h.state() for k, h in slices.items()},
        "response_slices": {k: hist(v).state() for k, v in (responses or {}).items()},
        "flow": flow, "pairs": [], "settled": 0, "unsettled": 0, "retries": 0, "retry_violations": [],
        "double_taps": 0, "double_tap_unexpected": [], "voucher_anomalies": [], "rate_limited_resends": 0,
        "skipped_follow_ups": 0, "first_sold_out": None, "last_granted": None, "start": 1000.0,
        "end": 1001.5,
    }  # fmt: skip


#       planned sent resent first replays already sold_out other
A = {0: [5, 4, 1, 2, 0, 0, 0, 1],
     1: [0, 1, 0, 1, 1, 1, 2, 0],
     12: [0, 0, 0, 0, 1, 0, 1, 0]}  # fmt: skip
B = {0: [3, 3, 0, 1, 0, 0, 0, 0],
     3: [2, 2, 0, 0, 0, 0, 2, 0]}  # fmt: skip
INVENTORY = 4


def report_of(results: list[dict], **extra) -> dict:
    merged = merge_worker_results(results)
    pairs = [(f"u{n}", f"v{n}") for n in range(INVENTORY)]
    merged["pairs"] = pairs
    return build_report(campaign_id="flow-test", inventory=INVENTORY, shards=1, users=10, processes=2,
                        concurrency=4, merged=merged, server={"granted": INVENTORY, "remaining": 0},
                        **extra)  # fmt: skip


def test_merge_adds_the_workers_flow_slice_by_slice():
    merged = merge_worker_results([worker(0, A), worker(1, B)])
    assert merged["flow"] == {0: [8, 7, 1, 3, 0, 0, 0, 1], 1: A[1], 3: B[3], 12: A[12]}


def test_per_slice_and_per_second_add_up_to_the_totals():
    report = report_of([worker(0, A), worker(1, B)])
    rows, totals = report["per_slice"], report["flow_totals"]
    assert [row["t_s"] for row in rows] == pytest.approx([k / 10 for k in range(13)])  # no slice left out
    for column in ("planned", "sent", "resent", "replies", *REPLY_COLUMNS):
        assert sum(row[column] for row in rows) == totals[column] == sum(
            row[column] for row in report["per_second"]), column
    assert totals["planned"] == 10 and totals["sent"] == 10 and totals["resent"] == 1
    assert totals["replies"] == report["replies"] == sum(report["outcomes"].values()) == 13
    assert totals["granted_first"] + totals["granted_replays"] == report["outcomes"]["GRANTED"] == 6
    assert totals["granted_replays"] == 2
    assert rows[5] == {**rows[5], "planned": 0, "sent": 0, "replies": 0}  # an empty slice counts 0
    # Stock: the inventory less the first grants so far; replays of a grant take none.
    assert [row["stock_remaining"] for row in rows[:3]] == [1, 0, 0]
    assert rows[-1]["stock_remaining"] == INVENTORY - totals["granted_first"] == 0
    assert report["stock_remaining_source"] == STOCK_DERIVED
    # Slices 0-9 are second 0, slices 10-12 second 1.
    assert [s["second"] for s in report["per_second"]] == [0, 1]
    assert report["per_second"][1]["granted_replays"] == 1 and report["per_second"][1]["sold_out"] == 1


def test_per_slice_latency_and_response_percentiles():
    report = report_of([worker(0, A, responses={0: [5.0, 7.0], 12: [40.0]}), worker(1, B)])
    rows = report["per_slice"]
    assert rows[0]["latency_p50_ms"] == pytest.approx(2.0, rel=0.05)
    assert rows[12]["latency_p99_ms"] == pytest.approx(14.0, rel=0.05)
    assert rows[0]["response_p50_ms"] == pytest.approx(5.0, rel=0.05)
    assert rows[0]["response_p99_ms"] == pytest.approx(7.0, rel=0.05)
    assert rows[12]["response_p99_ms"] == pytest.approx(40.0, rel=0.05)
    data = json.loads(report_json(report))
    assert data["per_slice"][5]["response_p50_ms"] is None  # no reply in it: null, not NaN


def test_latency_distribution_and_the_encoded_histograms():
    report = report_of([worker(0, A), worker(1, B)])
    curve = report["latency_distribution"]
    assert [p["percentile"] for p in curve][0] == 0.0 and curve[-1]["percentile"] == 100.0
    latencies = [p["latency_ms"] for p in curve]
    assert latencies == sorted(latencies) and latencies[-1] == pytest.approx(14.0, rel=0.01)
    data = json.loads(report_json(report))
    assert set(data["histograms"]) == {"latency", "response", "lateness"}
    decoded = LatencyHistogram.decode(data["histograms"]["latency"])
    assert decoded.count == report["latency_ms"]["count"] == 13


def test_stock_samples_are_kept_as_read():
    report = report_of([worker(0, A)], stock_samples=[(0.5, 3), (1.0, 0)])
    assert report["stock_samples"] == [{"t_s": 0.5, "remaining": 3}, {"t_s": 1.0, "remaining": 0}]


def test_reshards_are_timed_from_the_load_start():
    run = {"reshards": [{"at_s": 3.0, "at_unix": 1000.8, "from_shards": 1, "to_shards": 4, "took_ms": 250,
                         "frozen_ms": 12, "moved_users": 7, "moved_records": 9, "moved_stock": 2},
                        {"at_s": 1.2, "to_shards": 2, "error": "FAILED_PRECONDITION: paused"}]}
    report = report_of([worker(0, A)], run=run)
    first, failed = report["reshards"]
    assert first["at_s"] == pytest.approx(0.8) and first["took_s"] == 0.25 and first["error"] is None
    assert failed["at_s"] == 1.2 and failed["error"].startswith("FAILED_PRECONDITION")


# ---------------------------------------------------------------- the text report


def test_granted_row_shows_replays_of_a_grant_apart():
    text = format_report(report_of([worker(0, A), worker(1, B)]), width=None)
    assert " 4 first grants (+2 replays of a grant, not new vouchers)" in text
    assert "planned arrivals" in text and "10  (sent 10 once and 1 again; replies 13" in text


def test_a_report_without_per_slice_counts_still_reads():
    results = [worker(0, A)]
    for r in results:
        del r["flow"], r["response_slices"]  # a worker from before the flow counts
    report = report_of(results)
    text = format_report(report, width=None)
    assert "GRANTED" in text and "first grants" not in text and "n/a (no per-slice counts" in text
    assert "per second:" not in text


def test_the_per_second_table():
    lines = format_report(report_of([worker(0, A), worker(1, B)]), width=None).splitlines()
    head = next(n for n, line in enumerate(lines) if line.split()[:3] == ["s", "planned", "sent"])
    assert lines[head].split() == ["s", "planned", "sent", "replies", "granted", "sold", "out", "stock",
                                   "left"]
    assert lines[head + 1].split() == ["0", "10", "10", "11", "4", "4", "0"]
    assert lines[head + 2].split() == ["1", "0", "0", "2", "0", "1", "0"]


def test_a_long_run_is_shown_in_steps_of_several_seconds():
    flow = {k * 10: [1, 1, 0, 0, 0, 0, 1, 0] for k in range(45)}  # 45 seconds, one claim a second
    text = format_report(report_of([worker(0, flow)]), width=None)
    table = text[text.index("s (from-to)"):].splitlines()
    assert table[1].split()[:4] == ["0-3", "3", "3", "3"]
    assert table[15].split()[:4] == ["42-45", "3", "3", "3"] and table[16].startswith("---")


@pytest.mark.parametrize("width", [60, 80, 120])
def test_lines_fit_the_terminal(width):
    report = report_of([worker(0, A), worker(1, B)])
    report["checks"].append({"name": "generator kept up", "ok": False, "detail": "p99 send lateness " * 9})
    report.update(ok=False, failed=["generator kept up"])
    report["behind_plan"] = "the load generator fell behind its plan: " + "a long explanation " * 12
    text = format_report(report, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "4 first grants" in text and "WARNING: the load generator" in text
    assert "RESULT: FAIL" in text and "planned" in text


def test_without_a_terminal_lines_are_not_wrapped(monkeypatch):
    report = report_of([worker(0, A), worker(1, B)])
    monkeypatch.delenv("COLUMNS", raising=False)
    assert terminal_width() is None  # pytest captures stdout: not a terminal
    unwrapped = format_report(report)
    assert "4 first grants (+2 replays of a grant, not new vouchers)" in unwrapped
    monkeypatch.setenv("COLUMNS", "64")
    assert terminal_width() == 64
    assert max(len(line) for line in format_report(report).splitlines()) <= 64
