"""Tests of the report maths over collected run results: no server needed."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from claimcore.loadtest.histogram import LatencyHistogram
from claimcore.loadtest.report import (
    build_report,
    evaluate_checks,
    find_duplicates,
    latency_summary,
    merge_worker_results,
    oversell,
    per_second,
    percentile,
    phase_rates,
    replies_before,
    throughput_series,
)
from claimcore.loadtest.report_text import format_report, report_json
from claimcore.v1 import claims_pb2

# ------------------------------------------------------------------- helpers


def histogram(values_ms: list[float], digits: int = 3) -> LatencyHistogram:
    hist = LatencyHistogram(digits)
    for value in values_ms:
        hist.record(round(value * 1000))
    return hist


def worker_result(
    index: int = 0,
    *,
    pairs: list[tuple[str, str]] | None = None,
    outcomes: dict[int, int] | None = None,
    latencies: list[float] | None = None,
    ticks: dict[int, list[int]] | None = None,
    slices: dict[int, list[float]] | None = None,
    retry_violations: list[str] | None = None,
    start: float = 1000.0,
    end: float = 1002.0,
    first_sold_out: float | None = 1000.5,
    last_granted: float | None = 1000.4,
) -> dict:
    """A worker's compact result, in the shape run_load returns (latencies in ms)."""
    return {
        "index": index,
        "sent": sum((outcomes or {}).values()),
        "calls": sum((outcomes or {}).values()),
        "outcomes": dict(outcomes or {}),
        "transient": {},
        "errors": {},
        "error_examples": [],
        "latency": histogram(latencies or []).state(),
        "response": histogram(latencies or []).state(),
        "lateness": LatencyHistogram().state(),
        "tick_s": 0.01,
        "ticks": dict(ticks or {}),
        "slice_s": 0.1,
        "slices": {k: histogram(v, 2).state() for k, v in (slices or {}).items()},
        "pairs": list(pairs or []),
        "settled": 0,
        "unsettled": 0,
        "retries": 0,
        "retry_violations": list(retry_violations or []),
        "double_taps": 0,
        "double_tap_unexpected": [],
        "voucher_anomalies": [],
        "rate_limited_resends": 0,
        "skipped_follow_ups": 0,
        "first_sold_out": first_sold_out,
        "last_granted": last_granted,
        "start": start,
        "end": end,
    }


def report_for(
    results: list[dict], *, inventory: int, users: int, server_granted: int, remaining: int | None = None
) -> dict:
    merged = merge_worker_results(results)
    return build_report(
        campaign_id="demo-test",
        inventory=inventory,
        shards=2,
        users=users,
        processes=len(results),
        concurrency=4,
        merged=merged,
        server={
            "granted": server_granted,
            "remaining": max(0, inventory - server_granted) if remaining is None else remaining,
            "sold_out_at_ms": 1_000_800,
            "shards": [],
        },
    )


# ------------------------------------------------------------ percentiles


def test_percentile_of_known_list():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1


def test_percentile_small_and_empty_lists():
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_reads_the_histogram_in_milliseconds():
    summary = latency_summary(histogram([0.5, 0.1, 0.3, 0.2, 0.4]))  # exact below 2.048 ms
    assert summary["p50"] == 0.3
    assert summary["p99.9"] == 0.5
    assert summary["max"] == 0.5
    assert summary["mean"] == pytest.approx(0.3)
    assert summary["count"] == 5
    assert math.isnan(latency_summary(LatencyHistogram())["p99"])


# ------------------------------------------------------------ duplicates


def test_repeated_same_pair_is_not_a_duplicate():
    pairs = [("u1", "v1"), ("u1", "v1"), ("u2", "v2"), ("u1", "v1")]
    dup_users, dup_vouchers, distinct = find_duplicates(pairs)
    assert dup_users == {} and dup_vouchers == {}
    assert distinct == 2


def test_user_holding_two_vouchers_is_detected():
    dup_users, dup_vouchers, distinct = find_duplicates(
        [("u1", "v1"), ("u2", "v2"), ("u1", "v3")]
    )
    assert dup_users == {"u1": {"v1", "v3"}}
    assert dup_vouchers == {}
    assert distinct == 3


def test_voucher_seen_for_two_users_is_detected():
    dup_users, dup_vouchers, _ = find_duplicates([("u1", "v1"), ("u2", "v1")])
    assert dup_users == {}
    assert dup_vouchers == {"v1": {"u1", "u2"}}


# ---------------------------------------------------------------- checks


def checks_by_name(**overrides):
    figures = dict(
        inventory=100,
        users=1000,
        client_distinct=100,
        server_granted=100,
        duplicate_users=0,
        duplicate_vouchers=0,
        retry_violations=0,
    )
    figures.update(overrides)
    return {c.name: c.ok for c in evaluate_checks(**figures)}


def test_all_checks_pass_on_a_clean_run():
    assert all(checks_by_name().values())
    assert all(checks_by_name(server_remaining=0, verified=10).values())


def test_oversell_is_detected():
    assert oversell(103, 100) == 3
    assert oversell(90, 100) == 0
    checks = checks_by_name(server_granted=101, client_distinct=101)
    assert checks["oversell"] is False
    assert checks["exact"] is False
    # the client may see more than the server counts: still an oversell
    assert checks_by_name(client_distinct=101)["oversell"] is False


def test_exact_needs_client_server_and_expected_to_agree():
    assert checks_by_name(client_distinct=99)["exact"] is False  # a lost grant
    assert checks_by_name(server_granted=99, client_distinct=99)["exact"] is False  # undersold
    # fewer users than vouchers: everyone gets one
    assert checks_by_name(users=40, client_distinct=40, server_granted=40)["exact"] is True
    assert checks_by_name(users=40, client_distinct=39, server_granted=39)["exact"] is False


def test_duplicates_and_retry_violations_fail():
    assert checks_by_name(duplicate_users=1)["duplicates"] is False
    assert checks_by_name(duplicate_vouchers=1)["duplicates"] is False
    assert checks_by_name(retry_violations=2)["retry consistency"] is False


def test_stock_must_add_up_on_the_server():
    assert "stock conserved" not in checks_by_name()
    assert checks_by_name(server_remaining=0)["stock conserved"] is True
    assert checks_by_name(server_remaining=3)["stock conserved"] is False  # stock appeared
    assert checks_by_name(users=40, client_distinct=40, server_granted=40, server_remaining=59)[
        "stock conserved"
    ] is False  # stock vanished


def test_sampled_lost_vouchers_fail_only_when_sampled():
    assert "vouchers recorded" not in checks_by_name()
    assert checks_by_name(verified=10, lost_vouchers=0)["vouchers recorded"] is True
    assert checks_by_name(verified=10, lost_vouchers=1)["vouchers recorded"] is False


# ---------------------------------------------------------------- report


def clean_results() -> list[dict]:
    granted = claims_pb2.OUTCOME_GRANTED
    sold_out = claims_pb2.OUTCOME_SOLD_OUT
    return [
        worker_result(
            0,
            pairs=[("u000000", "v0"), ("u000001", "v1"), ("u000001", "v1")],
            outcomes={granted: 2, claims_pb2.OUTCOME_ALREADY_CLAIMED: 1, sold_out: 1},
            latencies=[0.1, 0.2, 0.3, 0.4],
            ticks={10: [2, 2, 0], 70: [2, 0, 1]},
            slices={1: [0.1, 0.2], 7: [0.3, 0.4]},
            start=1000.0,
            end=1001.5,
            first_sold_out=1000.7,
            last_granted=1000.2,
        ),
        worker_result(
            1,
            pairs=[("u000002", "v2")],
            outcomes={granted: 1, sold_out: 3},
            latencies=[0.5, 0.6, 0.7, 0.8],
            ticks={10: [1, 1, 0], 150: [3, 0, 3]},
            slices={1: [0.5], 15: [0.6, 0.7, 0.8]},
            start=1000.0,
            end=1002.0,
            first_sold_out=1000.6,
            last_granted=1000.1,
        ),
    ]


def test_report_of_a_clean_run_passes():
    report = report_for(clean_results(), inventory=3, users=6, server_granted=3)
    assert report["ok"] is True and report["failed"] == []
    assert report["distinct_vouchers"] == 3
    assert report["granted"] == 3
    assert report["duplicates"] == 0 and report["oversell"] == 0 and report["exact"] is True
    assert report["outcomes"] == {"GRANTED": 3, "ALREADY_CLAIMED": 1, "SOLD_OUT": 4}
    assert report["replies"] == 8
    assert report["burst_wall_s"] == pytest.approx(2.0)
    assert report["claims_per_s"] == pytest.approx(4.0)
    assert report["time_to_first_sold_out_reply_s"] == pytest.approx(0.6)
    assert report["time_to_sold_out_server_s"] == pytest.approx(0.8)
    assert report["time_to_last_grant_reply_s"] == pytest.approx(0.2)
    assert report["latency_ms"]["p50"] == 0.4 and report["latency_ms"]["max"] == 0.8
    assert report["replies_per_second"] == [5, 3]  # ticks 10 and 70 in second 0, tick 150 in second 1
    assert [row["t_s"] for row in report["series"]] == pytest.approx([k / 10 for k in range(16)])
    assert "stock conserved" not in report["failed"]
    text = format_report(report)
    assert text.startswith("claimcore demo: demo-test")
    assert "RESULT: PASS" in text
    for label in ("GRANTED", "SOLD_OUT", "duplicates", "oversell", "exact", "p99.9", "claims/s"):
        assert label in text


def test_report_fails_on_a_duplicate_across_workers():
    results = clean_results()
    results[1]["pairs"].append(("u000000", "v9"))  # u000000 got a second voucher elsewhere
    report = report_for(results, inventory=10, users=6, server_granted=4)
    assert report["ok"] is False
    assert "duplicates" in report["failed"]
    assert report["duplicate_users"] == 1
    assert "u000000" in report["duplicate_examples"]["users"]
    text = format_report(report)
    assert "FAILED duplicates" in text and "RESULT: FAIL" in text


def test_report_fails_on_oversell_and_retry_violation():
    results = clean_results()
    results[0]["retry_violations"].append("u000000 r: first GRANTED v0, replay SOLD_OUT")
    report = report_for(results, inventory=2, users=6, server_granted=3, remaining=0)
    assert report["oversell"] == 1
    assert set(report["failed"]) >= {"oversell", "exact", "retry consistency", "stock conserved"}


def test_report_fails_on_a_shortfall():
    # Stock left although more users than vouchers claimed: stranded stock.
    report = report_for(clean_results(), inventory=5, users=6, server_granted=3)
    assert report["failed"] == ["exact"]
    assert report["expected_granted"] == 5


def test_report_json_turns_nan_into_null():
    results = [worker_result(0, start=1000.0, end=1000.0, first_sold_out=None)]
    report = report_for(results, inventory=1, users=1, server_granted=0)
    data = json.loads(report_json(report))
    assert data["latency_ms"]["p50"] is None
    assert data["claims_per_s"] is None
    assert data["time_to_first_sold_out_reply_s"] is None
    assert data["ok"] is False  # nothing was granted


def test_report_shows_how_the_load_was_made():
    results = clean_results()
    results[0]["lateness"] = histogram([0.0, 12.5]).state()
    merged = merge_worker_results(results)
    run = {"targets": ["h1:1", "h2:2"], "mode": "batch", "batch_size": 50, "deadline_s": 2.0,
           "max_attempts": 3, "arrival": {"shape": "launch", "duration_s": 10.0},
           "planned_span_s": 9.9, "replayed_from": "t.csv"}  # fmt: skip
    report = build_report(
        campaign_id="c", inventory=3, shards=1, users=6, processes=2, concurrency=4, merged=merged,
        server={"granted": 3, "remaining": 0}, title="claimcore loadgen", run=run,
    )  # fmt: skip
    assert report["run"] == run
    text = format_report(report)
    assert text.startswith("claimcore loadgen: c")
    for part in ("h1:1, h2:2", "batch (50 per call)", "shape launch", "replayed from", "send lateness"):
        assert part in text


# ------------------------------------------------------------ time series


def test_merge_adds_counts_histograms_and_ticks():
    merged = merge_worker_results(clean_results())
    assert merged["outcomes"] == Counter(
        {claims_pb2.OUTCOME_GRANTED: 3, claims_pb2.OUTCOME_SOLD_OUT: 4, claims_pb2.OUTCOME_ALREADY_CLAIMED: 1}
    )
    assert merged["latency"].count == 8 and merged["latency"].max == 800
    assert merged["start"] == 1000.0 and merged["end"] == 1002.0
    assert merged["first_sold_out"] == 1000.6 and merged["last_granted"] == 1000.2
    assert merged["ticks"] == {10: [3, 3, 0], 70: [2, 0, 1], 150: [3, 0, 3]}
    assert merged["slices"][1].count == 3 and merged["slices"][15].count == 3


def test_merge_refuses_workers_with_different_ticks():
    results = clean_results()
    results[1]["tick_s"] = 0.02
    with pytest.raises(ValueError, match="tick_s"):
        merge_worker_results(results)


def test_phase_rates_split_replies_at_sold_out():
    ticks = {10: [2, 2, 0], 20: [2, 2, 0], 150: [1, 0, 1], 160: [1, 0, 1]}  # 10 ms ticks
    before, after = phase_rates(ticks, 0.01, 1000.0, 1002.0, 1000.5)
    assert before == pytest.approx(8.0)  # 4 replies in 0.5 s
    assert after == pytest.approx(2 / 1.5)
    assert phase_rates(ticks, 0.01, 1000.0, 1002.0, None) == (None, None)  # never sold out
    assert phase_rates(ticks, 0.01, 1000.0, 1002.0, 999.0) == (None, None)  # before the run


def test_replies_before_counts_part_of_the_tick_in_progress():
    ticks = {0: [10, 0, 0], 1: [10, 0, 0]}
    assert replies_before(ticks, 0.01, 0.015) == pytest.approx(15)
    assert replies_before(ticks, 0.01, 1.0) == 20
    assert replies_before(ticks, 0.01, 0.0) == 0


def test_throughput_series_has_a_row_per_slice():
    ticks = {0: [5, 5, 0], 9: [5, 0, 5], 25: [2, 0, 2]}
    slices = {0: histogram([1.0] * 9 + [9.0], 2), 2: histogram([3.0, 3.0], 2)}
    rows = throughput_series(ticks, slices, 0.01, 0.1)
    assert [r["t_s"] for r in rows] == [0.0, 0.1, 0.2]
    assert rows[0]["claims_per_s"] == 100 and rows[0]["granted_per_s"] == 50
    assert rows[0]["sold_out_per_s"] == 50
    # slices keep 2 significant digits: within 1 %
    assert rows[0]["p50_ms"] == pytest.approx(1.0, rel=0.01)
    assert rows[0]["p99_ms"] == pytest.approx(9.0, rel=0.01)
    assert rows[1]["claims_per_s"] == 0 and math.isnan(rows[1]["p50_ms"])
    assert rows[2]["claims_per_s"] == 20
    assert throughput_series({}, {}, 0.01, 0.1) == []


def test_per_second_sums_ticks_into_whole_seconds():
    assert per_second({0: [3, 0, 0], 99: [1, 0, 0], 100: [2, 0, 0], 350: [4, 0, 0]}, 0.01) == [4, 2, 0, 4]
    assert per_second({}, 0.01) == []


# ------------------------------------------------ local answers and node CPU


def test_local_answers_are_a_share_of_the_claims_answered_after_sold_out():
    results = clean_results()
    results[1]["answered_locally"] = 2  # of the 3 SOLD_OUT replies in tick 150, after sold out at 0.8 s
    results[1]["local_to_holders"] = 1
    results[1]["client"] = {"answered_locally": 2, "batches": 1}
    report = report_for(results, inventory=3, users=6, server_granted=3)
    # Replies after 0.8 s: tick 150's 3 (ticks 10 and 70 come before it).
    assert report["answered_locally"] == {"count": 2, "claims_after_sold_out": 3,
                                          "share_after_sold_out": pytest.approx(2 / 3)}
    assert report["local_to_holders"] == 1 and report["client"] == {"answered_locally": 2, "batches": 1}
    text = format_report(report)
    assert "answered without reaching a node  2 (66.7 % of the 3 claims after sold out); 1 second" in text


def test_front_cpu_is_not_measured_without_metrics_and_summed_over_nodes_with_them():
    unmeasured = report_for(clean_results(), inventory=3, users=6, server_granted=3)
    assert unmeasured["front_cpu"]["measured"] is False and unmeasured["front_cpu"]["cpu_s"] is None
    assert "front node CPU" in format_report(unmeasured) and "not measured" in format_report(unmeasured)
    assert json.loads(report_json(unmeasured))["front_cpu"]["per_million_claims"] is None
    merged = merge_worker_results(clean_results())
    measured = build_report(
        campaign_id="demo-test", inventory=3, shards=2, users=6, processes=2, concurrency=4,
        merged=merged, server={"granted": 3, "remaining": 0, "sold_out_at_ms": 1_000_800, "shards": []},
        front_cpu={"nodes": [{"url": "http://a/metrics", "before": 10.0, "after": 10.5},
                             {"url": "http://b/metrics", "before": 3.0, "after": 3.3}]},
    )  # fmt: skip
    cpu = measured["front_cpu"]
    assert cpu["measured"] is True and cpu["cpu_s"] == pytest.approx(0.8)
    assert cpu["per_million_claims"] == pytest.approx(0.8 / 8 * 1e6)  # 8 replies
    assert "0.80 CPU-s over 2 nodes (100,000.0 CPU-s per million claims)" in format_report(measured)


def test_front_cpu_of_a_node_restarted_during_the_run_is_not_measured():
    """A counter that went down was reset by a restart: no figure is made from it."""
    restarted = build_report(
        campaign_id="demo-test", inventory=3, shards=2, users=6, processes=2, concurrency=4,
        merged=merge_worker_results(clean_results()),
        server={"granted": 3, "remaining": 0, "sold_out_at_ms": 1_000_800, "shards": []},
        front_cpu={"nodes": [{"url": "http://a/metrics", "before": 10.0, "after": 10.5},
                             {"url": "http://b/metrics", "before": 3.0, "after": 0.2}]},
    )
    cpu = restarted["front_cpu"]
    assert cpu["measured"] is False and cpu["cpu_s"] is None and "http://b/metrics" in cpu["why"]
    assert "not measured: counter reset (node restarted?): http://b/metrics" in format_report(restarted)



def test_behind_plan_warns_past_the_limit_and_checks_only_when_asked() -> None:
    from claimcore.loadtest.report import BEHIND_PLAN_MS, behind_plan

    on_time = {"count": 100, "p99": BEHIND_PLAN_MS / 2, "max": BEHIND_PLAN_MS}
    late = {"count": 100, "p99": BEHIND_PLAN_MS * 3, "max": BEHIND_PLAN_MS * 5}
    assert behind_plan(on_time, None) == (None, None)
    warning, check = behind_plan(late, None)
    assert warning is not None and "fell behind its plan" in warning and "3.0 s" in warning and check is None
    warning, check = behind_plan(on_time, BEHIND_PLAN_MS / 4)  # a stricter limit: warned and failed
    assert warning is not None and check is not None and not check.ok
    assert behind_plan(late, BEHIND_PLAN_MS * 10) == (None, behind_plan(late, BEHIND_PLAN_MS * 10)[1])
    assert behind_plan(late, BEHIND_PLAN_MS * 10)[1].ok  # type: ignore[union-attr]
    assert behind_plan({"count": 0, "p99": float("nan")}, 1.0) == (None, None)  # nothing was scheduled
