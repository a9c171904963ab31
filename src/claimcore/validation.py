"""Input limits, checked before anything touches Redis.

Every violation raises InvalidInput with a message naming the field, and the field's path as
its `field` (the check_* helpers set it); the gRPC services turn it into INVALID_ARGUMENT with
a BadRequest naming that field (node/errors.py, docs/errors.md). The alphabets keep ids safe inside
Redis keys and stored records (see keyspace.py).
"""

from __future__ import annotations

import ipaddress
import re

CAMPAIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
USER_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
REQUEST_ID = USER_ID
CHANNEL_ID = re.compile(r"[A-Za-z0-9._-]{0,64}")
CATEGORY = re.compile(r"[A-Za-z0-9._-]{0,64}")
REGION = re.compile(r"[A-Za-z0-9._-]{1,64}")
MERCHANT_ID = USER_ID
ORDER_ID = USER_ID
SN_CODE = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEVICE_ID = re.compile(r"[A-Za-z0-9._:@+=-]{0,128}")
# An IP address as text: IPv4 dotted, IPv6 (also with an embedded IPv4); no zone ("%eth0": any text
# may follow the '%'), no port, no prefix length. ipaddress decides whether it is an address.
IP_TEXT = re.compile(r"[0-9A-Fa-f.:]{2,45}")
STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a Redis stream entry id, "<ms>-<seq>"

MAX_BATCH = 1000
MAX_NAME = 200
MAX_INVENTORY = 100_000_000
MAX_SHARDS = 1024
MAX_PER_USER_LIMIT = 100
MAX_RATE = 10_000_000
MAX_MONEY_CENTS = 10**12
MAX_VOUCHERS_PER_ORDER = 100
MAX_REGIONS = 100
MAX_SN_CODES = 100
MAX_ROUNDS = 100
MAX_TIME_MS = 2**53  # unix ms; far beyond any real date, still exact in Lua doubles


class InvalidInput(ValueError):
    """Malformed input: the caller must fix it; nothing was changed.

    `field`: the path of the field at fault ("user_id", "claims[3].user_id"), "" for the request as
    a whole, None when the raiser did not say (node/errors.py then reads it off the message)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MalformedRequest(InvalidInput):
    """The request's bytes are not the message the method takes: no field to name."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "")


def _path(label: str) -> str:
    """The field path a check's label names: the label, or its last word ("number of voucher_ids"
    -> "voucher_ids", "metadata x-device-id" -> "x-device-id")."""
    return label.rsplit(" ", 1)[-1]


def check_id(field: str, value: str, pattern: re.Pattern[str]) -> str:
    if pattern.fullmatch(value) is None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidInput(f"{field} {shown!r} must match {pattern.pattern}", _path(field))
    return value


def check_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be between {low} and {high}, not {value}", _path(field))
    return value


def check_ip(field: str, value: str) -> str:
    """An IPv4 or IPv6 address, or empty (not given)."""
    if value:
        shown = value if len(value) <= 40 else value[:40] + "..."
        try:
            if IP_TEXT.fullmatch(value) is None:
                raise ValueError
            ipaddress.ip_address(value)
        except ValueError:
            raise InvalidInput(f"{field} {shown!r} must be an IPv4 or IPv6 address, or empty",
                               _path(field)) from None
    return value


def check_stream_id(field: str, value: str) -> str:
    """A Redis stream entry id "<ms>-<seq>", each part an unsigned 64-bit number, that an exclusive
    range may start after (Redis refuses "(" before the very last id, 2^64-1 - 2^64-1)."""
    parts = [int(p) for p in value.split("-")] if STREAM_ID.fullmatch(value) else []
    if not parts or max(parts) >= 2**64 or parts == [2**64 - 1, 2**64 - 1]:
        raise InvalidInput(f"{field} holds {value[:40]!r}, not a stream entry id", _path(field))
    return value


def check_claim(campaign_id: str, user_id: str, request_id: str, channel_id: str,
                device_id: str = "", client_ip: str = "") -> None:
    check_id("campaign_id", campaign_id, CAMPAIGN_ID)
    check_id("user_id", user_id, USER_ID)
    check_id("request_id", request_id, REQUEST_ID)
    check_id("channel_id", channel_id, CHANNEL_ID)
    check_id("device_id", device_id, DEVICE_ID)
    check_ip("client_ip", client_ip)
