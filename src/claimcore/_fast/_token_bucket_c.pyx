# cython: language_level=3
"""Compiled GCRA token bucket; the twin is ``_token_bucket_py`` (same results, same errors).

The arithmetic is the GCRA core's (``_gcra.pxd``, shared with ``_keyed_limiter_c``);
this file holds the bucket around it. The rules:

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

from libc.stdint cimport INT64_MAX as C_INT64_MAX
from libc.stdint cimport int64_t

cimport claimcore._fast._gcra as gcra

__all__ = ["INT64_MAX", "NOW_LIMIT", "SPAN_MAX", "TokenBucket"]

INT64_MAX = C_INT64_MAX
NOW_LIMIT = gcra.NOW_LIMIT
SPAN_MAX = gcra.SPAN_MAX


cdef class TokenBucket:
    """GCRA token bucket; see the module docstring for the exact rules."""

    cdef double _rate
    cdef int64_t _burst
    cdef int64_t _interval
    cdef int64_t _tat

    def __init__(self, double rate_per_s, burst):
        cdef int64_t cap = gcra.as_index(burst)
        cdef int64_t interval = gcra.interval_for(rate_per_s)
        self._rate = rate_per_s
        self._burst = gcra.burst_for(cap, interval)
        self._interval = interval
        self._tat = -gcra.NOW_LIMIT

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
        cdef int64_t now, count
        gcra.request(now_ns, n, &now, &count)
        return gcra.wait(self._tat, now, count, self._burst, self._interval, &self._tat)
