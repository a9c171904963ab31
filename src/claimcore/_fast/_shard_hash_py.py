"""Pure-Python twin of ``_shard_hash_c``: same results, same errors, on every node.

    fnv1a64(data)       FNV-1a 64-bit over bytes: h = 0xcbf29ce484222325; for each
                        byte: h = ((h ^ byte) * 0x100000001b3) mod 2**64.
    jump_hash(key, n)   Lamping & Veach jump consistent hash of a uint64 key into
                        [0, n), 1 <= n <= MAX_BUCKETS (ValueError otherwise; keys
                        outside [0, 2**64) raise OverflowError).
    shard_of(key, n)    jump_hash(fnv1a64(key.encode("utf-8")), n).

Jump hash is used because growing from N to N+1 shards moves only ~1/(N+1) of the
keys, and only into the new shard (resharding relies on this).

The one float expression, j = int((b + 1) * (2**31 / ((key >> 33) + 1))), is
evaluated exactly as in the compiled module: both operands of the division are
integers below 2**53 (so exact as doubles), the division and the multiplication
are single IEEE-754 double operations, and the result is truncated toward zero.
"""

from __future__ import annotations

import operator

__all__ = ["MAX_BUCKETS", "fnv1a64", "jump_hash", "shard_of"]

MAX_BUCKETS = 2**31 - 1

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_JUMP_MUL = 2862933555777941757
_MASK64 = 2**64 - 1
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _as_int64(value: object) -> int:
    value = operator.index(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise OverflowError("value does not fit in int64")
    return value


def _as_buckets(value: object) -> int:
    buckets = _as_int64(value)
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be in [1, {MAX_BUCKETS}]")
    return buckets


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64-bit hash of ``data`` (bytes only)."""
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes, not " + type(data).__name__)
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def _jump(key: int, buckets: int) -> int:
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _JUMP_MUL + 1) & _MASK64
        j = int((b + 1) * (2147483648.0 / ((key >> 33) + 1)))
    return b


def jump_hash(key: int, buckets: int) -> int:
    """Bucket of the uint64 ``key`` among ``buckets`` (jump consistent hash)."""
    key = operator.index(key)
    if not 0 <= key <= _MASK64:
        raise OverflowError("key does not fit in uint64")
    return _jump(key, _as_buckets(buckets))


def shard_of(key: str, shards: int) -> int:
    """Shard in [0, shards) of the string ``key``; stable across nodes and releases."""
    if not isinstance(key, str):
        raise TypeError("key must be str, not " + type(key).__name__)
    shards = _as_buckets(shards)
    return _jump(fnv1a64(key.encode("utf-8")), shards)
