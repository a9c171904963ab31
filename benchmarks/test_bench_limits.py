"""Anti-scalper limits, compiled vs twin: pytest benchmarks/test_bench_limits.py --benchmark-only.

Each round is 1,000 calls, so the per-call cost is the reported time / 1,000.

    keyed_limiter        take() on a hot key (in a table of 1,000 keys): admissions and refusals
    keyed_limiter_evict  take() of 1,000 new keys into a full table of 100,000 active keys: every call
                         sweeps 8 entries and evicts one (the worst case: a flood of distinct keys)
    abuse_check          AbuseLimits.check per claim: deny list, channel quota, user, device and IP,
                         with the selected KeyedLimiter ("tables" says which twin holds the buckets;
                         not named "impl", so it is not a compiled/twin ratio of the report)
"""

from __future__ import annotations

import importlib
import itertools
from types import ModuleType

import pytest

from claimcore._fast import NO_EXTENSIONS
from claimcore.security.abuse import AbuseLimits, DenyList

CALLS = 1_000


def _load(impl: str) -> ModuleType:
    if impl == "c" and NO_EXTENSIONS:
        pytest.skip("CLAIMCORE_NO_EXTENSIONS is set")
    return importlib.import_module(f"claimcore._fast._keyed_limiter_{impl}")


# 1e6/s with 1,000 arrivals 700 ns apart: a mix of admissions and refusals (as test_bench_take).
TIMES = [i * 700 for i in range(CALLS)]
OTHERS = [f"user-{i:06d}" for i in range(1000)]


@pytest.mark.benchmark(group="keyed_limiter")
@pytest.mark.parametrize("impl", ["c", "py"])
def test_bench_keyed_take_hot_key(benchmark, impl: str) -> None:
    mod = _load(impl)

    def fresh_table():
        table = mod.KeyedLimiter(1e6, 50, 100_000)
        for key in OTHERS:
            table.take(key, 0)
        return (table,), {}

    def run(table) -> int:
        take = table.take
        admitted = 0
        for t in TIMES:
            if not take("user-hot", t):
                admitted += 1
        return admitted

    admitted = benchmark.pedantic(run, setup=fresh_table, rounds=500, warmup_rounds=20)
    assert 0 < admitted < CALLS


FULL = 100_000
_tables: dict[str, object] = {}
_serial = itertools.count()


@pytest.mark.benchmark(group="keyed_limiter_evict")
@pytest.mark.parametrize("impl", ["c", "py"])
def test_bench_keyed_take_distinct_keys_at_capacity(benchmark, impl: str) -> None:
    mod = _load(impl)
    table = _tables.get(impl)
    if table is None:  # one table for all rounds, full of keys active for 1,000 s
        table = _tables[impl] = mod.KeyedLimiter(0.001, 1, FULL)
        for i in range(FULL):
            table.take(f"fill-{i}", 0)

    def new_keys():
        return ([f"scalper-{next(_serial)}" for _ in range(CALLS)],), {}

    def run(keys: list[str]) -> int:
        take = table.take
        admitted = 0
        for i, key in enumerate(keys):
            if not take(key, i):
                admitted += 1
        return admitted

    before = table.evictions
    admitted = benchmark.pedantic(run, setup=new_keys, rounds=200, warmup_rounds=5)
    assert admitted == CALLS and len(table) == FULL and table.evictions > before


# One launch second's claims from three channels: distinct users, some sharing devices and IPs.
CLAIMS = [
    (("bank-app", "pay-app", "shop-app")[i % 3], f"user-{i:07d}", f"dev-{i // 2:06d}",
     f"10.{i % 7}.{i // 256 % 256}.{i % 256}" if i % 4 else f"2001:db8:{i % 97:x}::{i:x}")
    for i in range(CALLS)
]


@pytest.mark.benchmark(group="abuse_check")
@pytest.mark.parametrize("tables", ["c", "py"])
def test_bench_abuse_check(benchmark, tables: str) -> None:
    mod = _load(tables)

    def fresh_limits():
        quotas = {"bank-app": (5000.0, 100), "pay-app": (5000.0, 100)}
        deny = DenyList(users=["user-0000007"], ips=["192.0.2.0/24", "2001:db8:dead::/48"])
        limits = AbuseLimits(user_rate=1.0, user_burst=2, device_rate=2.0, device_burst=3, ip_rate=50.0,
                             ip_burst=20, channel_quotas=quotas, deny=deny)
        limits.users = mod.KeyedLimiter(1.0, 2, 1_000_000)
        limits.devices = mod.KeyedLimiter(2.0, 3, 1_000_000)
        limits.ips = mod.KeyedLimiter(50.0, 20, 1_000_000)
        limits.channels = {c: mod.KeyedLimiter(5000.0, 100, 1) for c in ("bank-app", "pay-app")}
        return (limits,), {}

    def run(limits: AbuseLimits) -> int:
        check = limits.check
        admitted = 0
        for i, (channel, user, device, ip) in enumerate(CLAIMS):
            if check(channel, user, device, ip, i * 1_000_000) is None:
                admitted += 1
        return admitted

    admitted = benchmark.pedantic(run, setup=fresh_limits, rounds=100, warmup_rounds=5)
    assert 0 < admitted < CALLS
