"""claimcore._fast KeyedLimiter: the Cython module and its pure-Python twin must agree exactly.

Both sides are imported directly, whatever CLAIMCORE_NO_EXTENSIONS says (the switch
only changes which side claimcore._fast selects), so a missing extension is a
failure, never a skip. Agreement covers every return value, len(), evictions,
membership (so which key was evicted) and the exception type of every error.
The one behaviour test takes each implementation from the keyed_limiter fixture
(ids c-extension-module and pure-python-module, as in test_fast_parity).
"""

from __future__ import annotations

import importlib
import math
import random
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import claimcore._fast as fast
from claimcore._fast import NO_EXTENSIONS
from support import outcome_of

pytestmark = pytest.mark.twins

KL_PY, KL_C = "claimcore._fast._keyed_limiter_py", "claimcore._fast._keyed_limiter_c"
TB_PY = "claimcore._fast._token_bucket_py"

INT64_MAX = 2**63 - 1
NOW_LIMIT = 2**62


def _mod(name: str) -> ModuleType:
    return importlib.import_module(name)  # deliberately not guarded: unbuilt is an error


@pytest.fixture(scope="module", params=[KL_C, KL_PY], ids=["c-extension-module", "pure-python-module"])
def keyed_limiter(request: pytest.FixtureRequest) -> ModuleType:
    return _mod(request.param)


def _state(kl: object, keys: list[str]) -> tuple:
    return len(kl), kl.evictions, tuple(k in kl for k in keys)  # type: ignore[attr-defined,arg-type]


def test_selector_follows_the_switch() -> None:
    expected = _mod(KL_PY if NO_EXTENSIONS else KL_C).KeyedLimiter
    assert fast.keyed_limiter.COMPILED is (not NO_EXTENSIONS)
    assert fast.keyed_limiter.KeyedLimiter is expected
    assert fast.KeyedLimiter is expected


def test_module_constants_agree() -> None:
    py, c = _mod(KL_PY), _mod(KL_C)
    names = ("SAMPLE", "NOW_LIMIT", "SPAN_MAX", "INT64_MAX")
    assert [getattr(py, x) for x in names] == [getattr(c, x) for x in names]


def _run_pair(seed: int, rate: float, burst: int, capacity: int, nkeys: int, steps: int) -> tuple[int, int]:
    rng = random.Random(seed)
    a, b = _mod(KL_PY).KeyedLimiter(rate, burst, capacity), _mod(KL_C).KeyedLimiter(rate, burst, capacity)
    assert (a.rate_per_s, a.burst, a.interval_ns, a.capacity) == (
        b.rate_per_s, b.burst, b.interval_ns, b.capacity)
    keys = [f"k{i}" for i in range(nkeys)]
    hot = keys[: max(1, nkeys // 20)]
    interval = max(a.interval_ns, 1)
    now = rng.randint(-(2**40), 2**50)
    last_wait = admitted = 0
    for step in range(steps):
        kind = rng.random()
        if kind < 0.3:
            delta = 0
        elif kind < 0.45:
            delta = last_wait  # exactly on the boundary
        elif kind < 0.65:
            delta = rng.randint(0, interval // 20)  # many keys active at once: evictions
        elif kind < 0.85:
            delta = rng.randint(0, interval)
        else:
            delta = rng.randint(0, interval * (a.burst + 2))
        now += delta
        key = rng.choice(hot) if rng.random() < 0.4 else rng.choice(keys)
        n = 1 if rng.random() < 0.7 else rng.randint(1, a.burst + 1)
        method = "peek" if rng.random() < 0.15 else "take"
        ra, rb = getattr(a, method)(key, now, n), getattr(b, method)(key, now, n)
        assert ra == rb, f"seed={seed} step={step} {method}({key!r}, {now}, {n}): py={ra} c={rb}"
        assert (len(a), a.evictions) == (len(b), b.evictions), f"seed={seed} step={step}"
        last_wait = ra
        admitted += ra == 0
    assert _state(a, keys) == _state(b, keys)
    assert len(a) <= capacity
    return admitted, a.evictions


# (rate, burst, capacity, keys, evicts): tiny tables that evict all the time, a table of one,
# tables big enough never to evict, unlimited.
_CASES = [
    (1e6, 3, 8, 200, True), (1e6, 1, 1, 50, True), (100.0, 5, 16, 40, False), (1e9, 2, 3, 30, True),
    (7.3, 4, 100, 1000, False), (1e4, 10, 9, 100, True), (2.5e8, 1, 7, 20, True), (0.0, 5, 4, 30, False),
    (1e5, 64, 32, 5000, False), (33.3, 2, 1000, 300, False),
]


@pytest.mark.parametrize("case", range(len(_CASES)))
@pytest.mark.parametrize("seed", range(3))
def test_parity_random_sequences(case: int, seed: int) -> None:
    rate, burst, capacity, nkeys, evicts = _CASES[case]
    admitted, evictions = _run_pair(seed * 100 + case, rate, burst, capacity, nkeys, 1500)
    assert admitted
    assert bool(evictions) is evicts


_OPS = st.lists(
    st.tuples(st.integers(0, 11), st.integers(0, 3_000_000), st.integers(1, 4), st.booleans()),
    min_size=1, max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(rate=st.sampled_from([1e3, 1e4, 1e6, 3.3e5, 0.0]), burst=st.integers(0, 4), capacity=st.integers(1, 9),
       ops=_OPS)
def test_parity_hypothesis(
    rate: float, burst: int, capacity: int, ops: list[tuple[int, int, int, bool]]
) -> None:
    a, b = _mod(KL_PY).KeyedLimiter(rate, burst, capacity), _mod(KL_C).KeyedLimiter(rate, burst, capacity)
    keys = [f"user-{i}" for i in range(12)]
    now = 0
    for key_index, gap, n, peek in ops:
        now += gap
        key = keys[key_index]
        if peek:
            assert a.peek(key, now, n) == b.peek(key, now, n)
        else:
            assert a.take(key, now, n) == b.take(key, now, n)
        assert _state(a, keys) == _state(b, keys)


@pytest.mark.parametrize("seed", range(5))
def test_parity_extremes(seed: int) -> None:
    """Non-monotone clocks, range limits, huge n and bursts, odd keys: saturation and errors agree too."""
    py, c = _mod(KL_PY), _mod(KL_C)
    rng = random.Random(500 + seed)
    rate = rng.choice([1e-300, 5e-324, 1e-9, 0.5, 1e6, 1e12, math.inf, 2.5e8])
    burst = rng.choice([1, 3, 2**40, INT64_MAX, -5])
    capacity = rng.choice([1, 2, 5, 2**62])
    a, b = py.KeyedLimiter(rate, burst, capacity), c.KeyedLimiter(rate, burst, capacity)
    assert (a.rate_per_s, a.burst, a.interval_ns) == (b.rate_per_s, b.burst, b.interval_ns)
    edges = [-NOW_LIMIT, -NOW_LIMIT + 1, -1, 0, 1, NOW_LIMIT - 1, NOW_LIMIT]
    keys = ["", "a", "Zoë", "用户", "😀", "a" * 300]
    for _ in range(1500):
        now = rng.choice(edges) if rng.random() < 0.3 else rng.randint(-NOW_LIMIT, NOW_LIMIT)
        if rng.random() < 0.05:
            now = rng.choice([NOW_LIMIT + 1, -NOW_LIMIT - 1, INT64_MAX, 2**63, 1.0])
        n = rng.choice([1, 1, 2, a.burst, a.burst + 1, INT64_MAX, 0, -1, 2**64])
        key: object = rng.choice(keys) if rng.random() < 0.95 else rng.choice([None, b"a", 1])
        method = rng.choice(["take", "take", "peek"])
        assert outcome_of(getattr(a, method), key, now, n) == outcome_of(getattr(b, method), key, now, n)
        assert _state(a, keys) == _state(b, keys)


def test_same_interval_and_burst_as_token_bucket() -> None:
    py, c, tb = _mod(KL_PY), _mod(KL_C), _mod(TB_PY)
    rng = random.Random(9)
    rates = [1e9 / (k + 0.5) for k in range(30)] + [10 ** rng.uniform(-12, 10) for _ in range(500)]
    rates += [0.0, -1.0, math.inf, 5e-324]
    for rate in rates:
        burst = rng.choice([0, 1, 7, 2**40, INT64_MAX])
        ref = tb.TokenBucket(rate, burst)
        for mod in (py, c):
            kl = mod.KeyedLimiter(rate, burst, 10)
            assert (kl.rate_per_s, kl.burst, kl.interval_ns) == (ref.rate_per_s, ref.burst, ref.interval_ns)


@pytest.mark.parametrize(
    "args",
    [
        (1.0, 1.5, 10), ("1", 2, 10), (1.0, "2", 10), (math.nan, 2, 10), (1.0, 2**63, 10), (1.0, None, 10),
        (10**400, 2, 10), (1, True, 10), (1.0, 2, 0), (1.0, 2, -1), (1.0, 2, 2**62 + 1), (1.0, 2, 2**63),
        (1.0, 2, 1.0), (1.0, 2, None), (math.nan, 2, 0), (1.0, 2.5, 0),
    ],
)
def test_constructor_errors_match(args: tuple) -> None:
    ra, rb = outcome_of(_mod(KL_PY).KeyedLimiter, *args), outcome_of(_mod(KL_C).KeyedLimiter, *args)
    if isinstance(ra, type):
        assert ra is rb
    else:
        assert (ra.rate_per_s, ra.burst, ra.interval_ns, ra.capacity) == (
            rb.rate_per_s, rb.burst, rb.interval_ns, rb.capacity)


@pytest.mark.parametrize(
    "bad",
    [("k", 1.5), ("k", 10, 1.0), ("k", "5"), ("k", None), ("k", 5, 0), ("k", 5, -3), ("k", 2**63),
     (None, 5), (b"k", 5), (1, 5), (None, 1.5), ("k", NOW_LIMIT + 1), ("k", 1.5, 0)],
)
@pytest.mark.parametrize("method", ["take", "peek"])
def test_take_errors_match_and_change_nothing(bad: tuple, method: str) -> None:
    results = []
    for name in (KL_PY, KL_C):
        kl = _mod(name).KeyedLimiter(10.0, 2, 4)
        kl.take("k", 0)
        results.append(outcome_of(getattr(kl, method), *bad))
        assert (len(kl), kl.peek("k", 0, 2)) == (1, 100_000_000)
    assert isinstance(results[0], type) and issubclass(results[0], Exception)
    assert results[0] is results[1]


def test_properties_are_read_only(keyed_limiter: ModuleType) -> None:
    kl = keyed_limiter.KeyedLimiter(1.0, 2, 3)
    for attr in ("rate_per_s", "burst", "interval_ns", "capacity", "evictions"):
        with pytest.raises(AttributeError):
            setattr(kl, attr, 3)
    assert repr(kl) == "KeyedLimiter(rate_per_s=1.0, burst=2, capacity=3)"
