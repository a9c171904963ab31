"""Input limits, checked before anything touches Redis.

Every violation raises InvalidInput with a message naming the field; the gRPC
services turn it into INVALID_ARGUMENT. The alphabets keep ids safe inside
Redis keys and stored records (see keyspace.py).
"""

from __future__ import annotations

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
    """Malformed input: the caller must fix it; nothing was changed."""


def check_id(field: str, value: str, pattern: re.Pattern[str]) -> str:
    if pattern.fullmatch(value) is None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidInput(f"{field} {shown!r} must match {pattern.pattern}")
    return value


def check_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be between {low} and {high}, not {value}")
    return value


def check_claim(campaign_id: str, user_id: str, request_id: str, channel_id: str) -> None:
    check_id("campaign_id", campaign_id, CAMPAIGN_ID)
    check_id("user_id", user_id, USER_ID)
    check_id("request_id", request_id, REQUEST_ID)
    check_id("channel_id", channel_id, CHANNEL_ID)
