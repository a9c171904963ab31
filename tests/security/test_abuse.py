"""Anti-scalper and abuse limits (issue 7): KeyedLimiter behaviour and claimcore.security.abuse.AbuseLimits.

KeyedLimiter tests run on both twins (imported directly); AbuseLimits runs on whichever
one claimcore._fast selects (so CLAIMCORE_NO_EXTENSIONS=1 runs it on the twin).
"""

from __future__ import annotations

import importlib
import ipaddress
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claimcore._fast import KeyedLimiter
from claimcore.security.abuse import (
    NOT_ELIGIBLE,
    RATE_LIMITED,
    AbuseLimits,
    DenyList,
    LimitSettings,
    Verdict,
    normalize_ip,
    parse_channel_quota,
)

pytestmark = pytest.mark.twins

KL_PY, KL_C = "claimcore._fast._keyed_limiter_py", "claimcore._fast._keyed_limiter_c"
IMPLS = [pytest.param(KL_PY, id="py"), pytest.param(KL_C, id="c")]
NOW_LIMIT = 2**62
S = 1_000_000_000
MS = 1_000_000


def _mod(name: str) -> ModuleType:
    return importlib.import_module(name)


class ModelGCRA:
    """The reference: one independent GCRA bucket per key (TokenBucket's docstring, literally)."""

    def __init__(self, interval: int, burst: int) -> None:
        self.interval, self.burst = interval, burst
        self.tat: dict[str, int] = {}

    def take(self, key: str, now: int, n: int) -> int:
        t, b = self.interval, self.burst
        if n > b:
            return n * t
        base = max(self.tat.get(key, -NOW_LIMIT), now)
        if base + n * t - now <= b * t:
            self.tat[key] = base + n * t
            return 0
        return base + n * t - b * t - now


# --------------------------------------------------------------------------- KeyedLimiter


@pytest.mark.parametrize("name", IMPLS)
def test_each_key_is_a_token_bucket_of_its_own(name: str) -> None:
    kl = _mod(name).KeyedLimiter(10.0, 3, 100)  # T = 100 ms
    assert [kl.take("a", 0) for _ in range(3)] == [0, 0, 0]
    assert kl.take("a", 0) == 100 * MS
    assert [kl.take("b", 0) for _ in range(3)] == [0, 0, 0]  # b is untouched by a
    assert kl.take("a", 100 * MS - 1) == 1
    assert kl.take("a", 100 * MS) == 0
    assert kl.take("a", 0, 4) == 400 * MS  # n > burst: never, nothing consumed
    assert len(kl) == 2 and kl.evictions == 0 and "a" in kl and "c" not in kl


@pytest.mark.parametrize("name", IMPLS)
def test_peek_consumes_and_inserts_nothing(name: str) -> None:
    kl = _mod(name).KeyedLimiter(10.0, 2, 100)
    assert kl.peek("a", 0) == 0 and "a" not in kl and len(kl) == 0
    kl.take("a", 0, 2)
    assert kl.peek("a", 0) == 100 * MS == kl.peek("a", 0)
    assert kl.peek("a", 0, 2) == 200 * MS
    assert kl.take("a", 100 * MS) == 0


@pytest.mark.parametrize("name", IMPLS)
def test_refusal_never_inserts_and_unlimited_stores_nothing(name: str) -> None:
    mod = _mod(name)
    kl = mod.KeyedLimiter(10.0, 2, 100)
    assert kl.take("new", 0, 3) == 300 * MS and "new" not in kl
    free = mod.KeyedLimiter(0.0, 2, 5)
    assert all(free.take(f"k{i}", i, 10**6) == 0 for i in range(1000))
    assert len(free) == 0 and free.interval_ns == 0


@pytest.mark.parametrize("name", IMPLS)
def test_expired_entries_are_dropped_not_evicted(name: str) -> None:
    kl = _mod(name).KeyedLimiter(1.0, 5, 8)  # T = 1 s
    for i in range(8):
        assert kl.take(f"k{i}", 0) == 0  # tat = 1 s each
    assert len(kl) == 8
    assert kl.take("new", 2 * S) == 0  # all eight are full again: the sweep drops them
    assert len(kl) == 1 and kl.evictions == 0 and "new" in kl


@pytest.mark.parametrize("name", IMPLS)
def test_full_table_evicts_the_fullest_bucket_and_it_starts_fresh(name: str) -> None:
    kl = _mod(name).KeyedLimiter(1.0, 10, 8)
    for i in range(8):  # k_i has taken 8 - i tokens: k7 is the closest to full
        assert kl.take(f"k{i}", 0, 8 - i) == 0
    assert kl.take("new", 0) == 0
    assert kl.evictions == 1 and len(kl) == 8
    assert "k7" not in kl and all(f"k{i}" in kl for i in range(7))
    # The consequence, documented: the evicted key got a fresh (full) bucket.
    assert kl.take("k7", 0, 10) == 0
    assert kl.evictions == 2


@pytest.mark.parametrize("name", IMPLS)
def test_bounded_under_100k_distinct_keys(name: str) -> None:
    kl = _mod(name).KeyedLimiter(1.0, 2, 1000)
    for i in range(100_000):
        assert kl.take(f"scalper-{i}", i * 1000) == 0  # all active at once: 1 s of tat each
        assert len(kl) <= 1000
    assert len(kl) == 1000 and kl.evictions == 99_000
    hot = _mod(name).KeyedLimiter(1.0, 2, 1000)
    for i in range(20_000):  # keys expired by the next arrival: dropped, never evicted
        hot.take(f"u-{i}", i * S)
    assert len(hot) <= 8 and hot.evictions == 0


_OPS = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 400), st.integers(1, 3)),
                min_size=1, max_size=150)


@pytest.mark.parametrize("name", IMPLS)
@settings(max_examples=120, deadline=None)
@given(burst=st.integers(1, 4), capacity=st.integers(1, 12), ops=_OPS)
def test_model_per_key_buckets_reset_only_by_eviction(
    name: str, burst: int, capacity: int, ops: list[tuple[int, int, int]]
) -> None:
    """Equal to one independent bucket per key, except that a forgotten key starts fresh; a key is only
    forgotten when a new key is inserted, lossless (tat <= now) unless counted in ``evictions``; and the
    admitted tokens of a key in any window [t0, t1] without an eviction of it are <= burst + (t1 - t0)/T."""
    kl = _mod(name).KeyedLimiter(1e7, burst, capacity)  # T = 100 ns
    model = ModelGCRA(kl.interval_ns, kl.burst)
    interval = kl.interval_ns
    lives: dict[str, list[list[tuple[int, int]]]] = {}
    now = 0
    for key_index, gap, n in ops:
        now += gap
        key = f"k{key_index}"
        was_in, before = key in kl, kl.evictions
        wait = kl.take(key, now, n)
        assert wait == model.take(key, now, n)
        if wait == 0:
            lives.setdefault(key, [[]])[-1].append((now, n))
        forgotten = [k for k in model.tat if k not in kl]
        if forgotten:
            assert not was_in and wait == 0  # only the insertion of a new key forgets
        evicted = [k for k in forgotten if model.tat[k] > now]
        assert kl.evictions - before == len(evicted) <= 1
        for k in forgotten:
            del model.tat[k]
        for k in evicted:
            lives[k].append([])
        assert len(kl) == len(model.tat) <= capacity
    for key_lives in lives.values():
        for log in key_lives:
            for i, (t0, _) in enumerate(log):
                total = 0
                for t1, n in log[i:]:
                    total += n
                    assert total * interval <= burst * interval + (t1 - t0)


# --------------------------------------------------------------------------- IPs


def test_normalize_ip() -> None:
    assert normalize_ip("203.0.113.7") == "203.0.113.7"
    assert normalize_ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert normalize_ip("2001:DB8:1:2::1") == "2001:db8:1:2::/64"
    assert normalize_ip("::ffff:198.51.100.9") == "198.51.100.9"
    assert normalize_ip("fe80::1%eth0") == "fe80::/64"
    assert normalize_ip("::1") == "::/64"
    for bad in ("", "1.2.3", "256.1.1.1", "example.com", "1.2.3.4/32", "1.2.3.4:80", " 1.2.3.4"):
        with pytest.raises(ValueError, match="invalid IP address"):
            normalize_ip(bad)


def _reference_key(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return str(addr)
    return str(ipaddress.IPv6Network((addr, 64), strict=False))


@settings(max_examples=300, deadline=None)
@given(addr=st.ip_addresses())
def test_normalize_ip_agrees_with_ipaddress(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    expected = _reference_key(addr)
    texts = [str(addr)]
    if addr.version == 6:
        texts += [addr.exploded, addr.exploded.upper(), f"{addr}%eth0"]
    for text in texts:
        assert normalize_ip(text) == expected, text
    deny = DenyList(ips=[str(addr)])
    assert all(deny.ip_denied(text) for text in texts)


def test_ipv6_addresses_of_one_64_share_a_bucket() -> None:
    limits = AbuseLimits(ip_rate=1.0, ip_burst=2)
    assert limits.check("app", "u1", "", "2001:db8:0:1::1", 0) is None
    assert limits.check("app", "u2", "", "2001:db8:0:1:ffff:ffff:ffff:ffff", 0) is None
    assert limits.check("app", "u3", "", "2001:db8:0:1::abcd", 0) == Verdict(RATE_LIMITED, 1000, "ip rate")
    assert limits.check("app", "u4", "", "2001:db8:0:2::1", 0) is None  # the next /64 is another bucket
    assert limits.check("app", "u5", "", "10.0.0.1", 0) is None
    assert limits.check("app", "u6", "", "::ffff:10.0.0.1", 0) is None  # IPv4-mapped = the same IPv4
    assert limits.check("app", "u7", "", "10.0.0.1", 0) == Verdict(RATE_LIMITED, 1000, "ip rate")
    assert limits.check("app", "u8", "", "10.0.0.2", 0) is None  # IPv4 is never grouped


def test_invalid_ip_raises_and_consumes_nothing() -> None:
    limits = AbuseLimits(user_rate=1.0, user_burst=1, ip_rate=1.0)
    with pytest.raises(ValueError, match=r"invalid IP address 'not-an-ip'"):
        limits.check("app", "u1", "", "not-an-ip", 0)
    assert limits.check("app", "u1", "", "", 0) is None  # empty: unknown, no IP limit; u1 was not charged
    assert len(limits.ips) == 0  # type: ignore[arg-type]


# --------------------------------------------------------------------------- AbuseLimits


def test_everything_off_by_default() -> None:
    limits = AbuseLimits()
    assert not limits.enabled and limits.stats() == {}
    assert all(limits.check("c", "u", "d", "1.2.3.4", t) is None for t in range(1000))
    assert AbuseLimits.from_settings(LimitSettings()).enabled is False


def test_order_of_checks_and_reasons() -> None:
    limits = AbuseLimits(user_rate=1.0, device_rate=1.0, ip_rate=1.0, channel_quotas={"bank": (1.0, 1)},
                         deny=DenyList(users=["banned"]))
    assert limits.check("bank", "u", "d", "1.1.1.1", 0) is None  # one token from each bucket
    assert limits.check("bank", "banned", "d", "1.1.1.1", 0) == Verdict(NOT_ELIGIBLE, 0, "user denied")
    assert limits.check("bank", "u", "d", "1.1.1.1", 0) == Verdict(RATE_LIMITED, 1000, "channel quota")
    assert limits.check("pay", "u", "d", "1.1.1.1", 0) == Verdict(RATE_LIMITED, 1000, "user rate")
    assert limits.check("pay", "v", "d", "1.1.1.1", 0) == Verdict(RATE_LIMITED, 1000, "device rate")
    assert limits.check("pay", "v", "e", "1.1.1.1", 0) == Verdict(RATE_LIMITED, 1000, "ip rate")
    assert limits.check("pay", "v", "e", "1.1.1.2", 0) is None
    assert limits.check("pay", "w", "", "", 0) is None  # unknown device and IP: only the user is limited
    assert limits.stats() == {
        "user": {"entries": 3, "capacity": 1_000_000, "evictions": 0},
        "device": {"entries": 2, "capacity": 1_000_000, "evictions": 0},
        "ip": {"entries": 2, "capacity": 1_000_000, "evictions": 0},
    }


def test_retry_after_is_the_longest_wait_rounded_up() -> None:
    limits = AbuseLimits(user_rate=10.0, user_burst=1, ip_rate=0.5, ip_burst=1)  # T = 100 ms and 2 s
    assert limits.check("c", "u", "", "1.1.1.1", 0) is None
    assert limits.check("c", "u", "", "1.1.1.2", 0) == Verdict(RATE_LIMITED, 100, "user rate")
    assert limits.check("c", "u", "", "1.1.1.2", 100 * MS - 1) == Verdict(RATE_LIMITED, 1, "user rate")
    assert limits.check("c", "u", "", "1.1.1.2", 49_500_001) == Verdict(RATE_LIMITED, 51, "user rate")
    # Both refuse: the reason is the user's (first in order), the wait the IP's (the longer one).
    assert limits.check("c", "u", "", "1.1.1.1", 50 * MS) == Verdict(RATE_LIMITED, 1950, "user rate")
    assert limits.check("c", "v", "", "1.1.1.1", 2 * S - 1) == Verdict(RATE_LIMITED, 1, "ip rate")
    assert limits.check("c", "v", "", "1.1.1.1", 2 * S) is None


def test_a_refusal_later_in_the_order_consumes_nothing_earlier() -> None:
    limits = AbuseLimits(user_rate=1.0, user_burst=2, ip_rate=1.0, ip_burst=1, channel_quotas={"c": (1.0, 2)})
    assert limits.check("c", "u", "", "1.1.1.1", 0) is None  # user 1 left, ip 0 left, channel 1 left
    for _ in range(50):  # refused by the IP: neither the user's token nor the channel's is spent
        assert limits.check("c", "u", "", "1.1.1.1", 0) == Verdict(RATE_LIMITED, 1000, "ip rate")
    assert limits.check("c", "u", "", "1.1.1.2", 0) is None
    assert limits.check("c", "x", "", "1.1.1.3", 0) == Verdict(RATE_LIMITED, 1000, "channel quota")
    assert limits.check("d", "u", "", "1.1.1.4", 0) == Verdict(RATE_LIMITED, 1000, "user rate")


def test_a_scalpers_refusals_do_not_spend_its_channels_quota() -> None:
    limits = AbuseLimits(user_rate=0.1, user_burst=1, channel_quotas={"app": (1.0, 3)})
    assert limits.check("app", "scalper", "", "", 0) is None
    for _ in range(1000):
        assert limits.check("app", "scalper", "", "", 0) == Verdict(RATE_LIMITED, 10_000, "user rate")
    assert [limits.check("app", f"user-{i}", "", "", 0) for i in range(3)] == [
        None, None, Verdict(RATE_LIMITED, 1000, "channel quota")]


_POOL = st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["u0", "u1", "u2", "u3"]),
                  st.sampled_from(["", "d0", "d1"]),
                  st.sampled_from(["", "10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2",
                                   "2001:db8:1::1"]),
                  st.integers(0, 400 * MS))


def _snapshot(limits: AbuseLimits, now: int) -> tuple:
    """Everything a later claim can observe: membership and the full wait of every key of every bucket."""
    keys = {"user": ["u0", "u1", "u2", "u3"], "device": ["d0", "d1"],
            "ip": ["10.0.0.1", "10.0.0.2", "2001:db8::/64", "2001:db8:1::/64"]}
    tables = {"user": limits.users, "device": limits.devices, "ip": limits.ips}
    snap: list[object] = []
    for kind, table in tables.items():
        assert table is not None
        snap += [(k in table, table.peek(k, now, table.burst)) for k in keys[kind]]
        snap.append((len(table), table.evictions))
    snap += [(c, q.peek("", now, q.burst)) for c, q in sorted(limits.channels.items())]
    return tuple(snap)


@settings(max_examples=150, deadline=None)
@given(claims=st.lists(_POOL, min_size=1, max_size=60), capacity=st.integers(2, 6))
def test_property_nothing_consumed_on_refusal(
    claims: list[tuple[str, str, str, str, int]], capacity: int
) -> None:
    limits = AbuseLimits(user_rate=5.0, user_burst=2, device_rate=3.0, device_burst=2, ip_rate=4.0,
                         ip_burst=1, capacity=capacity, channel_quotas={"a": (6.0, 2), "b": (2.0, 1)},
                         deny=DenyList(users=["u3"], ips=["2001:db8:1::/48"]))
    now = 0
    for channel, user, device, ip, gap in claims:
        now += gap
        before = _snapshot(limits, now)
        verdict = limits.check(channel, user, device, ip, now)
        after = _snapshot(limits, now)
        if verdict is None:
            assert user != "u3" and not ip.startswith("2001:db8:1:")
            assert after != before  # a token was taken from the user's bucket at least
        else:
            assert after == before
            assert (verdict.outcome == NOT_ELIGIBLE) is (verdict.retry_after_ms == 0)
            if verdict.outcome == RATE_LIMITED:
                assert verdict.retry_after_ms >= 1


@settings(max_examples=100, deadline=None)
@given(traffic=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 30 * MS)), max_size=120))
def test_property_channel_isolation(traffic: list[tuple[str, int]]) -> None:
    """B's outcomes are the same whatever A sends: one channel at its quota cannot starve another."""
    quotas = {"a": (20.0, 3), "b": (20.0, 3)}
    shared, alone = AbuseLimits(channel_quotas=quotas), AbuseLimits(channel_quotas=quotas)
    now = 0
    for i, (channel, gap) in enumerate(traffic):
        now += gap
        for _ in range(5 if channel == "a" else 1):  # A floods at 5x
            got = shared.check(channel, f"user-{i}", "", "", now)
        if channel == "b":
            assert got == alone.check("b", f"user-{i}", "", "", now)
    assert shared.check("other", "x", "", "", now) is None  # no quota for unlisted channels


def test_retry_after_is_enough() -> None:
    limits = AbuseLimits(user_rate=3.0, user_burst=2, device_rate=7.0, device_burst=1, ip_rate=2.0,
                         ip_burst=3, channel_quotas={"c": (5.0, 2)})
    now, admitted = 0, 0
    for i in range(200):
        verdict = limits.check("c", f"u{i % 3}", f"d{i % 2}", "10.0.0.1", now)
        if verdict is None:
            admitted += 1
            continue
        retry = now + verdict.retry_after_ms * MS
        assert limits.check("c", f"u{i % 3}", f"d{i % 2}", "10.0.0.1", retry) is None
        now = retry
    assert admitted < 200


# --------------------------------------------------------------------------- deny list

DENY_FILE = """\
# scalpers seen at the last launch
user:u-123
  user:u-456
device:dev:ab:cd
ip:203.0.113.9

ip:198.51.100.0/24
ip:2001:db8:dead::/48 \t
ip:2001:db8:0:1::7
ip:::ffff:192.0.2.0/120
"""


def test_deny_list_file(tmp_path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text(DENY_FILE)
    deny = DenyList.from_file(path)
    assert len(deny) == 8 and deny
    assert deny.user_denied("u-123") and deny.user_denied("u-456") and not deny.user_denied("u-789")
    assert deny.device_denied("dev:ab:cd")  # verbatim after the first colon
    assert deny.ip_denied("203.0.113.9") and not deny.ip_denied("203.0.113.10")
    assert deny.ip_denied("198.51.100.0") and deny.ip_denied("198.51.100.255")
    assert not deny.ip_denied("198.51.101.0")
    assert deny.ip_denied("2001:db8:dead:beef::1") and not deny.ip_denied("2001:db8:deae::1")
    assert deny.ip_denied("2001:db8:0:1::7")
    assert not deny.ip_denied("2001:db8:0:1::8")  # a denied address is that address, not its /64
    assert deny.ip_denied("192.0.2.77") and deny.ip_denied("::ffff:192.0.2.1")  # mapped net = IPv4 net
    assert deny.ip_denied("::ffff:203.0.113.9")
    with pytest.raises(ValueError, match="invalid IP address"):
        deny.ip_denied("nope")

    limits = AbuseLimits.from_settings(LimitSettings(deny_file=str(path), user_rate=1.0))
    assert limits.check("c", "u-123", "", "", 0) == Verdict(NOT_ELIGIBLE, 0, "user denied")
    assert limits.check("c", "x", "dev:ab:cd", "", 0) == Verdict(NOT_ELIGIBLE, 0, "device denied")
    assert limits.check("c", "x", "", "198.51.100.7", 0) == Verdict(NOT_ELIGIBLE, 0, "ip denied")
    assert limits.check("c", "x", "", "198.51.99.7", 0) is None  # denials consumed nothing
    assert limits.check("c", "u-123", "", "", 0) == Verdict(NOT_ELIGIBLE, 0, "user denied")  # deny first


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("users:u1", "expected user:ID"),
        ("u1", "expected user:ID"),
        ("User:u1", "expected user:ID"),
        ("user:", "empty user entry"),
        ("device:   ", "empty device entry"),
        ("ip:300.1.2.3", "invalid IP address or CIDR network '300.1.2.3'"),
        ("ip:10.0.0.1/8", "has host bits set"),
        ("ip:10.0.0.0/33", "invalid IP address or CIDR network"),
        ("ip:host.example", "invalid IP address or CIDR network"),
    ],
)
def test_deny_list_bad_line_names_its_number(tmp_path, line: str, message: str) -> None:
    path = tmp_path / "deny.txt"
    path.write_text(f"# header\nuser:ok\n\n{line}\nuser:also-ok\n")
    with pytest.raises(ValueError, match=message) as info:
        DenyList.from_file(path)
    assert str(info.value).startswith(f"{path}:4: ")
    with pytest.raises(ValueError, match=r"^<deny list>:2: "):
        DenyList.parse(["user:a", line])
    with pytest.raises(ValueError, match=r"^deny.txt:4: "):
        DenyList.parse(path.read_text(), source="deny.txt")
    with pytest.raises(ValueError, match=message):
        AbuseLimits.from_settings(LimitSettings(deny_file=str(path)))


def test_deny_list_empty_and_comments_only() -> None:
    deny = DenyList.parse("# nothing yet\n\n   # still nothing\n")
    assert not deny and len(deny) == 0
    assert deny.reason("u", "d", "1.2.3.4") is None


# --------------------------------------------------------------------------- settings


def test_settings_and_defaults() -> None:
    settings_ = LimitSettings(user_rate=2.5, device_rate=1.0, device_burst=4, ip_rate=100.0, ip_burst=0,
                              capacity=5000, channel_quotas=dict([parse_channel_quota("bank=50:100")]))
    limits = AbuseLimits.from_settings(settings_)
    assert limits.enabled
    assert (limits.users.burst, limits.users.capacity) == (3, 5000)  # type: ignore[union-attr]
    assert limits.devices.burst == 4  # type: ignore[union-attr]
    assert limits.ips.burst == 100 and limits.ips.interval_ns == 10 * MS  # type: ignore[union-attr]
    assert set(limits.channels) == {"bank"} and limits.channels["bank"].burst == 100
    assert isinstance(limits.users, KeyedLimiter)
    assert LimitSettings().capacity == 1_000_000
    assert AbuseLimits(user_rate=0.2).users.burst == 1  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        AbuseLimits(user_rate=float("nan"))


def test_parse_channel_quota() -> None:
    assert parse_channel_quota("bank-app=50") == ("bank-app", (50.0, 0))
    assert parse_channel_quota("pay=0.5:3") == ("pay", (0.5, 3))
    for bad in ("bank", "=5", "bank=", "bank=x", "bank=5:1.5", "bank=-1", "bank=5:-1", "bank=nan"):
        with pytest.raises(ValueError, match="invalid channel quota"):
            parse_channel_quota(bad)


def test_verdict_is_frozen() -> None:
    verdict = Verdict(RATE_LIMITED, 5, "user rate")
    with pytest.raises(AttributeError):
        verdict.reason = "x"  # type: ignore[misc]


@pytest.mark.parametrize("kind", ["user", "device", "ip"])
def test_one_rate_alone_turns_the_limits_on(kind: str) -> None:
    """An empty table has len() 0: `enabled` must not read it as off (the node then skipped every check)."""
    limits = AbuseLimits(**{f"{kind}_rate": 1.0})
    assert limits.enabled
    assert not AbuseLimits().enabled
