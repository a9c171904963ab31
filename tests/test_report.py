"""Tests of the report maths over collected burst results: no server needed."""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter

import pytest

from claimcore.report import (
    build_report,
    evaluate_checks,
    find_duplicates,
    format_report,
    latency_summary,
    merge_worker_results,
    oversell,
    percentile,
    phase_rates,
    report_json,
    split_range,
)
from claimcore.v1 import claims_pb2

# ------------------------------------------------------------------- helpers


def worker_result(
    index: int = 0,
    *,
    pairs: list[tuple[str, str]] | None = None,
    outcomes: dict[int, int] | None = None,
    latencies: list[float] | None = None,
    retry_violations: list[str] | None = None,
    start: float = 1000.0,
    end: float = 1002.0,
    first_sold_out: float | None = 1000.5,
) -> dict:
    """A worker's compact result, as run_burst returns it."""
    return {
        "index": index,
        "sent": sum((outcomes or {}).values()),
        "outcomes": dict(outcomes or {}),
        "transient": {},
        "errors": {},
        "error_examples": [],
        "latencies": array("d", latencies or []).tobytes(),
        "pairs": list(pairs or []),
        "settled": 0,
        "unsettled": 0,
        "retries": 0,
        "retry_violations": list(retry_violations or []),
        "double_taps": 0,
        "double_tap_unexpected": [],
        "voucher_anomalies": [],
        "first_sold_out": first_sold_out,
        "start": start,
        "end": end,
    }


def report_for(results: list[dict], *, inventory: int, users: int, server_granted: int) -> dict:
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
            "remaining": max(0, inventory - server_granted),
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


def test_latency_summary_sorts_its_input():
    summary = latency_summary([5.0, 1.0, 3.0, 2.0, 4.0])
    assert summary["p50"] == 3.0
    assert summary["max"] == 5.0
    assert summary["mean"] == 3.0
    assert summary["count"] == 5
    assert math.isnan(latency_summary([])["p99"])


# ---------------------------------------------------------------- slices


@pytest.mark.parametrize("total,parts", [(100_000, 3), (10, 3), (2, 5), (0, 2), (7, 1)])
def test_split_range_is_disjoint_and_complete(total, parts):
    slices = split_range(total, parts)
    covered = [i for start, end in slices for i in range(start, end)]
    assert covered == list(range(total))
    assert len(slices) <= parts
    sizes = [end - start for start, end in slices]
    assert not sizes or max(sizes) - min(sizes) <= 1


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


def test_duplicates_and_retry_violations_fail():
    assert checks_by_name(duplicate_users=1)["duplicates"] is False
    assert checks_by_name(duplicate_vouchers=1)["duplicates"] is False
    assert checks_by_name(retry_violations=2)["retry consistency"] is False


def test_sampled_lost_vouchers_fail_only_when_sampled():
    assert "vouchers recorded" not in checks_by_name()
    assert checks_by_name(verified=10, lost_vouchers=0)["vouchers recorded"] is True
    assert checks_by_name(verified=10, lost_vouchers=1)["vouchers recorded"] is False


# ---------------------------------------------------------------- report


def clean_results() -> list[dict]:
    granted = claims_pb2.GRANTED
    sold_out = claims_pb2.SOLD_OUT
    return [
        worker_result(
            0,
            pairs=[("u000000", "v0"), ("u000001", "v1"), ("u000001", "v1")],
            outcomes={granted: 2, claims_pb2.ALREADY_CLAIMED: 1, sold_out: 1},
            latencies=[1.0, 2.0, 3.0, 4.0],
            start=1000.0,
            end=1001.5,
            first_sold_out=1000.7,
        ),
        worker_result(
            1,
            pairs=[("u000002", "v2")],
            outcomes={granted: 1, sold_out: 3},
            latencies=[5.0, 6.0, 7.0, 8.0],
            start=1000.1,
            end=1002.0,
            first_sold_out=1000.6,
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
    assert report["latency_ms"]["p50"] == 4.0 and report["latency_ms"]["max"] == 8.0
    text = format_report(report)
    assert "RESULT: PASS" in text
    for label in ("GRANTED", "SOLD_OUT", "duplicates", "oversell", "exact", "p99", "claims/s"):
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
    report = report_for(results, inventory=2, users=6, server_granted=3)
    assert report["oversell"] == 1
    assert set(report["failed"]) >= {"oversell", "exact", "retry consistency"}


def test_report_json_turns_nan_into_null():
    results = [worker_result(0, start=1000.0, end=1000.0, first_sold_out=None)]
    report = report_for(results, inventory=1, users=1, server_granted=0)
    data = json.loads(report_json(report))
    assert data["latency_ms"]["p50"] is None
    assert data["claims_per_s"] is None
    assert data["time_to_first_sold_out_reply_s"] is None
    assert data["ok"] is False  # nothing was granted


def test_phase_rates_split_replies_at_sold_out():
    done_at = [1000.1, 1000.2, 1000.3, 1000.4, 1001.5, 1001.6]
    before, after = phase_rates(done_at, 1000.0, 1002.0, 1000.5)
    assert before == pytest.approx(8.0)  # 4 replies in 0.5 s
    assert after == pytest.approx(2 / 1.5)
    assert phase_rates(done_at, 1000.0, 1002.0, None) == (None, None)  # never sold out
    assert phase_rates(done_at, 1000.0, 1002.0, 999.0) == (None, None)  # before the burst


def test_merge_counts_outcomes_and_latencies():
    merged = merge_worker_results(clean_results())
    assert merged["outcomes"] == Counter(
        {claims_pb2.GRANTED: 3, claims_pb2.SOLD_OUT: 4, claims_pb2.ALREADY_CLAIMED: 1}
    )
    assert sorted(merged["latencies"]) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert merged["start"] == 1000.0 and merged["end"] == 1002.0
    assert merged["first_sold_out"] == 1000.6
