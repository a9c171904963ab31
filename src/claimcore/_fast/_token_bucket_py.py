"""Pure-Python twin of ``_token_bucket_c``: same integer maths, same results, same errors.

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

import math
import operator

__all__ = ["INT64_MAX", "NOW_LIMIT", "SPAN_MAX", "TokenBucket"]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
NOW_LIMIT = 2**62
SPAN_MAX = 2**62 - 1


def _as_int64(value: object) -> int:
    value = operator.index(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError("value does not fit in int64")
    return value


def _as_double(value: object) -> float:
    if isinstance(value, str | bytes | bytearray):
        raise TypeError("must be a real number, not " + type(value).__name__)
    return float(value)  # type: ignore[arg-type]


class TokenBucket:
    """GCRA token bucket; see the module docstring for the exact rules."""

    __slots__ = ("_rate", "_burst", "_interval", "_tat")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        rate = _as_double(rate_per_s)
        burst = _as_int64(burst)
        if math.isnan(rate):
            raise ValueError("rate_per_s must not be NaN")
        if burst < 1:
            burst = 1
        if rate <= 0.0:
            interval = 0
        else:
            x = 1e9 / rate
            if x >= 4611686018427387904.0:  # 2.0 ** 62
                interval = SPAN_MAX
            else:
                interval = max(1, round(x))
            burst = min(burst, SPAN_MAX // interval)
        self._rate = rate
        self._burst = burst
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
        now = _as_int64(now_ns)
        n = _as_int64(n)
        if n < 1:
            raise ValueError("n must be >= 1")
        if not -NOW_LIMIT <= now <= NOW_LIMIT:
            raise ValueError("now_ns out of range [-2**62, 2**62]")
        interval = self._interval
        if interval == 0:
            return 0
        if n > self._burst:
            if n > INT64_MAX // interval:
                return INT64_MAX
            return n * interval
        tat = self._tat
        base = tat if tat > now else now
        limit = now + (self._burst - n) * interval
        if base <= limit:
            self._tat = base + n * interval
            return 0
        return min(base - limit, INT64_MAX)
