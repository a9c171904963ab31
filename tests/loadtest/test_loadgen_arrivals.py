"""Tests of the arrival shapes and the claim plan: pure, seeded functions."""

from __future__ import annotations

import bisect
import math

import pytest

from claimcore.loadtest.arrivals import (
    FIRST,
    KINDS,
    ArrivalShape,
    Event,
    Plan,
    arrival_offsets,
    plan_claims,
    user_id,
)

US = 1_000_000


def arrived_by(offsets, seconds: float) -> int:
    """How many offsets are below `seconds`."""
    return bisect.bisect_left(offsets, round(seconds * US))


def is_sorted(values) -> bool:
    return all(a <= b for a, b in zip(values, values[1:], strict=False))


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize(
    "shape",
    [
        ArrivalShape("burst", duration_s=1.0),
        ArrivalShape("burst", duration_s=0.0),
        ArrivalShape("ramp", duration_s=5.0),
        ArrivalShape("poisson", rate=2000.0),
        ArrivalShape("launch", duration_s=10.0, tail_share=0.3, launch_s=1.0),
        ArrivalShape("launch", duration_s=1.0, tail_share=0.0, launch_s=1.0),
    ],
    ids=lambda s: s.kind,
)
def test_every_shape_gives_count_sorted_deterministic_offsets(shape):
    offsets = arrival_offsets(shape, 5000, seed=3)
    assert len(offsets) == 5000
    assert is_sorted(offsets)
    assert offsets[0] >= 0
    if shape.kind != "poisson":
        assert offsets[-1] <= shape.duration_s * US
    assert list(arrival_offsets(shape, 5000, seed=3)) == list(offsets)
    if shape.duration_s or shape.kind == "poisson":
        assert list(arrival_offsets(shape, 5000, seed=4)) != list(offsets)
    assert list(arrival_offsets(shape, 0, seed=3)) == []


def test_burst_spreads_evenly_over_its_window_or_not_at_all():
    offsets = arrival_offsets(ArrivalShape("burst", duration_s=2.0), 10_000, seed=1)
    for tenth in range(1, 20):  # stratified: exact to within one arrival per 0.1 s
        assert abs(arrived_by(offsets, tenth / 10) - tenth * 500) <= 1
    assert set(arrival_offsets(ArrivalShape("burst", duration_s=0.0), 100, seed=1)) == {0}


def test_ramp_rate_rises_linearly():
    offsets = arrival_offsets(ArrivalShape("ramp", duration_s=10.0), 100_000, seed=2)
    # By time t a share (t/d)**2 has arrived.
    for t in (1.0, 2.5, 5.0, 7.5, 9.0):
        assert abs(arrived_by(offsets, t) - 100_000 * (t / 10) ** 2) <= 1
    first_second = arrived_by(offsets, 1.0)
    last_second = 100_000 - arrived_by(offsets, 9.0)
    assert last_second == pytest.approx(19 * first_second, rel=0.01)


def test_poisson_keeps_its_rate_with_exponential_gaps():
    rate = 5000.0
    offsets = arrival_offsets(ArrivalShape("poisson", rate=rate), 50_000, seed=5)
    span = offsets[-1] / US
    assert 50_000 / span == pytest.approx(rate, rel=0.02)
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    mean_gap = sum(gaps) / len(gaps)
    assert mean_gap == pytest.approx(US / rate, rel=0.02)
    # Exponential: about e**-1 of the gaps are longer than the mean.
    assert sum(g > mean_gap for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.01)
    per_second = [arrived_by(offsets, s + 1) - arrived_by(offsets, s) for s in range(int(span))]
    assert all(abs(n - rate) < 6 * math.sqrt(rate) for n in per_second)


def test_launch_puts_the_head_in_the_window_and_a_decaying_tail_after():
    shape = ArrivalShape("launch", duration_s=10.0, tail_share=0.25, launch_s=1.0)
    offsets = arrival_offsets(shape, 40_000, seed=9)
    assert arrived_by(offsets, 1.0) == 30_000
    tail = [arrived_by(offsets, s + 1) - arrived_by(offsets, s) for s in range(1, 10)]
    assert sum(tail) == 10_000
    assert all(a > b for a, b in zip(tail, tail[1:], strict=False))  # decaying
    head = [arrived_by(offsets, (t + 1) / 10) - arrived_by(offsets, t / 10) for t in range(10)]
    assert all(abs(n - 3000) <= 1 for n in head)


@pytest.mark.parametrize(
    "shape,message",
    [
        (ArrivalShape("wave"), "arrival must be one of"),
        (ArrivalShape("ramp", duration_s=0), "ramp needs --duration"),
        (ArrivalShape("poisson", rate=0), "--rate > 0"),
        (ArrivalShape("launch", duration_s=1.0, launch_s=1.0, tail_share=0.2),
         "--duration > --launch-window"),
        (ArrivalShape("launch", tail_share=1.5, duration_s=5), "--tail-share"),
        (ArrivalShape("burst", duration_s=-1), "--duration"),
    ],
)
def test_bad_shapes_are_refused_with_the_flag_named(shape, message):
    assert any(message in p for p in shape.problems())
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("(", r"\(")):
        arrival_offsets(shape, 10, seed=0)


# -------------------------------------------------------------------- plan


def make_plan(**overrides) -> Plan:
    args = dict(
        users=20_000,
        shape=ArrivalShape("launch", duration_s=5.0, tail_share=0.3, launch_s=1.0),
        seed=11,
        retry_share=0.1,
        double_tap_share=0.05,
        follow_up_within_s=0.5,
        run_tag="rt",
    )
    args.update(overrides)
    return plan_claims(**args)


def test_plan_is_a_pure_function_of_its_input():
    assert make_plan() == make_plan()
    assert make_plan(seed=12) != make_plan()
    other_tag = make_plan(run_tag="zz")
    assert other_tag.offsets_us == make_plan().offsets_us
    assert other_tag.request_ids != make_plan().request_ids


def test_plan_has_one_first_claim_per_user_and_the_shares_of_follow_ups():
    plan = make_plan()
    counts = plan.counts()
    assert counts["first"] == plan.distinct_users() == 20_000
    assert counts["replay"] == pytest.approx(2000, rel=0.1)
    assert counts["double_tap"] == pytest.approx(1000, rel=0.15)
    firsts = [e for e in plan.events() if e.kind == "first"]
    assert sorted(e.user_id for e in firsts) == [user_id(k) for k in range(20_000)]
    assert firsts[0].user_id == user_id(0)  # users are numbered in order of arrival
    assert plan.check() == []
    assert is_sorted(plan.offsets_us)


def test_follow_ups_come_within_the_window_after_their_first_claim():
    plan = make_plan()
    first = {e.user_id: e for e in plan.events() if e.kind == "first"}
    for e in plan.events():
        if e.kind == "first":
            continue
        parent = first[e.user_id]
        assert 0 <= e.offset_us - parent.offset_us <= 500_000
        if e.kind == "replay":
            assert e.request_id == parent.request_id
        else:
            assert e.request_id != parent.request_id


def test_no_follow_ups_without_shares():
    plan = make_plan(retry_share=0.0, double_tap_share=0.0)
    assert plan.counts() == {"first": 20_000, "replay": 0, "double_tap": 0}
    everyone = make_plan(retry_share=1.0, double_tap_share=1.0, users=100)
    assert everyone.counts() == {"first": 100, "replay": 100, "double_tap": 100}


def test_partition_keeps_each_user_in_one_part_and_the_order():
    plan = make_plan(users=3000)
    parts = plan.partition(3)
    assert sum(len(p) for p in parts) == len(plan)
    owners: dict[str, int] = {}
    for n, part in enumerate(parts):
        assert is_sorted(part.offsets_us)
        assert part.check() == []
        for user in part.users:
            assert owners.setdefault(user, n) == n
    assert all(abs(p.distinct_users() - 1000) < 150 for p in parts)  # roughly even
    merged = sorted(e for p in parts for e in p.events())
    assert merged == sorted(plan.events())


def test_pack_and_unpack_give_the_same_plan():
    plan = make_plan(users=500)
    assert Plan.unpack(plan.pack()) == plan
    empty = Plan.from_events([])
    assert Plan.unpack(empty.pack()) == empty and len(empty) == 0


def test_check_names_what_a_driver_cannot_send():
    def problems(*events):
        return "; ".join(Plan.from_events([Event(*e) for e in events]).check())

    assert problems((0, "a", "r1", "first"), (5, "a", "r1", "replay")) == ""
    assert "before its first claim" in problems((0, "a", "r1", "replay"))
    assert "second 'first'" in problems((0, "a", "r1", "first"), (1, "a", "r2", "first"))
    assert "not r1" in problems((0, "a", "r1", "first"), (1, "a", "r9", "replay"))
    assert "reuses" in problems((0, "a", "r1", "first"), (1, "a", "r1", "double_tap"))


def test_from_events_sorts_by_time_with_first_claims_ahead_of_follow_ups():
    plan = Plan.from_events(
        [Event(10, "a", "r", "replay"), Event(10, "a", "r", "first"), Event(3, "b", "s", "first")]
    )
    assert [(e.offset_us, e.user_id, e.kind) for e in plan.events()] == [
        (3, "b", "first"), (10, "a", "first"), (10, "a", "replay"),
    ]  # fmt: skip
    assert plan.kinds[0] == FIRST and KINDS[plan.kinds[2]] == "replay"
