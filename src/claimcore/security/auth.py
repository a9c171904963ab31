"""Who is calling: channel credentials, the admin role, and what each may do.

A node started with `--credentials FILE` (TOML, docs/security.md) knows its
callers by API key, sent as metadata `authorization: Bearer <key>`:

    [admin]
    keys = ["sha256:9f86d0..."]

    [channels.alipay]
    keys = ["sha256:2c26b4...", "sha256:..."]   # several: rotate without downtime
    claims_per_s = 5000                          # quota per node (security/abuse.py); 0 = none
    burst = 5000

The file holds SHA-256 digests, never keys, so it is no secret itself
(`claimcore keygen` makes a key and its line). A presented key is hashed and
compared with every digest by hmac.compare_digest, with no early exit, so the
time taken says nothing about which digest came close.

The interceptor runs before any handler: an unknown or missing key is
UNAUTHENTICATED, a channel calling AdminService is PERMISSION_DENIED, and the
call never reaches Redis. The caller reaches the handler through `current()`.
Health and reflection stay open: load balancers probe them without a key.

`--no-auth` runs an open node (tests, the demo): every caller is OPEN, may call
anything and names its channel in the request, as before credentials existed.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claimcore import validation as v

ADMIN_SERVICE = "/claimcore.v1.AdminService/"
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
DIGEST_PREFIX = "sha256:"


class CredentialsError(ValueError):
    """The credentials file is unreadable or malformed; the message names the place."""


class PermissionDenied(Exception):
    """The caller is known but may not do this; nothing was written. `reason`: the stable reason
    clients read in the status' ErrorInfo (node/errors.py REASONS)."""

    def __init__(self, message: str, reason: str = "PERMISSION_DENIED") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    """An authenticated caller, or OPEN on a node without credentials."""

    name: str             # channel id, "admin", or "" for OPEN
    admin: bool           # may call AdminService
    channel: str | None   # the channel it acts as; None: names it per request (admin, OPEN)

    def channel_for(self, requested: str) -> str:
        """The channel a request runs as: the caller's own; another one named in it is refused."""
        if self.channel is None:
            return requested
        if requested and requested != self.channel:
            raise PermissionDenied(f"channel {self.channel!r} may not act as channel {requested!r}",
                                   "CHANNEL_NOT_YOURS")
        return self.channel

    def may_see(self, issuing_channel: str) -> bool:
        """A channel reads and redeems only the vouchers it issued."""
        return self.channel is None or issuing_channel == self.channel


OPEN = Caller("", admin=True, channel=None)
_CURRENT: contextvars.ContextVar[Caller] = contextvars.ContextVar("claimcore_caller", default=OPEN)


def current() -> Caller:
    """The caller of the RPC being handled (OPEN on a node without credentials)."""
    return _CURRENT.get()


@dataclass(frozen=True)
class ChannelQuota:
    claims_per_s: float
    burst: int


@dataclass
class Credentials:
    digests: list[tuple[bytes, Caller]] = field(default_factory=list)
    quotas: dict[str, ChannelQuota] = field(default_factory=dict)

    def identify(self, key: str) -> Caller | None:
        """The caller holding `key`, or None. Compares with every digest: constant time in the key."""
        presented = hashlib.sha256(key.encode()).digest()
        found: Caller | None = None
        for digest, caller in self.digests:
            if hmac.compare_digest(presented, digest):
                found = caller
        return found

    @property
    def channels(self) -> set[str]:
        return {c.name for _, c in self.digests if not c.admin}


def digest_line(key: str) -> str:
    return DIGEST_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key: 32 random bytes, URL-safe text."""
    return "cck_" + secrets.token_urlsafe(32)


def _digests(where: str, table: dict[str, Any]) -> list[bytes]:
    keys = table.get("keys")
    if not isinstance(keys, list) or not keys:
        raise CredentialsError(f"{where}: needs keys = [\"sha256:<64 hex digits>\", ...]")
    out = []
    for entry in keys:
        hexpart = entry[len(DIGEST_PREFIX):] if isinstance(entry, str) else ""
        if not (isinstance(entry, str) and entry.startswith(DIGEST_PREFIX) and len(hexpart) == 64):
            raise CredentialsError(f"{where}: a key must be \"sha256:<64 hex digits>\" (claimcore keygen)")
        try:
            out.append(bytes.fromhex(hexpart))
        except ValueError:
            raise CredentialsError(f"{where}: {entry[:16]}... is not hex") from None
    return out


def load_credentials(path: str | Path) -> Credentials:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CredentialsError(f"credentials file {path}: {exc}") from None
    unknown = set(data) - {"admin", "channels"}
    if unknown:
        raise CredentialsError(f"credentials file {path}: unknown sections {sorted(unknown)}")
    creds = Credentials()
    if "admin" in data:
        admin = Caller("admin", admin=True, channel=None)
        creds.digests += [(d, admin) for d in _digests(f"{path} [admin]", data["admin"])]
    for name, table in (data.get("channels") or {}).items():
        where = f"{path} [channels.{name}]"
        try:
            v.check_id("channel id", name, v.CHANNEL_ID)
        except v.InvalidInput as exc:
            raise CredentialsError(f"{where}: {exc}") from None
        if not name or not isinstance(table, dict):
            raise CredentialsError(f"{where}: a channel needs a non-empty id and a table")
        caller = Caller(name, admin=False, channel=name)
        creds.digests += [(d, caller) for d in _digests(where, table)]
        rate = table.get("claims_per_s", 0)
        burst = table.get("burst", rate)
        if not (isinstance(rate, (int, float)) and isinstance(burst, int) and rate >= 0 and burst >= 0):
            raise CredentialsError(f"{where}: claims_per_s and burst must be numbers >= 0")
        if rate:
            creds.quotas[name] = ChannelQuota(float(rate), max(1, burst))
    seen: dict[bytes, str] = {}
    for digest, caller in creds.digests:
        if seen.setdefault(digest, caller.name) != caller.name:
            raise CredentialsError(f"credentials file {path}: one key is listed for both "
                                   f"{seen[digest]!r} and {caller.name!r}")
    if not creds.digests:
        raise CredentialsError(f"credentials file {path}: lists no keys at all")
    return creds


def bearer_key(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return None


@contextlib.contextmanager
def acting_as(caller: Caller) -> Iterator[None]:
    """Within this block, `current()` is `caller` (the node's interceptor runs each call in one)."""
    token = _CURRENT.set(caller)
    try:
        yield
    finally:
        _CURRENT.reset(token)
