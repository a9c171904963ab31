"""The GCRA core of TokenBucket and KeyedLimiter in pure Python, written once; twin of ``_gcra.pxd``.

``_token_bucket_py`` and ``_keyed_limiter_py`` call these functions, as their compiled
twins call the inline functions of ``_gcra.pxd``: same names, same integer maths, same
errors. The rules are in ``_token_bucket_py``'s docstring; here is the arithmetic, in
the order the components call it:

    interval_for(rate_per_s)          T, the emission interval in ns (NaN: ValueError)
    burst_for(burst, T)               the burst, at least 1 and capped so burst * T <= SPAN_MAX
    request(now_ns, n) -> (now, n)    take()'s arguments as int64, checked (ValueError)
    wait(tat, now, n, burst, T) -> (wait, tat_after)
                                      0 when n tokens are admitted, else the ns to wait;
                                      tat_after is the bucket's tat afterwards, which
                                      differs from tat exactly when tokens were consumed

as_int64 and as_double mirror the compiled modules' argument conversions.
"""

from __future__ import annotations

import math
import operator

__all__ = [
    "INT64_MAX", "INT64_MIN", "NOW_LIMIT", "SPAN_MAX", "as_double", "as_int64", "burst_for", "interval_for",
    "request", "wait",
]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
NOW_LIMIT = 2**62  # now_ns lies in [-NOW_LIMIT, NOW_LIMIT]; a fresh bucket's tat is -NOW_LIMIT (full)
SPAN_MAX = 2**62 - 1  # the longest interval, and the cap on burst * T

_index = operator.index


def as_int64(value: object) -> int:
    """An integer that fits in int64: TypeError for non-integers, OverflowError out of range."""
    value = _index(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError("value does not fit in int64")
    return value


def as_double(value: object) -> float:
    """A real number as a float, refusing text as a C double argument does (TypeError)."""
    if isinstance(value, str | bytes | bytearray):
        raise TypeError("must be a real number, not " + type(value).__name__)
    return float(value)  # type: ignore[arg-type]


def interval_for(rate_per_s: float) -> int:
    """T = max(1, round(1e9 / rate_per_s)) ns, capped at SPAN_MAX; 0 (unlimited) for rate <= 0.

    The only float operation: round() rounds half to even, as the compiled rint() does."""
    if math.isnan(rate_per_s):
        raise ValueError("rate_per_s must not be NaN")
    if rate_per_s <= 0.0:
        return 0
    x = 1e9 / rate_per_s
    if x >= 4611686018427387904.0:  # 2.0 ** 62
        return SPAN_MAX
    return max(1, round(x))


def burst_for(burst: int, interval: int) -> int:
    """max(1, burst), capped so that burst * interval <= SPAN_MAX."""
    if burst < 1:
        burst = 1
    if interval and burst > SPAN_MAX // interval:
        burst = SPAN_MAX // interval
    return burst


def request(now_ns: object, n: object) -> tuple[int, int]:
    """take()'s arguments: int64 integers (TypeError, OverflowError), n >= 1 and now_ns in
    [-NOW_LIMIT, NOW_LIMIT] (ValueError), checked in that order."""
    # as_int64 written out twice: this runs on every take().
    now = _index(now_ns)
    if not INT64_MIN <= now <= INT64_MAX:
        raise OverflowError("value does not fit in int64")
    n = _index(n)
    if not INT64_MIN <= n <= INT64_MAX:
        raise OverflowError("value does not fit in int64")
    if n < 1:
        raise ValueError("n must be >= 1")
    if not -NOW_LIMIT <= now <= NOW_LIMIT:
        raise ValueError("now_ns out of range [-2**62, 2**62]")
    return now, n


def wait(tat: int, now: int, n: int, burst: int, interval: int) -> tuple[int, int]:
    """(0 if n tokens are admitted at now else the ns to wait, the tat afterwards).

    Unlimited (interval 0): 0, nothing consumed. n > burst can never be admitted: n * T
    (saturating), nothing consumed. Else base = max(tat, now), admitted iff
    base <= now + (burst - n) * T, and then the tat becomes base + n * T; refused:
    base + n * T - burst * T - now, saturating at INT64_MAX."""
    if interval == 0:
        return 0, tat
    if n > burst:
        if n > INT64_MAX // interval:
            return INT64_MAX, tat
        return n * interval, tat
    base = tat if tat > now else now
    limit = now + (burst - n) * interval
    if base <= limit:
        return 0, base + n * interval
    return min(base - limit, INT64_MAX), tat
