"""claimcore._fast: the Cython modules and their pure-Python twins must agree exactly.

Both sides are imported directly, whatever CLAIMCORE_NO_EXTENSIONS says (the
switch only changes which side claimcore._fast selects), so a missing extension
is a failure, never a skip. Parity tests run both twins side by side; behaviour
tests take one of them from a fixture (token_bucket, shard_hash, claim_codec)
over both implementations, as propcache does: ids c-extension-module and
pure-python-module.
"""

from __future__ import annotations

import importlib
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import claimcore._fast as fast
from claimcore._fast import NO_EXTENSIONS

pytestmark = pytest.mark.twins

TB_PY, TB_C = "claimcore._fast._token_bucket_py", "claimcore._fast._token_bucket_c"
SH_PY, SH_C = "claimcore._fast._shard_hash_py", "claimcore._fast._shard_hash_c"

INT64_MAX = 2**63 - 1
NOW_LIMIT = 2**62


def _mod(name: str) -> ModuleType:
    # Deliberately not guarded: an unbuilt extension is an error, not a skip.
    return importlib.import_module(name)


@pytest.fixture(scope="module", params=["c", "py"], ids=["c-extension-module", "pure-python-module"])
def impl(request: pytest.FixtureRequest) -> str:
    """The suffix of one implementation: "c" (the Cython module) or "py" (its twin)."""
    return request.param


@pytest.fixture(scope="module")
def token_bucket(impl: str) -> ModuleType:
    return _mod(f"claimcore._fast._token_bucket_{impl}")


@pytest.fixture(scope="module")
def shard_hash(impl: str) -> ModuleType:
    return _mod(f"claimcore._fast._shard_hash_{impl}")


@pytest.fixture(scope="module")
def claim_codec(impl: str) -> ModuleType:
    return _mod(f"claimcore._fast._claim_codec_{impl}")


def _outcome(fn: Callable[..., object], *args: object) -> object:
    """The result, or the exception type, so twins can be compared on errors too."""
    try:
        return fn(*args)
    except Exception as exc:  # compared by type
        return type(exc)


# --------------------------------------------------------------------------- selection


def test_selector_follows_the_switch() -> None:
    """Compiled modules unless CLAIMCORE_NO_EXTENSIONS is set; then the twins."""
    tb, sh = (TB_PY, SH_PY) if NO_EXTENSIONS else (TB_C, SH_C)
    assert fast.COMPILED == {"claim_codec": not NO_EXTENSIONS, "claim_wire": not NO_EXTENSIONS,
                             "keyed_limiter": not NO_EXTENSIONS,
                             "shard_hash": not NO_EXTENSIONS, "token_bucket": not NO_EXTENSIONS}
    assert fast.TokenBucket is _mod(tb).TokenBucket
    assert fast.shard_of is _mod(sh).shard_of
    assert fast.fnv1a64 is _mod(sh).fnv1a64
    assert fast.jump_hash is _mod(sh).jump_hash


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("1", True), ("yes", True)])
def test_no_extensions_env_parsing(value: str, expected: bool) -> None:
    env = dict(os.environ, CLAIMCORE_NO_EXTENSIONS=value)
    code = "import claimcore._fast as f; print(f.NO_EXTENSIONS, any(f.COMPILED.values()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == str(expected)
    if expected:
        assert out[1] == "False"


# --------------------------------------------------------------------------- token bucket parity


# One fixed rate per seed for seeds 0-9 (very high, very low, sub-ns T, unlimited ...),
# log-uniform random rates in [0.1, 1e7] for seeds 10-19.
_SEED_RATES = [1e6, 0.5, 1e9, 3e9, 7.3, 100.0, 2.5e8, 1e4, 33.3, 0.0]


def _seed_rate(seed: int, rng: random.Random) -> float:
    return _SEED_RATES[seed] if seed < len(_SEED_RATES) else 10 ** rng.uniform(-1.0, 7.0)


@pytest.mark.parametrize("seed", range(20))
def test_token_bucket_parity_random_sequences(seed: int) -> None:
    tb_py, tb_c = _mod(TB_PY), _mod(TB_C)
    rng = random.Random(seed)
    rate = _seed_rate(seed, rng)
    burst = rng.choice([0, 1, 2, 5, 64, rng.randint(1, 1000)])
    a, b = tb_py.TokenBucket(rate, burst), tb_c.TokenBucket(rate, burst)
    assert (a.rate_per_s, a.burst, a.interval_ns) == (b.rate_per_s, b.burst, b.interval_ns)
    interval = max(a.interval_ns, 1)
    now = rng.randint(0, 2**50)
    last_wait = 0
    admitted = refused = 0
    for step in range(2000):
        kind = rng.random()
        if kind < 0.2:
            delta = 0
        elif kind < 0.4:
            delta = last_wait  # land exactly on the boundary
        elif kind < 0.5:
            delta = max(last_wait - 1, 0)  # one ns short
        elif kind < 0.8:
            delta = rng.randint(0, 2 * interval)
        elif kind < 0.95:
            delta = rng.randint(0, 1000)
        else:
            delta = rng.randint(0, interval * (a.burst + 3))
        now += delta
        n = 1 if rng.random() < 0.6 else rng.randint(1, a.burst + 2)
        ra, rb = a.take(now, n), b.take(now, n)
        assert ra == rb, f"seed={seed} step={step} now={now} n={n}: py={ra} c={rb}"
        assert ra >= 0
        last_wait = ra
        admitted += ra == 0
        refused += ra > 0
    if a.interval_ns:  # limited buckets should see both outcomes
        assert admitted and refused


@pytest.mark.parametrize("seed", range(10))
def test_token_bucket_parity_extremes(seed: int) -> None:
    """Non-monotone clocks, range limits, huge n and bursts: saturation must agree too."""
    tb_py, tb_c = _mod(TB_PY), _mod(TB_C)
    rng = random.Random(1000 + seed)
    rate = rng.choice([1e-300, 5e-324, 1e-9, 0.5, 1e6, 1e12, math.inf, 2.5e8, 4e8])
    burst = rng.choice([1, 3, 2**40, INT64_MAX, -5])
    a, b = tb_py.TokenBucket(rate, burst), tb_c.TokenBucket(rate, burst)
    assert (a.rate_per_s, a.burst, a.interval_ns) == (b.rate_per_s, b.burst, b.interval_ns)
    edges = [-NOW_LIMIT, -NOW_LIMIT + 1, -1, 0, 1, NOW_LIMIT - 1, NOW_LIMIT]
    for _ in range(2000):
        now = rng.choice(edges) if rng.random() < 0.3 else rng.randint(-NOW_LIMIT, NOW_LIMIT)
        if rng.random() < 0.05:
            now = rng.choice([NOW_LIMIT + 1, -NOW_LIMIT - 1, INT64_MAX, 2**63, -(2**63) - 1])
        n = rng.choice([1, 1, 2, a.burst, a.burst + 1, INT64_MAX, 0, -1, 2**64])
        assert _outcome(a.take, now, n) == _outcome(b.take, now, n)


def test_token_bucket_interval_rounding_parity() -> None:
    tb_py, tb_c = _mod(TB_PY), _mod(TB_C)
    rng = random.Random(7)
    # 1e9 / rate lands on x.5 for these: round half to even in both.
    rates = [1e9 / (k + 0.5) for k in range(50)] + [4e8, 1e9 / 3.5, 2e9 / 3]
    rates += [10 ** rng.uniform(-12, 10) for _ in range(2000)]
    for rate in rates:
        a, b = tb_py.TokenBucket(rate, 3), tb_c.TokenBucket(rate, 3)
        assert (a.interval_ns, a.burst) == (b.interval_ns, b.burst), rate
        assert a.interval_ns == max(1, min(round(1e9 / rate), 2**62 - 1))
    assert tb_py.TokenBucket(4e8, 1).interval_ns == 2  # 2.5 -> 2 (half to even)


@pytest.mark.parametrize(
    "args",
    [
        (1.0, 1.5),
        ("1", 2),
        (1.0, "2"),
        (math.nan, 2),
        (1.0, 2**63),
        (1.0, None),
        (10**400, 2),
        (1, True),
        (1.0, -(2**63)),
    ],
)
def test_token_bucket_constructor_errors_match(args: tuple) -> None:
    tb_py, tb_c = _mod(TB_PY), _mod(TB_C)
    ra, rb = _outcome(tb_py.TokenBucket, *args), _outcome(tb_c.TokenBucket, *args)
    if isinstance(ra, type):
        assert ra is rb
    else:
        assert (ra.rate_per_s, ra.burst, ra.interval_ns) == (rb.rate_per_s, rb.burst, rb.interval_ns)


@pytest.mark.parametrize("bad", [(1.5,), (10, 1.0), ("5",), (None,), (5, 0), (5, -3), (2**63,)])
def test_token_bucket_take_errors_match(bad: tuple) -> None:
    tb_py, tb_c = _mod(TB_PY), _mod(TB_C)
    ra = _outcome(tb_py.TokenBucket(10.0, 2).take, *bad)
    rb = _outcome(tb_c.TokenBucket(10.0, 2).take, *bad)
    assert isinstance(ra, type) and issubclass(ra, Exception)
    assert ra is rb


# --------------------------------------------------------------------------- token bucket behaviour


def test_full_burst_then_wait_exactly_t(token_bucket: ModuleType) -> None:
    tb = token_bucket.TokenBucket(10.0, 5)
    interval = 100_000_000
    assert (tb.rate_per_s, tb.burst, tb.interval_ns) == (10.0, 5, interval)
    t0 = 1_000_000_000
    assert [tb.take(t0) for _ in range(5)] == [0] * 5
    wait = tb.take(t0)
    assert wait == interval
    assert tb.take(t0 + wait - 1) == 1  # refused, nothing consumed
    assert tb.take(t0 + wait) == 0
    assert tb.take(t0 + wait) == interval


def test_multi_token_take(token_bucket: ModuleType) -> None:
    tb = token_bucket.TokenBucket(1000.0, 10)  # T = 1 ms
    ms = 1_000_000
    assert tb.take(0, 7) == 0
    assert tb.take(0, 4) == 1 * ms  # 3 left, one more needed
    assert tb.take(0, 3) == 0
    assert tb.take(5 * ms, 6) == 1 * ms
    assert tb.take(6 * ms, 6) == 0


def test_n_above_burst_never_admitted_and_consumes_nothing(token_bucket: ModuleType) -> None:
    tb = token_bucket.TokenBucket(2.0, 4)  # T = 0.5 s
    assert tb.take(0, 5) == 5 * 500_000_000
    assert tb.take(10**12, 5) > 0
    assert [tb.take(0) for _ in range(4)] == [0, 0, 0, 0]


def test_fixed_overload_for_ten_seconds(token_bucket: ModuleType) -> None:
    rate, burst = 100.0, 20
    tb = token_bucket.TokenBucket(rate, burst)
    step = round(1e9 / (3 * rate))  # arrivals at 3x the bucket rate
    admitted = sum(tb.take(t) == 0 for t in range(0, 10_000_000_001, step))
    assert admitted <= burst + 10 * rate + 1
    assert admitted >= 10 * rate  # and it is not over-restrictive either


@pytest.mark.parametrize("rate", [0.0, -1.0, -math.inf])
def test_unlimited_always_admits(token_bucket: ModuleType, rate: float) -> None:
    tb = token_bucket.TokenBucket(rate, 0)
    assert tb.interval_ns == 0 and tb.burst == 1
    assert all(tb.take(0, n) == 0 for n in (1, 2, 10**6, INT64_MAX))
    assert all(tb.take(t) == 0 for t in range(1000))
    with pytest.raises(ValueError):
        tb.take(0, 0)


def test_take_validation(token_bucket: ModuleType) -> None:
    tb = token_bucket.TokenBucket(5.0, 3)
    for n in (0, -1, -(2**63)):
        with pytest.raises(ValueError):
            tb.take(0, n)
    for now in (NOW_LIMIT + 1, -NOW_LIMIT - 1):
        with pytest.raises(ValueError):
            tb.take(now)
    with pytest.raises(TypeError):
        tb.take(1.0)
    with pytest.raises(OverflowError):
        tb.take(2**63)
    assert tb.take(NOW_LIMIT) == 0 and tb.take(-NOW_LIMIT) > 0


def test_burst_below_one_is_one(token_bucket: ModuleType) -> None:
    tb = token_bucket.TokenBucket(1.0, 0)
    assert tb.burst == 1
    assert tb.take(5) == 0
    assert tb.take(5) == 1_000_000_000


def test_properties_are_read_only(token_bucket: ModuleType) -> None:
    tb = token_bucket.TokenBucket(1.0, 2)
    for attr in ("rate_per_s", "burst", "interval_ns"):
        with pytest.raises(AttributeError):
            setattr(tb, attr, 3)


_ARRIVALS = st.lists(st.tuples(st.integers(0, 3_000_000_000), st.integers(1, 12)), min_size=1, max_size=150)


@settings(max_examples=150, deadline=None)
@given(rate=st.floats(0.5, 1e6), burst=st.integers(1, 10), arrivals=_ARRIVALS)
def test_property_admitted_bound_over_every_window(
    token_bucket: ModuleType, rate: float, burst: int, arrivals: list[tuple[int, int]]
) -> None:
    """Admitted tokens in any window [t0, t1] <= burst + (t1 - t0) / T."""
    tb = token_bucket.TokenBucket(rate, burst)
    interval = tb.interval_ns
    scale = max(1, interval // 4)  # make gaps comparable to T whatever the rate
    now, log = 0, []
    for gap, n in arrivals:
        now += gap % (8 * interval) if gap % 3 else gap % scale
        if tb.take(now, n) == 0:
            log.append((now, n))
    for i, (t0, _) in enumerate(log):
        total = 0
        for t1, n in log[i:]:
            total += n
            assert total * interval <= burst * interval + (t1 - t0)


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(0.5, 1e7),
    burst=st.integers(1, 20),
    ops=st.lists(st.tuples(st.integers(0, 10**10), st.integers(1, 20)), max_size=60),
)
def test_property_wait_is_exact(
    token_bucket: ModuleType, rate: float, burst: int, ops: list[tuple[int, int]]
) -> None:
    """A refusal's wait w is exact: still refused at now + w - 1, admitted at now + w."""
    tb = token_bucket.TokenBucket(rate, burst)
    now = 0
    for gap, n in ops:
        now += gap
        n = min(n, tb.burst)
        wait = tb.take(now, n)
        if wait:
            assert tb.take(now + wait - 1, n) > 0
            assert tb.take(now + wait, n) == 0
            now += wait


# --------------------------------------------------------------------------- shard hash


def test_fnv1a64_known_values(shard_hash: ModuleType) -> None:
    fnv = shard_hash.fnv1a64
    assert fnv(b"") == 0xCBF29CE484222325
    assert fnv(b"a") == 0xAF63DC4C8601EC8C
    assert fnv(b"foobar") == 0x85944171F73967E8
    with pytest.raises(TypeError):
        fnv("a")


def test_jump_hash_basics(shard_hash: ModuleType) -> None:
    rng = random.Random(3)
    for _ in range(500):
        key, buckets = rng.getrandbits(64), rng.randint(1, 5000)
        assert 0 <= shard_hash.jump_hash(key, buckets) < buckets
        assert shard_hash.jump_hash(key, 1) == 0
    # key 0 -> first step gives key 1, j = 2**31 >= any allowed bucket count.
    assert shard_hash.jump_hash(0, shard_hash.MAX_BUCKETS) == 0
    assert shard_hash.jump_hash(2**64 - 1, shard_hash.MAX_BUCKETS) < shard_hash.MAX_BUCKETS
    for buckets in (0, -1, shard_hash.MAX_BUCKETS + 1):
        with pytest.raises(ValueError):
            shard_hash.jump_hash(1, buckets)
        with pytest.raises(ValueError):
            shard_hash.shard_of("u", buckets)
    for key in (-1, 2**64):
        with pytest.raises(OverflowError):
            shard_hash.jump_hash(key, 3)


@pytest.mark.parametrize(
    ("key", "buckets", "expected"),
    [
        (15127819295737311633, 862118944, 561469201),
        (5271766905296825770, 46412186, 46412185),
        (1339926149601007325, 234881024, 234881023),
    ],
)
def test_jump_hash_float_expression_pinned(
    shard_hash: ModuleType, key: int, buckets: int, expected: int
) -> None:
    """Cases where j lands on the bucket count and (b+1) * (2**31 / d) differs from
    (b+1) * 2**31 / d by one: they pin the exact float expression (and evaluation order)."""
    assert shard_hash.jump_hash(key, buckets) == expected


# Golden values: changing any of these reshuffles every user; don't.
PINNED_16 = [11, 12, 7, 5, 1, 3, 3, 8]
PINNED_1024 = [961, 749, 2, 423, 84]


def test_shard_of_pinned_values(shard_hash: ModuleType) -> None:
    assert shard_hash.shard_of("", 1) == 0
    assert shard_hash.shard_of("user-1", 16) == shard_hash.jump_hash(shard_hash.fnv1a64(b"user-1"), 16)
    assert [shard_hash.shard_of(f"user-{i}", 16) for i in range(8)] == PINNED_16
    assert [shard_hash.shard_of(k, 1024) for k in ("alice", "bob", "Zoë", "用户", "😀")] == PINNED_1024


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 31, 100])
def test_growing_buckets_moves_about_one_over_n_plus_one(shard_hash: ModuleType, n: int) -> None:
    jump = shard_hash.jump_hash
    rng = random.Random(n)
    keys = [rng.getrandbits(64) for _ in range(10_000)]
    moved = 0
    for key in keys:
        before, after = jump(key, n), jump(key, n + 1)
        if before != after:
            assert after == n  # keys only ever move to the new bucket
            moved += 1
    expected = len(keys) / (n + 1)
    sd = math.sqrt(len(keys) * (1 / (n + 1)) * (n / (n + 1)))
    assert abs(moved - expected) <= 6 * sd + 5, (moved, expected)


def test_shard_of_is_balanced(shard_hash: ModuleType) -> None:
    shard_of = shard_hash.shard_of
    counts = [0] * 16
    for i in range(16_000):
        counts[shard_of(f"user-{i}", 16)] += 1
    assert min(counts) > 800 and max(counts) < 1200, counts


def _random_text(rng: random.Random) -> str:
    alphabet_kind = rng.random()
    chars = []
    for _ in range(rng.randint(0, 40)):
        if alphabet_kind < 0.3:
            cp = rng.randint(0x20, 0x7E)
        else:
            cp = rng.randint(0, 0x10FFFF)
            if 0xD800 <= cp <= 0xDFFF:  # lone surrogates cannot be UTF-8 encoded
                cp = 0xFFFD
        chars.append(chr(cp))
    return "".join(chars)


@pytest.mark.parametrize("seed", range(20))
def test_shard_hash_parity_random(seed: int) -> None:
    py, c = _mod(SH_PY), _mod(SH_C)
    rng = random.Random(seed)
    for _ in range(2000):
        text, shards = _random_text(rng), rng.randint(1, 1024)
        assert py.shard_of(text, shards) == c.shard_of(text, shards), (text, shards)
        raw = rng.randbytes(rng.randint(0, 64))
        assert py.fnv1a64(raw) == c.fnv1a64(raw)
        key = rng.getrandbits(64) if rng.random() < 0.9 else rng.choice([0, 1, 2**64 - 1])
        buckets = rng.randint(1, 1024) if rng.random() < 0.8 else rng.randint(1, py.MAX_BUCKETS)
        assert py.jump_hash(key, buckets) == c.jump_hash(key, buckets), (key, buckets)


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        ("jump_hash", (1.0, 3)),
        ("jump_hash", (1, 3.0)),
        ("jump_hash", (-1, 3)),
        ("jump_hash", (2**64, 3)),
        ("jump_hash", (1, 2**63)),
        ("jump_hash", (1, 0)),
        ("shard_of", (b"x", 3)),
        ("shard_of", (None, 3)),
        ("shard_of", ("x", 3.0)),
        ("shard_of", ("\ud800", 3)),
        ("shard_of", ("x", -(2**63) - 1)),
        ("fnv1a64", ("x",)),
        ("fnv1a64", (bytearray(b"x"),)),
        ("fnv1a64", (None,)),
    ],
)
def test_shard_hash_errors_match(fn: str, args: tuple) -> None:
    ra = _outcome(getattr(_mod(SH_PY), fn), *args)
    rb = _outcome(getattr(_mod(SH_C), fn), *args)
    assert isinstance(ra, type) and issubclass(ra, Exception)
    assert ra is rb


# --------------------------------------------------------------------------- claim codec parity

CODEC_PY, CODEC_C = "claimcore._fast._claim_codec_py", "claimcore._fast._claim_codec_c"
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@+=-"


def _redis_py_packing(sha: str, calls: list, now_ms: int) -> bytes:
    """The oracle: what redis-py itself would send for each EVALSHA."""
    from redis.asyncio.connection import Connection

    conn = Connection()
    return b"".join(
        b"".join(conn.pack_command("EVALSHA", sha, 5, state, users, reqs, log, elig, now_ms, prefix, epoch,
                                   trusted, *[x for item in items for x in item]))
        for state, users, reqs, log, elig, prefix, epoch, trusted, items in calls
    )


@pytest.mark.parametrize("seed", range(10))
def test_pack_claims_matches_redis_py_byte_for_byte(seed: int) -> None:
    rng = random.Random(seed)

    def ident(lo: int = 1) -> str:
        return "".join(rng.choice(ID_ALPHABET) for _ in range(rng.randint(lo, 70)))

    py, c = _mod(CODEC_PY), _mod(CODEC_C)
    for _ in range(50):
        calls = [(ident(), ident(), ident(), ident(), ident(), ident(),
                  str(rng.choice([0, 7, rng.randint(0, 10**12)])),
                  str(rng.choice([0, rng.randint(0, 2**53)])),
                  [(ident(), ident(), ident(0)) for _ in range(rng.randint(0, 60))])
                 for _ in range(rng.randint(1, 8))]
        now = rng.choice([0, 1, 9, 10, rng.randint(0, 2**53)])
        expected = _redis_py_packing("e" * 40, calls, now)
        assert py.pack_claims("e" * 40, calls, now) == expected
        assert c.pack_claims("e" * 40, calls, now) == expected


def test_compiled_unpack_makes_only_bare_tuple_types() -> None:
    """It builds each result as tuple.__new__ would: a tuple subclass with a __dict__ is refused, and
    the results it makes are whole objects (refcounts as the twin's, garbage-collected)."""
    import gc
    import sys

    from claimcore.store.replies import ItemResult

    c, py = _mod(CODEC_C), _mod(CODEC_PY)
    with pytest.raises(TypeError, match="bare tuple"):
        c.unpack_claim_reply([1, 1, "v", "2"], type("WithDict", (tuple,), {}))
    mine, theirs = c.unpack_claim_reply([1, 1, "v", "2"], ItemResult)[1], py.unpack_claim_reply(
        [1, 1, "v", "2"], ItemResult)[1]
    assert sys.getrefcount(mine[0]) == sys.getrefcount(theirs[0])
    assert gc.is_tracked(mine[0]) and mine[0] == (1, "v", 2) and mine[0].voucher_id == "v"


@pytest.mark.parametrize("seed", range(5))
def test_unpack_claim_reply_twins_agree(seed: int) -> None:
    from claimcore.store.replies import ItemResult

    rng = random.Random(seed)
    py, c = _mod(CODEC_PY), _mod(CODEC_C)
    for _ in range(200):
        reply: list[object] = [rng.randint(0, 10**6)]
        for _ in range(rng.randint(0, 300)):  # at arrives as str (granted now) or int (replays)
            at = rng.randint(0, 2**53)
            reply += [rng.randint(1, 7), f"c-{rng.randint(0, 9)}-{rng.randint(1, 10**6)}",
                      str(at) if rng.random() < 0.5 else at]
        stock, results = c.unpack_claim_reply(reply, ItemResult)
        assert (stock, results) == py.unpack_claim_reply(reply, ItemResult)
        assert stock == reply[0] and len(results) == (len(reply) - 1) // 3
        assert all(type(r) is ItemResult and isinstance(r.granted_at_ms, int) for r in results)
        if results:
            assert results[-1].voucher_id == reply[-2] and results[-1].code == reply[-3]


@pytest.mark.parametrize("bad", ["ü", "snow\u2603", "\U0001f600"])
def test_pack_claims_refuses_non_ascii(claim_codec: ModuleType, bad: str) -> None:
    with pytest.raises(ValueError):
        claim_codec.pack_claims("e" * 40, [("s", "u", "r", "l", "e", "p", "0", "0", [("user", bad, "")])], 1)
