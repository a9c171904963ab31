"""Tests of arrival traces: a recorded plan replays with the same offsets and request ids."""

from __future__ import annotations

import pytest

from claimcore.loadtest.arrivals import ArrivalShape, Event, Plan, plan_claims
from claimcore.loadtest.recording import HEADER, TraceError, read_trace, write_trace


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
