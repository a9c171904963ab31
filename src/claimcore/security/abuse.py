"""Anti-scalper and abuse limits: deny list, channel quotas, per-user, per-device, per-IP rates.

``AbuseLimits.check(channel, user, device, ip, now_ns)`` is the one entry point of a
claim: None when the claim may go on, else a ``Verdict``. The checks, in order:

1. the deny list (``DenyList``): a denied user, device or IP address (or an IP
   inside a denied CIDR network) -> NOT_ELIGIBLE, reason "user denied",
   "device denied" or "ip denied", retry_after_ms 0;
2. the channel's quota: a GCRA bucket of its own per channel listed in
   ``channel_quotas`` (so one channel at its quota cannot starve the others);
   channels not listed have no quota -> RATE_LIMITED "channel quota";
3. the user's, 4. the device's, 5. the IP's bucket: one ``KeyedLimiter`` (GCRA
   buckets by key, Cython hot path) per kind, each off when its rate is 0 ->
   RATE_LIMITED "user rate", "device rate", "ip rate".

The reason is the first refusing check in that order; retry_after_ms is the
largest wait of all refusing checks (when the claim would be admitted if nothing
else came in), in ms rounded up, at least 1.

Nothing is consumed on refusal: every rate check is first a ``peek`` (what the
take would return, consuming nothing, inserting nothing); only when all of them
admit is a token taken from each bucket, and those takes then admit for certain
(the function is synchronous, nothing runs between the peeks and the takes). A
refused claim therefore leaves every bucket, and every table's membership, exactly
as it was: a scalper's retries do not spend the quota of its channel, and a
refusal can never evict anybody.

Keys: users and devices by their id (an empty device id means "unknown": no device
check, no device deny); IPs normalised: IPv4 as is, IPv4-mapped IPv6 as its IPv4,
other IPv6 by their /64 prefix (one subscriber's allocation), so a scalper
rotating through the addresses of its /64 shares one bucket. An empty IP means
"unknown"; text that is no IP address raises ValueError (map it to
INVALID_ARGUMENT). The deny list matches the full address, never the /64.

Memory: each KeyedLimiter holds at most ``capacity`` keys (default 1,000,000 per
table), measured (tracemalloc, 1,000,000 entries, compiled): 83 bytes per entry
for the table itself, 149 bytes with the key strings (17-character ids; resident
memory grows by 160 bytes per entry), so a full default table is about 150 MB.
A table only fills up when that many keys are active at once: each new key
sweeps 8 entries and drops the expired ones.
See docs/abuse-limits.md.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

from claimcore._fast import KeyedLimiter

__all__ = ["NOT_ELIGIBLE", "RATE_LIMITED", "AbuseLimits", "DenyList", "LimitSettings", "Verdict",
           "normalize_ip", "parse_channel_quota"]

NOT_ELIGIBLE = "NOT_ELIGIBLE"
RATE_LIMITED = "RATE_LIMITED"

_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, IPv4-mapped IPv6
_ZERO8 = bytes(8)
_NO_IP = (0, 0, "")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a claim is refused: outcome NOT_ELIGIBLE or RATE_LIMITED, when to retry (0 = never)."""

    outcome: str
    retry_after_ms: int
    reason: str


def _ip(text: str) -> tuple[int, int, str]:
    """(version, address as int, limiter key) of IP text; IPv4-mapped IPv6 is its IPv4.

    inet_pton (C, strict: no leading zeros, no spaces) handles the usual forms fast; what
    it refuses goes through ipaddress, which also knows zones ("fe80::1%eth0") and says
    what is wrong.
    """
    try:
        return 4, int.from_bytes(inet_pton(AF_INET, text), "big"), text  # accepted text is canonical
    except (OSError, ValueError):
        pass
    try:
        packed = inet_pton(AF_INET6, text)
    except (OSError, ValueError):
        try:
            packed = ipaddress.IPv6Address(text).packed  # only zones (or an error) get here
        except ValueError:
            raise ValueError(f"invalid IP address {text!r}: expected IPv4 or IPv6 text") from None
    if packed[:12] == _MAPPED:
        return 4, int.from_bytes(packed[12:], "big"), inet_ntop(AF_INET, packed[12:])
    return 6, int.from_bytes(packed, "big"), inet_ntop(AF_INET6, packed[:8] + _ZERO8) + "/64"


def normalize_ip(text: str) -> str:
    """The limiter key of an IP: IPv4 as is, IPv6 as its /64 prefix ("2001:db8:1:2::/64").

    IPv4-mapped IPv6 ("::ffff:1.2.3.4") counts as its IPv4; a zone ("%eth0") is dropped.
    ValueError (clear message) for text that is not an IP address.
    """
    if not isinstance(text, str):
        raise TypeError("ip must be a str, not " + type(text).__name__)
    return _ip(text)[2]


# --------------------------------------------------------------------------- deny list


class DenyList:
    """Denied user ids, device ids, IP addresses and CIDR networks (IPv4 and IPv6).

    Immutable once built; to reload, build a new one and assign ``AbuseLimits.deny``.
    File format (``from_file``/``parse``), one entry per line:

        user:ID        device:ID        ip:ADDR        ip:CIDR      # a comment line

    Surrounding whitespace is ignored, as are blank lines and lines starting with
    ``#``. IDs are taken verbatim after the colon. CIDRs must have no host bits set
    (``10.1.0.0/16``, not ``10.1.2.3/16``). Anything else raises ValueError naming
    the source and line number.
    """

    __slots__ = ("_users", "_devices", "_nets")

    def __init__(
        self, users: Iterable[str] = (), devices: Iterable[str] = (), ips: Iterable[str] = ()
    ) -> None:
        self._users: frozenset[str] = frozenset(users)
        self._devices: frozenset[str] = frozenset(devices)
        # (version, prefix length) -> set of network numbers shifted right by (bits - prefix length):
        # a lookup costs one set probe per distinct prefix length, however many networks there are.
        self._nets: dict[tuple[int, int], set[int]] = {}
        for text in ips:
            self._add_net(text)

    def _add_net(self, text: str) -> None:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ValueError(f"invalid IP address or CIDR network {text!r}: {exc}") from None
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None \
                and net.prefixlen >= 96:
            net = ipaddress.IPv4Network((net.network_address.ipv4_mapped, net.prefixlen - 96))
        shift = net.max_prefixlen - net.prefixlen
        self._nets.setdefault((net.version, net.prefixlen), set()).add(int(net.network_address) >> shift)

    @classmethod
    def parse(cls, lines: str | Iterable[str], source: str = "<deny list>") -> DenyList:
        """A deny list from text (or lines) in the file format; ValueError names source:line."""
        if isinstance(lines, str):
            lines = lines.splitlines()
        users: list[str] = []
        devices: list[str] = []
        ips: list[str] = []
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            kind, sep, value = line.partition(":")
            value = value.strip()
            if not sep or kind not in ("user", "device", "ip"):
                raise ValueError(f"{source}:{number}: expected user:ID, device:ID, ip:ADDR or ip:CIDR, "
                                 f"got {line!r}")
            if not value:
                raise ValueError(f"{source}:{number}: empty {kind} entry")
            if kind == "user":
                users.append(value)
            elif kind == "device":
                devices.append(value)
            else:
                try:
                    ipaddress.ip_network(value, strict=True)
                except ValueError as exc:
                    raise ValueError(f"{source}:{number}: invalid IP address or CIDR network {value!r}: "
                                     f"{exc}") from None
                ips.append(value)
        return cls(users, devices, ips)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DenyList:
        with open(path, encoding="utf-8") as f:
            return cls.parse(f, source=os.fspath(path))

    def __len__(self) -> int:
        return len(self._users) + len(self._devices) + sum(len(s) for s in self._nets.values())

    def __bool__(self) -> bool:
        return bool(self._users or self._devices or self._nets)

    def user_denied(self, user: str) -> bool:
        return user in self._users

    def device_denied(self, device: str) -> bool:
        return device in self._devices

    def ip_denied(self, ip: str) -> bool:
        """Is this address, or a network holding it, denied? ValueError for text that is no IP."""
        if not self._nets:
            return False
        version, value, _ = _ip(ip)
        return self._net_denied(version, value)

    def _net_denied(self, version: int, value: int) -> bool:
        bits = 32 if version == 4 else 128
        for (v, prefix), nets in self._nets.items():
            if v == version and (value >> (bits - prefix)) in nets:
                return True
        return False

    def reason(self, user: str, device: str, ip: str) -> str | None:
        """"user denied", "device denied", "ip denied" (checked in that order), or None.

        An empty device or ip is unknown and never denied; ValueError for ip text that is no IP."""
        if user in self._users:
            return "user denied"
        if device and device in self._devices:
            return "device denied"
        if ip and self.ip_denied(ip):
            return "ip denied"
        return None


# --------------------------------------------------------------------------- settings


def parse_channel_quota(spec: str) -> tuple[str, tuple[float, int]]:
    """A command-line quota "CHANNEL=RATE[:BURST]" -> (channel, (rate, burst)); burst 0 if left out."""
    channel, sep, rest = spec.partition("=")
    rate_text, _, burst_text = rest.partition(":")
    try:
        if not sep or not channel:
            raise ValueError
        rate, burst = float(rate_text), int(burst_text or 0)
    except ValueError:
        raise ValueError(f"invalid channel quota {spec!r}: expected CHANNEL=RATE[:BURST]") from None
    if not rate >= 0 or burst < 0:  # also refuses NaN
        raise ValueError(f"invalid channel quota {spec!r}: rate and burst must be >= 0")
    return channel, (rate, burst)


@dataclass(frozen=True)
class LimitSettings:
    """What the CLI collects: rates per second (0 = off), bursts (0 = one second's worth, at least 1),
    the capacity of each per-key table, the deny-list file and the per-channel quotas."""

    user_rate: float = 0.0
    user_burst: int = 0
    device_rate: float = 0.0
    device_burst: int = 0
    ip_rate: float = 0.0
    ip_burst: int = 0
    capacity: int = 1_000_000
    deny_file: str | None = None
    channel_quotas: Mapping[str, tuple[float, int]] = field(default_factory=dict)


def _burst(rate: float, burst: int) -> int:
    if burst > 0:
        return burst
    return max(1, int(-(-rate // 1))) if rate > 0 else 1


def _limiter(rate: float, burst: int, capacity: int) -> KeyedLimiter | None:
    if rate != rate:
        raise ValueError("rate must not be NaN")
    if rate <= 0:  # off
        return None
    return KeyedLimiter(rate, _burst(rate, burst), capacity)


def _ms(wait_ns: int) -> int:
    return max(1, -(-wait_ns // 1_000_000))


# --------------------------------------------------------------------------- the limits


class AbuseLimits:
    """Deny list, channel quotas, per-user, per-device and per-IP rates; see the module docstring.

    Rates are tokens per second (one claim = one token); a rate of 0 turns that limit
    off; a burst of 0 means one second's worth (at least 1). ``capacity`` bounds each
    per-key table (KeyedLimiter). Not thread-safe: call it from the event loop.
    """

    def __init__(
        self,
        *,
        user_rate: float = 0.0,
        user_burst: int = 0,
        device_rate: float = 0.0,
        device_burst: int = 0,
        ip_rate: float = 0.0,
        ip_burst: int = 0,
        capacity: int = 1_000_000,
        deny: DenyList | None = None,
        channel_quotas: Mapping[str, tuple[float, int]] | None = None,
    ) -> None:
        self.deny: DenyList = deny if deny is not None else DenyList()
        self.users = _limiter(user_rate, user_burst, capacity)
        self.devices = _limiter(device_rate, device_burst, capacity)
        self.ips = _limiter(ip_rate, ip_burst, capacity)
        # One bucket per channel: a KeyedLimiter holding the one key "" (same GCRA as TokenBucket,
        # never evicts with one key) because it can peek, which "nothing consumed on refusal" needs.
        self.channels: dict[str, KeyedLimiter] = {}
        for channel, (rate, burst) in (channel_quotas or {}).items():
            quota = _limiter(rate, burst, 1)
            if quota is not None:
                self.channels[channel] = quota

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> AbuseLimits:
        """Build from the CLI's settings; reads settings.deny_file if set (ValueError names a bad line)."""
        return cls(
            user_rate=settings.user_rate, user_burst=settings.user_burst,
            device_rate=settings.device_rate, device_burst=settings.device_burst,
            ip_rate=settings.ip_rate, ip_burst=settings.ip_burst,
            capacity=settings.capacity,
            deny=DenyList.from_file(settings.deny_file) if settings.deny_file else None,
            channel_quotas=settings.channel_quotas,
        )

    @property
    def enabled(self) -> bool:
        """False when no limit and no deny entry is configured: check() always returns None."""
        # `is not None`, not truth: an empty KeyedLimiter has len() 0 and would read as off.
        tables = (self.users, self.devices, self.ips)
        return bool(self.deny or self.channels) or any(t is not None for t in tables)

    def stats(self) -> dict[str, dict[str, int]]:
        """Entries and evictions of each per-key table that is on (for logs and metrics)."""
        tables = {"user": self.users, "device": self.devices, "ip": self.ips}
        return {name: {"entries": len(t), "capacity": t.capacity, "evictions": t.evictions}
                for name, t in tables.items() if t is not None}

    def check(self, channel: str, user: str, device: str, ip: str, now_ns: int) -> Verdict | None:
        """None if the claim is admitted (one token taken from each of its buckets), else a Verdict
        (nothing consumed). ValueError if ip is neither empty nor an IP address."""
        version, value, ip_key = _ip(ip) if ip else _NO_IP
        deny = self.deny
        if deny:
            if user in deny._users:
                return _USER_DENIED
            if device and device in deny._devices:
                return _DEVICE_DENIED
            if ip and deny._nets and deny._net_denied(version, value):
                return _IP_DENIED
        # Peek every bucket (consumes nothing), then take from each only if all admit.
        quota = self.channels.get(channel)
        users, devices, ips = self.users, self.devices, self.ips
        if devices is not None and not device:
            devices = None
        if ips is not None and not ip:
            ips = None
        wait_c = quota.peek("", now_ns) if quota is not None else 0
        wait_u = users.peek(user, now_ns) if users is not None else 0
        wait_d = devices.peek(device, now_ns) if devices is not None else 0
        wait_i = ips.peek(ip_key, now_ns) if ips is not None else 0
        if wait_c or wait_u or wait_d or wait_i:
            reason = ("channel quota" if wait_c else "user rate" if wait_u else
                      "device rate" if wait_d else "ip rate")
            return Verdict(RATE_LIMITED, _ms(max(wait_c, wait_u, wait_d, wait_i)), reason)
        if quota is not None:
            quota.take("", now_ns)
        if users is not None:
            users.take(user, now_ns)
        if devices is not None:
            devices.take(device, now_ns)
        if ips is not None:
            ips.take(ip_key, now_ns)
        return None


_USER_DENIED = Verdict(NOT_ELIGIBLE, 0, "user denied")
_DEVICE_DENIED = Verdict(NOT_ELIGIBLE, 0, "device denied")
_IP_DENIED = Verdict(NOT_ELIGIBLE, 0, "ip denied")
