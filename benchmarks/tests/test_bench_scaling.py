"""The arithmetic of the scaling benchmark (benchmarks/system/scaling_maths.py): no server, no clock."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.system import scaling_maths as sm  # noqa: E402


def reading(port: int = 7000, cpu: float = 1.0, evalsha: int = 10, granted: int = 100, commands: int = 50,
            memory: int = 1000) -> sm.MasterReading:
    return sm.MasterReading(port=port, cpu_main_s=cpu, cpu_s=cpu + 0.1, cpu_sys_main_s=cpu / 10,
                            commands=commands, evalsha=evalsha, keys=5, memory=memory, granted=granted)


def delta(port: int, shards: int, cpu: float, evalsha: int, grants: int) -> sm.MasterDelta:
    return sm.MasterDelta(port=port, shards=shards, cpu_main_s=cpu, cpu_s=cpu, cpu_sys_main_s=0.0,
                          commands=0, evalsha=evalsha, grants=grants, keys=0, memory_bytes=0)


def test_master_reading_from_info():
    info = {"used_cpu_user_main_thread": 1.5, "used_cpu_sys_main_thread": 0.5, "used_cpu_user": 2.0,
            "used_cpu_sys": 1.0, "total_commands_processed": 1234, "cmdstat_evalsha": {"calls": 77},
            "used_memory": 4096, "db0": {"keys": 51, "expires": 0}}
    r = sm.master_reading(7001, info, granted=900)
    assert (r.port, r.cpu_main_s, r.cpu_s, r.cpu_sys_main_s) == (7001, 2.0, 3.0, 0.5)
    assert (r.commands, r.evalsha, r.keys, r.memory, r.granted) == (1234, 77, 51, 4096, 900)
    assert sm.keys_in_db0({}) == 0


def test_master_delta_subtracts_the_readers_own_commands():
    before = reading(cpu=1.0, evalsha=10, granted=100, commands=50, memory=1000)
    after = reading(cpu=1.25, evalsha=20, granted=600, commands=150, memory=126_000)
    d = sm.master_delta(before, after, shards=5, own_commands=6)
    assert d.cpu_main_s == pytest.approx(0.25)
    assert (d.evalsha, d.grants, d.commands, d.memory_bytes, d.shards) == (10, 500, 94, 125_000, 5)
    assert d.cpu_us_per_grant == pytest.approx(500.0)  # 0.25 s / 500 grants
    assert d.claims_per_call == 50
    assert d.sys_share == pytest.approx(0.1)
    with pytest.raises(ValueError):
        sm.master_delta(reading(port=1), reading(port=2), 1, 0)


def test_idle_master_has_no_per_grant_figures():
    d = delta(1, 0, 0.0, 0, 0)
    assert d.cpu_us_per_grant is None and d.claims_per_call is None and d.sys_share is None


def test_slot_owners_and_shard_placement():
    raw = [[5461, 10922, ["127.0.0.1", 7002, "b"]], [0, 5460, ["127.0.0.1", 7001, "a"]],
           [10923, 16383, ["127.0.0.1", 7003, "c"]]]
    ranges = sm.slot_owners(raw)
    assert ranges == [(0, 5460, 7001), (5461, 10922, 7002), (10923, 16383, 7003)]
    assert [sm.owner_port(s, ranges) for s in (0, 5460, 5461, 16383)] == [7001, 7001, 7002, 7003]
    with pytest.raises(ValueError):
        sm.owner_port(16384, ranges)
    placed = sm.shards_per_master([1, 6000, 12000, 2], ranges, [7001, 7002, 7003, 7004])
    assert placed == {7001: [0, 3], 7002: [1], 7003: [2], 7004: []}


def test_spread_is_max_over_mean():
    assert sm.spread([1, 1, 1]) == 1.0
    assert sm.spread([6, 5, 5]) == pytest.approx(6 / (16 / 3))
    assert sm.spread([8, 4, 4]) == pytest.approx(1.5)
    assert sm.spread([]) is None and sm.spread([0, 0]) is None


def test_best_placement_spread():
    assert sm.placement_spread(16, 3) == pytest.approx(1.125)
    assert sm.placement_spread(15, 3) == 1.0
    assert sm.placement_spread(16, 1) == 1.0
    with pytest.raises(ValueError):
        sm.placement_spread(0, 3)


def phase(per_master: list[sm.MasterDelta], claims: int = 1000, seconds: float = 0.5, **kw) -> sm.Phase:
    return sm.Phase(masters=len(per_master), mode="batch", round=1, claims=claims, calls=10, seconds=seconds,
                    node_cpu_s=0.04, driver_cpu_s=0.01, per_master=per_master,
                    outcomes=kw.get("outcomes", {"GRANTED": claims}), errors=kw.get("errors", {}))


def test_phase_figures():
    p = phase([delta(1, 5, 0.010, 20, 300), delta(2, 6, 0.012, 24, 400), delta(3, 5, 0.008, 20, 300)])
    assert p.claims_per_s == 2000
    assert p.node_cpu_us == pytest.approx(40.0)
    assert p.redis_cpu_us == pytest.approx(30.0)          # 30 ms over 1,000 claims
    assert p.busiest_master_cpu_us == pytest.approx(12.0)
    assert p.evalsha_per_claim == pytest.approx(0.064)
    assert p.grants == 1000
    assert p.cpu_spread == pytest.approx(0.012 / 0.010)
    assert p.calls_spread == pytest.approx(24 / (64 / 3))
    assert p.shards_spread == pytest.approx(1.125)
    assert p.per_shard_spread == pytest.approx((400 / 6) / ((60 + 400 / 6 + 60) / 3))
    assert p.clean
    assert not phase([delta(1, 1, 0.1, 1, 1)], outcomes={"GRANTED": 999, "SOLD_OUT": 1}).clean
    assert not phase([delta(1, 1, 0.1, 1, 1)], errors={"UNAVAILABLE": 1}).clean
    assert set(p.as_dict()) >= {"cpu_spread", "per_master", "redis_cpu_us_per_claim"}


def test_medians_totals_and_paired_ratios():
    a = [phase([delta(1, 16, cpu, 10, 1000)], seconds=s)
         for cpu, s in ((0.01, 0.5), (0.03, 1.0), (0.02, 0.25))]
    b = [phase([delta(1, 16, cpu, 10, 1000)], seconds=s)
         for cpu, s in ((0.02, 1.0), (0.03, 1.0), (0.01, 1.0))]
    m = sm.median_figures(a)
    assert m["claims_per_s"] == 2000 and m["redis_cpu_us"] == pytest.approx(20.0)
    (total,) = sm.total_per_master(a)
    assert total.cpu_main_s == pytest.approx(0.06) and total.grants == 3000 and total.evalsha == 30
    # per round: 0.5, 1.0, 2.0 -> median 1.0 (not the ratio of the medians, 20/20)
    assert sm.paired_ratio(a, b, "redis_cpu_us") == pytest.approx(1.0)
    assert sm.paired_ratio(a, b, "claims_per_s") == pytest.approx(2.0)
    assert sm.paired_ratio([], b, "claims_per_s") is None
    assert sm.total_per_master([]) == []


def test_split_cost_recovers_call_and_grant_costs():
    per_call, per_grant = 40e-6, 11e-6
    rows = [(per_call * n + per_grant * g, n, g) for n, g in ((100, 150), (50, 2000), (8, 400), (300, 450))]
    fit = sm.split_cost(rows)
    assert fit is not None and fit.rows == 4
    assert fit.per_call_us == pytest.approx(40.0) and fit.per_grant_us == pytest.approx(11.0)
    assert fit.cpu_us_per_grant(20) == pytest.approx(13.0)
    with pytest.raises(ValueError):
        fit.cpu_us_per_grant(0)


def test_split_cost_needs_two_batch_sizes():
    assert sm.split_cost([(1.0, 10, 100)]) is None
    assert sm.split_cost([(1.0, 10, 100), (2.0, 20, 200)]) is None  # same calls/grants proportion
    assert sm.split_cost([(1.0, 0, 100), (0.0, 0, 0)]) is None       # rows without work are ignored


def test_size_with_headroom():
    s = sm.size(100_000, 40.0, utilisation=0.5)   # 4 CPU-seconds per second
    assert s.cores == pytest.approx(4.0) and s.units == 8
    assert sm.size(100_000, 40.0, utilisation=1.0).units == 4
    assert sm.size(0, 40.0).units == 1              # never fewer than one
    assert sm.size(1, 1.0).units == 1
    with pytest.raises(ValueError):
        sm.size(1, 1, utilisation=0)
    with pytest.raises(ValueError):
        sm.size(-1, 1)


def test_claims_per_call_from_lane_rate():
    assert sm.claims_per_call(1_000, 0.004) == pytest.approx(4.0)
    assert sm.claims_per_call(10, 0.004) == 1.0            # never below one claim
    assert sm.claims_per_call(1e9, 0.004) == 256.0          # never above max_batch
    assert math.isclose(sm.claims_per_call(100_000 / 16, 0.004, max_batch=1000), 25.0)
