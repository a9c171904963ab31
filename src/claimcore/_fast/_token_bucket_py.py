"""Pure-Python twin of ``_token_bucket_c``: same integer maths, same results, same errors.

The arithmetic is the GCRA core's (``_gcra_py``, shared with ``_keyed_limiter_py``);
this file holds the bucket around it. The rules:

GCRA (generic cell rate algorithm), all times in integer nanoseconds, passed in
by the caller (the bucket never reads a clock):

    T      emission interval = max(1, round(1e9 / rate_per_s)) ns, the only float
           operation (round half to even; capped at SPAN_MAX). rate_per_s <= 0
           means unlimited (T = 0): take() always returns 0.
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
(ValueError otherwise), n >= 1 (ValueError), and every integer argument must fit in
int64 (OverflowError otherwise, TypeError for non-integers), mirroring the C
argument conversion of the compiled module. With these bounds every intermediate
value fits in int64.
"""

from __future__ import annotations

from . import _gcra_py as gcra
from ._gcra_py import INT64_MAX, NOW_LIMIT, SPAN_MAX

__all__ = ["INT64_MAX", "NOW_LIMIT", "SPAN_MAX", "TokenBucket"]


class TokenBucket:
    """GCRA token bucket; see the module docstring for the exact rules."""

    __slots__ = ("_rate", "_burst", "_interval", "_tat")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        rate = gcra.as_double(rate_per_s)
        burst = gcra.as_int64(burst)
        interval = gcra.interval_for(rate)
        self._rate = rate
        self._burst = gcra.burst_for(burst, interval)
        self._interval = interval
        self._tat = -NOW_LIMIT

    @property
    def rate_per_s(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def interval_ns(self) -> int:
        """Emission interval T in ns (0 when unlimited)."""
        return self._interval

    def __repr__(self) -> str:
        return f"TokenBucket(rate_per_s={self._rate!r}, burst={self._burst})"

    def take(self, now_ns: int, n: int = 1) -> int:
        """0 if n tokens were admitted (and consumed), else the ns to wait (nothing consumed)."""
        now, n = gcra.request(now_ns, n)
        wait, self._tat = gcra.wait(self._tat, now, n, self._burst, self._interval)
        return wait
