"""Short `claimcore loadgen` runs against real front nodes on a real redis-server.

Unary and batch mode, two nodes round robin, a recorded trace replayed against a fresh
campaign, and a run whose checks fail (exit 1). The node fixture is a LocalNode on an
EmbeddedRedis (tests/conftest.py).
"""

from __future__ import annotations

import json
import time

import pytest

from claimcore.harness.local_node import LocalNode
from claimcore.loadtest import loadgen
from claimcore.loadtest.recording import read_trace
from claimcore.ops import cli

USERS = 3000
INVENTORY = 500


def run_loadgen(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["loadgen", *argv])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def common(json_path) -> list[str]:
    return [
        "--create-campaign", "--inventory", str(INVENTORY), "--shards", "4",
        "--processes", "2", "--concurrency", "32", "--verify-sample", "100",
        "--json", str(json_path), "--seed", "7",
    ]  # fmt: skip


def assert_clean(report: dict, users: int = USERS) -> None:
    assert report["ok"] is True, report["failed"]
    assert {c["name"] for c in report["checks"]} >= {"duplicates", "oversell", "exact", "stock conserved"}
    assert report["granted"] == report["distinct_vouchers"] == INVENTORY
    assert report["duplicates"] == 0 and report["oversell"] == 0
    assert report["users"] == users
    assert report["outcomes"]["SOLD_OUT"] > 0
    assert report["latency_ms"]["count"] == report["replies"]
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99.9"] <= report["latency_ms"]["max"]
    assert report["time_to_sold_out_server_s"] is not None
    assert sum(report["replies_per_second"]) == report["replies"]
    # The offered load against the achieved, slice by slice, adds up to the totals.
    totals = report["flow_totals"]
    for column in ("planned", "sent", "resent", "replies", "granted_first", "granted_replays", "sold_out"):
        assert sum(row[column] for row in report["per_slice"]) == totals[column], column
    assert totals["replies"] == report["replies"]
    assert totals["sent"] + totals["resent"] == report["requests_sent"]
    assert totals["granted_first"] + totals["granted_replays"] == report["outcomes"]["GRANTED"]
    assert totals["granted_first"] + report["settled_by_getclaim"] == report["distinct_vouchers"]
    assert report["per_slice"][-1]["stock_remaining"] == INVENTORY - totals["granted_first"]


@pytest.mark.timeout(60)
def test_unary_run_records_a_trace_that_replays_against_a_fresh_campaign(node, tmp_path, capsys):
    started = time.monotonic()
    trace = tmp_path / "launch.csv"
    first_json = tmp_path / "first.json"
    html = tmp_path / "run.html"
    code, out, err = run_loadgen(
        ["--target", node.address, *common(first_json), "--users", str(USERS),
         "--arrival", "launch", "--duration", "1.5", "--launch-window", "0.5",
         "--record", str(trace), "--html", str(html)],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_OK, out + err
    assert "RESULT: PASS" in out
    assert "loadgen " in err and "stock left" in err  # the progress line
    first = json.loads(first_json.read_text())
    assert first["calls"] == first["requests_sent"]  # unary: one claim per call
    assert_clean(first)
    assert first["run"]["arrival"]["shape"] == "launch"
    planned = read_trace(trace)
    assert first["run"]["planned_claims"] == len(planned)
    assert first["retries"] == planned.counts()["replay"] and first["retry_violations"] == 0
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 5 and "<script" not in page
    assert "planned arrivals (the offered load)" in page
    assert first["flow_totals"]["planned"] == len(planned)
    assert "first grants (+" in out and " s  planned  " in out  # the GRANTED row, the per-second table

    replay_json = tmp_path / "replay.json"
    code, out, err = run_loadgen(
        ["--target", node.address, *common(replay_json), "--replay", str(trace), "--no-progress"],
        capsys,
    )
    assert code == loadgen.EXIT_OK, out + err
    assert err == ""
    replayed = json.loads(replay_json.read_text())
    assert_clean(replayed)
    assert replayed["campaign"] != first["campaign"]
    assert replayed["run"]["replayed_from"] == str(trace)
    assert replayed["run"]["planned_claims"] == first["run"]["planned_claims"]
    assert replayed["run"]["planned_span_s"] == first["run"]["planned_span_s"]
    assert replayed["retries"] == first["retries"] and replayed["double_taps"] == first["double_taps"]

    # The replayed campaign is used up now: running against it again is refused.
    code, out, err = run_loadgen(
        ["--target", node.address, "--campaign", replayed["campaign"], "--users", "10"], capsys
    )
    assert code == loadgen.EXIT_ERROR and "already granted 500" in err
    assert time.monotonic() - started < 40


@pytest.mark.timeout(60)
def test_batch_run_over_two_nodes(redis_server, node, tmp_path, capsys):
    second = LocalNode(redis_server.url).start()
    try:
        out_json = tmp_path / "batch.json"
        code, out, err = run_loadgen(
            ["--target", f"{node.address},{second.address}", *common(out_json),
             "--users", str(USERS), "--arrival", "burst", "--duration", "0.5",
             "--mode", "batch", "--batch-size", "50", "--no-progress"],
            capsys,
        )  # fmt: skip
    finally:
        second.stop()
    assert code == loadgen.EXIT_OK, out + err
    report = json.loads(out_json.read_text())
    assert_clean(report)
    assert report["run"]["targets"] == [node.address, second.address]
    assert report["run"]["mode"] == "batch" and report["run"]["batch_size"] == 50
    # In batch mode one call carries many claims. How full batches get depends on
    # timing (open model), so only ask for batching, not for a fill ratio.
    assert report["requests_sent"] == report["replies"]
    assert report["calls"] * 2 <= report["requests_sent"]


@pytest.mark.timeout(60)
def test_a_failed_check_exits_1(node, tmp_path, capsys):
    # Admission lets ~20 claims/s through and nobody may resend: most users never get an
    # answer that counts, so far fewer than min(inventory, users) vouchers go out.
    out_json = tmp_path / "short.json"
    code, out, err = run_loadgen(
        ["--target", node.address, "--create-campaign", "--inventory", "200", "--shards", "1",
         "--admission-rate", "20", "--users", "300", "--arrival", "burst", "--duration", "0.2",
         "--retry-share", "0", "--double-tap-share", "0", "--max-attempts", "1",
         "--processes", "1", "--no-progress", "--json", str(out_json)],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_CHECK_FAILED, out + err
    report = json.loads(out_json.read_text())
    assert report["failed"] == ["exact"]
    assert report["outcomes"]["RATE_LIMITED"] > 0
    assert report["granted"] < 200
    assert "RESULT: FAIL (exact)" in out


@pytest.mark.timeout(60)
def test_max_lateness_turns_a_generator_behind_its_plan_into_a_failed_check(node, tmp_path, capsys):
    """A limit no real sender keeps (1 µs of send lateness): the check "generator kept up" fails, the run
    exits 1, and every report says in words that the generator fell behind its plan."""
    out_json, out_html = tmp_path / "late.json", tmp_path / "late.html"
    code, out, err = run_loadgen(
        ["--target", node.address, "--create-campaign", "--inventory", "100", "--shards", "1",
         "--users", "200", "--arrival", "burst", "--duration", "0.2", "--processes", "1",
         "--max-lateness", "0.001", "--no-progress", "--json", str(out_json), "--html", str(out_html)],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_CHECK_FAILED, out + err
    report = json.loads(out_json.read_text())
    assert report["failed"] == ["generator kept up"] and report["max_lateness_ms"] == 0.001
    assert report["behind_plan"].startswith("the load generator fell behind its plan")
    assert "WARNING: the load generator fell behind its plan" in out
    assert 'id="behind-plan"' in out_html.read_text()
    code, out, err = run_loadgen(["--target", node.address, "--max-lateness", "0", "--no-progress"], capsys)
    assert code == 2 and "--max-lateness must be > 0" in out + err


@pytest.mark.timeout(90)
def test_reshards_during_a_run_are_reported_and_keep_the_checks(node, tmp_path, capsys):
    out_json = tmp_path / "reshard.json"
    code, out, err = run_loadgen(
        ["--target", node.address, "--create-campaign", "--inventory", "2500", "--shards", "4",
         "--users", "3000", "--arrival", "poisson", "--duration", "3", "--seed", "5",
         "--reshard", "12@0.8,3@1.8", "--processes", "2", "--concurrency", "32",
         "--verify-sample", "500", "--no-progress", "--json", str(out_json)],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_OK, out + err
    report = json.loads(out_json.read_text())
    assert report["ok"] is True and report["granted"] == report["distinct_vouchers"] == 2500
    assert report["duplicates"] == 0 and report["retry_violations"] == 0
    steps = report["run"]["reshards"]
    assert [(s["from_shards"], s["to_shards"], s["epoch"]) for s in steps] == [(4, 12, 1), (12, 3, 2)]
    # Users must have moved with their records; how many by the first step depends on how far the run
    # got by 0.8 s on a loaded machine (once none had claimed yet), so it is asserted over both steps.
    assert sum(s["moved_users"] for s in steps) > 0
    # Each step is timed from when the workers start sending, as the report's time axis counts (it
    # once counted from before the worker processes spawned, so "12@0.8" ran before the load did).
    called = [row["at_s"] for row in report["reshards"]]
    assert len(called) == 2 and called[0] >= 0.8 - 0.05 and called[1] >= 1.8 - 0.05, called
    # the server's own stock figure, read during the run: never rises (nothing recycled), never
    # leaves [0, inventory], whatever the reshards moved between shards
    remaining = [sample["remaining"] for sample in report["stock_samples"]]
    assert len(remaining) >= 2 and remaining == sorted(remaining, reverse=True), remaining
    assert 0 <= remaining[-1] <= remaining[0] <= 2500
    assert "reshard 4 -> 12" in out and "reshard 12 -> 3" in out


@pytest.mark.timeout(90)
def test_claim_and_redeem_at_once_then_reconcile_to_zero_difference(node, tmp_path, capsys):
    out_json = tmp_path / "redeem.json"
    code, out, err = run_loadgen(
        ["--target", node.address, *common(out_json), "--users", str(USERS), "--arrival", "burst",
         "--duration", "0.5", "--redeem-share", "0.5", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_OK, out + err
    report = json.loads(out_json.read_text())
    assert_clean(report)
    redeemed = report["redeems"].get("REDEEMED", 0)
    assert 0 < redeemed < INVENTORY and set(report["redeems"]) == {"REDEEMED"} and not report["redeem_errors"]
    assert report["reconcile"]["ok"] is True and "reconcile" not in report["failed"]
    figures = {f["name"]: f["live"] for f in report["reconcile"]["figures"]}
    assert figures["vouchers redeemed (not reversed)"] == redeemed
    assert "reconcile (ledger vs live)" in out and "no difference" in out
