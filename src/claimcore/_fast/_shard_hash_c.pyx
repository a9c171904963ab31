# cython: language_level=3
"""Compiled shard hashing; the twin is ``_shard_hash_py`` (same results, same errors).

    fnv1a64(data)       FNV-1a 64-bit over bytes: h = 0xcbf29ce484222325; for each
                        byte: h = ((h ^ byte) * 0x100000001b3) mod 2**64.
    jump_hash(key, n)   Lamping & Veach jump consistent hash of a uint64 key into
                        [0, n), 1 <= n <= MAX_BUCKETS (ValueError otherwise; keys
                        outside [0, 2**64) raise OverflowError).
    shard_of(key, n)    jump_hash(fnv1a64(key.encode("utf-8")), n).

Jump hash is used because growing from N to N+1 shards moves only ~1/(N+1) of the
keys, and only into the new shard (resharding relies on this).

The one float expression, j = (b + 1) * (2**31 / ((key >> 33) + 1)), is evaluated
exactly as in the twin: both operands of the division are integers below 2**53 (so
exact as doubles), the division and the multiplication are single IEEE-754 double
operations (no fused multiply-add possible), and the cast truncates toward zero
like Python's int(). The uint64 wrap-arounds are intended, hence overflowcheck off.
"""

cimport cython
from cpython.number cimport PyNumber_Index
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t, uint64_t

__all__ = ["MAX_BUCKETS", "fnv1a64", "jump_hash", "shard_of"]

cdef int64_t _MAX_BUCKETS = 2147483647  # 2**31 - 1
MAX_BUCKETS = _MAX_BUCKETS


@cython.overflowcheck(False)
cdef inline uint64_t _fnv(const unsigned char* p, Py_ssize_t size) noexcept nogil:
    cdef uint64_t h = 0xCBF29CE484222325ULL
    cdef Py_ssize_t i
    for i in range(size):
        h = (h ^ p[i]) * 0x100000001B3ULL
    return h


@cython.overflowcheck(False)
@cython.cdivision(True)
cdef inline int64_t _jump(uint64_t key, int64_t buckets) noexcept nogil:
    cdef int64_t b = -1
    cdef int64_t j = 0
    while j < buckets:
        b = j
        key = key * 2862933555777941757ULL + 1ULL
        j = <int64_t>(<double>(b + 1) * (2147483648.0 / <double>((key >> 33) + 1)))
    return b


cdef inline object _index(object value):
    # Integers only, like the twin's operator.index(): Cython's own integer argument
    # conversion would silently truncate floats. Out of range -> OverflowError.
    return value if isinstance(value, int) else PyNumber_Index(value)


cdef inline int64_t _buckets(object value) except? -1:
    cdef int64_t buckets = _index(value)
    if buckets < 1 or buckets > _MAX_BUCKETS:
        raise ValueError(f"buckets must be in [1, {_MAX_BUCKETS}]")
    return buckets


def fnv1a64(bytes data not None):
    """FNV-1a 64-bit hash of ``data`` (bytes only)."""
    return _fnv(<const unsigned char*><const char*>data, len(data))


def jump_hash(key, buckets):
    """Bucket of the uint64 ``key`` among ``buckets`` (jump consistent hash)."""
    cdef uint64_t k = _index(key)
    return _jump(k, _buckets(buckets))


def shard_of(str key not None, shards):
    """Shard in [0, shards) of the string ``key``; stable across nodes and releases."""
    cdef int64_t n = _buckets(shards)
    cdef Py_ssize_t size
    cdef const char* utf8 = PyUnicode_AsUTF8AndSize(key, &size)
    return _jump(_fnv(<const unsigned char*>utf8, size), n)
