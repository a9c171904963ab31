# cython: language_level=3
"""Compiled GCRA token bucket; the twin is ``_token_bucket_py`` (same results, same errors).

GCRA (generic cell rate algorithm), all times in integer nanoseconds, passed in
by the caller (the bucket never reads a clock):

    T      emission interval = max(1, round(1e9 / rate_per_s)) ns, the only float
           operation (round half to even: rint() in the default rounding mode, as
           Python's round(); capped at SPAN_MAX). rate_per_s <= 0 means unlimited
           (T = 0): take() always returns 0.
    burst  max(1, burst), capped so that burst * T <= SPAN_MAX.
    tat    theoretical arrival time (int64 ns). A fresh bucket has tat = -NOW_LIMIT,
           the earliest admissible now, so it starts full.

    take(now, n):  base = max(tat, now)
                   admit  iff  base + n*T - now <= burst*T
                              (computed as base <= now + (burst - n)*T, which
                               cannot overflow int64)
                   admitted: tat = base + n*T, return 0
                   refused:  return base + n*T - burst*T - now  (> 0, the ns to
                             wait until n would be admitted; saturates at INT64_MAX),
                             tat unchanged
                   n > burst can never be admitted: return n*T (the time to
                   accumulate n tokens from empty, saturating), nothing consumed.

Invariants: tat is monotone non-decreasing (it only ever becomes base + n*T >= tat);
after any admission tat <= now + burst*T; hence the tokens admitted over any
window [t0, t1] are at most burst + (t1 - t0) / T.

Input bounds (identical in both twins): now_ns must lie in [-NOW_LIMIT, NOW_LIMIT]
(ValueError otherwise), n >= 1 (ValueError); integer arguments that do not fit in
int64 raise OverflowError (TypeError for non-integers) from the argument
conversion. With these bounds every intermediate value fits in int64, so the
debug build's overflowcheck never fires.
"""

from cpython.number cimport PyNumber_Index
from libc.math cimport isnan, rint
from libc.stdint cimport INT64_MAX as C_INT64_MAX
from libc.stdint cimport int64_t

__all__ = ["INT64_MAX", "NOW_LIMIT", "SPAN_MAX", "TokenBucket"]

cdef int64_t _NOW_LIMIT = 4611686018427387904  # 2**62
cdef int64_t _SPAN_MAX = 4611686018427387903  # 2**62 - 1

INT64_MAX = C_INT64_MAX
NOW_LIMIT = _NOW_LIMIT
SPAN_MAX = _SPAN_MAX


cdef inline object _index(object value):
    # Integers only, like the twin's operator.index(): Cython's own int64_t argument
    # conversion would silently truncate floats. Out of int64 -> OverflowError.
    return value if isinstance(value, int) else PyNumber_Index(value)


cdef class TokenBucket:
    """GCRA token bucket; see the module docstring for the exact rules."""

    cdef double _rate
    cdef int64_t _burst
    cdef int64_t _interval
    cdef int64_t _tat

    def __init__(self, double rate_per_s, burst):
        cdef int64_t cap = _index(burst)
        cdef int64_t interval
        cdef double x
        if isnan(rate_per_s):
            raise ValueError("rate_per_s must not be NaN")
        if cap < 1:
            cap = 1
        if rate_per_s <= 0.0:
            interval = 0
        else:
            x = 1e9 / rate_per_s
            if x >= 4611686018427387904.0:  # 2.0 ** 62
                interval = _SPAN_MAX
            else:
                interval = <int64_t>rint(x)
                if interval < 1:
                    interval = 1
            if cap > _SPAN_MAX // interval:
                cap = _SPAN_MAX // interval
        self._rate = rate_per_s
        self._burst = cap
        self._interval = interval
        self._tat = -_NOW_LIMIT

    @property
    def rate_per_s(self):
        return self._rate

    @property
    def burst(self):
        return self._burst

    @property
    def interval_ns(self):
        """Emission interval T in ns (0 when unlimited)."""
        return self._interval

    def __repr__(self):
        return f"TokenBucket(rate_per_s={self._rate!r}, burst={self._burst})"

    def take(self, now_ns, n=1):
        """0 if n tokens were admitted (and consumed), else the ns to wait (nothing consumed)."""
        cdef int64_t now = _index(now_ns)
        cdef int64_t count = _index(n)
        cdef int64_t interval = self._interval
        cdef int64_t base, limit
        if count < 1:
            raise ValueError("n must be >= 1")
        if now < -_NOW_LIMIT or now > _NOW_LIMIT:
            raise ValueError("now_ns out of range [-2**62, 2**62]")
        if interval == 0:
            return 0
        if count > self._burst:
            if count > C_INT64_MAX // interval:
                return C_INT64_MAX
            return count * interval
        base = self._tat if self._tat > now else now
        limit = now + (self._burst - count) * interval
        if base <= limit:
            self._tat = base + count * interval
            return 0
        # base - limit would overflow only when limit < 0: saturate.
        if limit < 0 and base > C_INT64_MAX + limit:
            return C_INT64_MAX
        return base - limit
