"""Tests of arrival traces: a recorded plan replays with the same offsets and request ids."""

from __future__ import annotations

import csv

import pytest

from claimcore.loadtest import recording as recording_mod
from claimcore.loadtest.arrivals import ArrivalShape, Event, Plan, plan_claims
from claimcore.loadtest.recording import (
    HEADER,
    TraceError,
    campaign_from_spec,
    campaign_spec,
    read_recording,
    read_trace,
    write_trace,
)
from claimcore.v1 import claims_pb2


def test_record_then_replay_gives_the_identical_plan(tmp_path):
    plan = plan_claims(
        users=5000,
        shape=ArrivalShape("poisson", rate=3000.0),
        seed=21,
        retry_share=0.2,
        double_tap_share=0.1,
        follow_up_within_s=0.3,
        run_tag="a1b2c3d4",
    )
    path = tmp_path / "launch.csv"
    write_trace(plan, path)
    replayed = read_trace(path)
    assert replayed == plan
    assert list(replayed.events()) == list(plan.events())
    # and once more: the trace of a replayed trace is the same file
    again = tmp_path / "again.csv"
    write_trace(replayed, again)
    assert again.read_text() == path.read_text()


def test_offsets_keep_microseconds_at_any_size(tmp_path):
    offsets = [0, 1, 999, 1000, 1001, 123_456_789, 86_399_999_999]
    plan = Plan.from_events([Event(o, f"u{n}", f"r{n}", "first") for n, o in enumerate(offsets)])
    path = tmp_path / "t.csv"
    write_trace(plan, path)
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1:4] == ["0.000,u0,r0,first", "0.001,u1,r1,first", "0.999,u2,r2,first"]
    assert list(read_trace(path).offsets_us) == offsets


def test_a_hand_written_trace_is_sorted_and_checked(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text(
        HEADER + "\n"
        "250,alice,req-1,replay\n"
        "\n"
        " 100.5 , alice , req-1 , first \n"
        "100.5,bob,req-9,first\n"
        "400,bob,req-10,double_tap\n"
    )
    plan = read_trace(path)
    assert [(e.offset_us, e.user_id, e.kind) for e in plan.events()] == [
        (100_500, "alice", "first"),
        (100_500, "bob", "first"),
        (250_000, "alice", "replay"),
        (400_000, "bob", "double_tap"),
    ]
    assert plan.distinct_users() == 2


@pytest.mark.parametrize(
    "body,message",
    [
        ("", "holds no claims"),
        ("1,u,r\n", ":2: expected 4 fields"),
        ("soon,u,r,first\n", ":2: offset_ms 'soon' is not a number"),
        ("-1,u,r,first\n", "outside"),
        ("1,,r,first\n", "must not be empty"),
        ("1,u,r,third\n", "kind 'third'"),
        ("1,u,r,replay\n", "before its first claim"),
        ("1,u,r,first\n2,u,x,replay\n", "has request_id x, not r"),
    ],
)
def test_bad_traces_are_refused_naming_the_problem(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "\n" + body)
    with pytest.raises(TraceError, match=message):
        read_trace(path)


def test_missing_header_or_file_is_refused(tmp_path):
    path = tmp_path / "no-header.csv"
    path.write_text("0.000,u,r,first\n")
    with pytest.raises(TraceError, match="line 1 must be the header"):
        read_trace(path)
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(tmp_path / "absent.csv")


# ------------------------------------------------------------ the spec lines

SPEC = {
    "campaign": {"inventory": 500, "shards": 4, "per_user_limit": 1, "admission_rate": 0,
                 "category": "3c", "regions": ["north", "east"], "value_cents": 1500,
                 "ends_in_ms": 3_600_000, "rounds": [{"amount": 100, "release_in_ms": 2000}]},
    "arrival": {"shape": "launch", "users": 3, "duration_s": 1.5, "launch_window_s": 0.5},
    "seed": 7,
}  # fmt: skip


def small_plan() -> Plan:
    return Plan.from_events([Event(0, "u1", "r1", "first"), Event(1500, "u2", "r2", "first"),
                             Event(9000, "u1", "r1", "replay")])  # fmt: skip


def test_the_spec_rides_in_comment_lines_and_reads_back(tmp_path):
    path = tmp_path / "spec.csv"
    write_trace(small_plan(), path, spec=SPEC)
    lines = path.read_text().splitlines()
    header_at = lines.index(HEADER)
    assert all(line.startswith("# ") for line in lines[:header_at])
    assert "# version=1" in lines and "# campaign.inventory=500" in lines
    assert "# campaign.category=3c" in lines and '# campaign.regions=["north","east"]' in lines
    assert "# arrival.shape=launch" in lines and "# seed=7" in lines
    recording = read_recording(path)
    assert recording.plan == small_plan()
    assert recording.spec == {**SPEC, "version": 1}
    assert recording.campaign == SPEC["campaign"]
    # Other tools: a CSV reader that skips '#' lines sees the old file.
    rows = list(csv.DictReader(line for line in path.read_text().splitlines() if not line.startswith("#")))
    assert [r["user_id"] for r in rows] == ["u1", "u2", "u1"]


def test_a_string_that_reads_as_a_number_is_quoted():
    path_spec = {"campaign": {"inventory": 5, "category": "2024"}}
    lines = "".join(recording_mod._spec_lines(path_spec)).splitlines()
    assert '# campaign.category="2024"' in lines and "# campaign.inventory=5" in lines


def test_an_old_trace_has_no_spec(tmp_path):
    path = tmp_path / "old.csv"
    write_trace(small_plan(), path)
    assert path.read_text().splitlines()[0] == HEADER
    recording = read_recording(path)
    assert recording.spec == {} and recording.campaign is None and recording.plan == small_plan()


def test_campaign_settings_round_trip_with_times_made_relative():
    campaign = claims_pb2.Campaign(
        campaign_id="orig", name="the original", inventory=500, shards=4, per_user_limit=1,
        admission_rate=900, starts_at_ms=1_000_500, ends_at_ms=4_600_000, category="3c",
        regions=["north"], rounds=[claims_pb2.Round(amount=100, release_at_ms=1_002_000)],
    )  # fmt: skip
    spec = campaign_spec(campaign, sending_at_ms=1_000_000)
    assert spec == {"inventory": 500, "shards": 4, "per_user_limit": 1, "admission_rate": 900,
                    "category": "3c", "regions": ["north"], "starts_in_ms": 500, "ends_in_ms": 3_600_000,
                    "rounds": [{"amount": 100, "release_in_ms": 2000}]}  # fmt: skip
    again = campaign_from_spec(spec, "copy", "a copy", sending_at_ms=5_000_000)
    expected = claims_pb2.Campaign()
    expected.CopyFrom(campaign)
    expected.campaign_id, expected.name = "copy", "a copy"
    expected.starts_at_ms, expected.ends_at_ms = 5_000_500, 8_600_000
    expected.rounds[0].release_at_ms = 5_002_000
    assert again == expected
    # a start already past when the spec was taken: open at once
    opened = campaign_from_spec(dict(spec, starts_in_ms=-20), "c", "c", sending_at_ms=5_000_000)
    assert opened.starts_at_ms == 0


@pytest.mark.parametrize(
    "spec_lines,message",
    [
        ("# version=2\n", ":1: trace version 2"),
        ("# speed=fast\n", ":1: unknown spec key 'speed'"),
        ("# weather.today=sunny\n", ":1: unknown spec key 'weather.today'"),
        ("# version=1\n# campaign.colour=red\n", ":2: 'campaign.colour' is not a campaign field"),
        ("# campaign.inventory=lots\n", "campaign spec: .*inventory"),
        ("# Campaign Inventory=5\n", ":1: 'Campaign Inventory' is not a spec key"),
        ("# version=1\n0.000,u,r,first\n", "line 2, after the # lines, must be the header"),
    ],
)
def test_bad_spec_lines_are_refused_naming_the_line(tmp_path, spec_lines, message):
    path = tmp_path / "bad-spec.csv"
    path.write_text(spec_lines + HEADER + "\n0.000,u,r,first\n")
    with pytest.raises(TraceError, match=message):
        read_recording(path)


def test_remarks_without_a_key_are_ignored(tmp_path):
    path = tmp_path / "remarks.csv"
    path.write_text("# recorded at the spring launch rehearsal\n# seed=3\n" + HEADER + "\n0.000,u,r,first\n")
    assert read_recording(path).spec == {"seed": 3}
