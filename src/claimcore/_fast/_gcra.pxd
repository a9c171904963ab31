# cython: language_level=3
"""The GCRA core of TokenBucket and KeyedLimiter, written once; the twin is ``_gcra_py``.

Inline cdef functions only (no module of its own is built): ``_token_bucket_c`` and
``_keyed_limiter_c`` cimport this file, and the C compiler inlines each call, so the
compiled take() is the code it was when each component kept its own copy.
The rules are in ``_token_bucket_c``'s docstring; here is the arithmetic, in the order
the components call it:

    interval_for(rate_per_s)        T, the emission interval in ns (NaN: ValueError)
    burst_for(burst, T)             the burst, at least 1 and capped so burst * T <= SPAN_MAX
    request(now_ns, n, &now, &n)    take()'s arguments as int64, checked (ValueError)
    wait(tat, now, n, burst, T, &tat_after)
                                    0 when n tokens are admitted, else the ns to wait;
                                    tat_after is the bucket's tat afterwards, which
                                    differs from tat exactly when tokens were consumed

Every function can raise (except -1, a value none returns otherwise): the debug build
(CLAIMCORE_DEBUG_BUILD=1) checks each division and int64 product.
"""

from cpython.number cimport PyNumber_Index
from libc.math cimport isnan, rint
from libc.stdint cimport INT64_MAX, int64_t

cdef extern from *:
    """
    #define CLAIMCORE_GCRA_NOW_LIMIT 4611686018427387904LL  /* 2**62 */
    #define CLAIMCORE_GCRA_SPAN_MAX 4611686018427387903LL   /* 2**62 - 1 */
    """
    # now_ns lies in [-NOW_LIMIT, NOW_LIMIT]; a fresh bucket's tat is -NOW_LIMIT (full).
    const int64_t NOW_LIMIT "CLAIMCORE_GCRA_NOW_LIMIT"
    # The longest interval, and the cap on burst * T.
    const int64_t SPAN_MAX "CLAIMCORE_GCRA_SPAN_MAX"


cdef inline object as_index(object value):
    # Integers only, like the twin's operator.index(): Cython's own int64_t argument
    # conversion would silently truncate floats. Out of int64 -> OverflowError.
    return value if isinstance(value, int) else PyNumber_Index(value)


cdef inline int64_t interval_for(double rate_per_s) except -1:
    """T = max(1, round(1e9 / rate_per_s)) ns, capped at SPAN_MAX; 0 (unlimited) for rate <= 0.

    The only float operation: rint() rounds half to even in the default rounding mode,
    as Python's round() does."""
    cdef double x
    cdef int64_t interval
    if isnan(rate_per_s):
        raise ValueError("rate_per_s must not be NaN")
    if rate_per_s <= 0.0:
        return 0
    x = 1e9 / rate_per_s
    if x >= 4611686018427387904.0:  # 2.0 ** 62
        return SPAN_MAX
    interval = <int64_t>rint(x)
    return interval if interval >= 1 else 1


cdef inline int64_t burst_for(int64_t burst, int64_t interval) except -1:
    """max(1, burst), capped so that burst * interval <= SPAN_MAX."""
    if burst < 1:
        burst = 1
    if interval and burst > SPAN_MAX // interval:
        burst = SPAN_MAX // interval
    return burst


cdef inline int request(object now_ns, object n, int64_t *now, int64_t *count) except -1:
    """take()'s arguments: int64 integers (TypeError, OverflowError), n >= 1 and now_ns in
    [-NOW_LIMIT, NOW_LIMIT] (ValueError), checked in that order."""
    now[0] = as_index(now_ns)
    count[0] = as_index(n)
    if count[0] < 1:
        raise ValueError("n must be >= 1")
    if now[0] < -NOW_LIMIT or now[0] > NOW_LIMIT:
        raise ValueError("now_ns out of range [-2**62, 2**62]")
    return 0


cdef inline int64_t wait(int64_t tat, int64_t now, int64_t count, int64_t burst, int64_t interval,
                         int64_t *tat_after) except -1:
    """0 if count tokens are admitted at now, else the ns to wait; *tat_after is the new tat.

    Unlimited (interval 0): 0, nothing consumed. count > burst can never be admitted: count * T
    (saturating), nothing consumed. Else base = max(tat, now), admitted iff
    base <= now + (burst - count) * T (no int64 overflow within the input bounds), and then
    the tat becomes base + count * T; refused: base + count * T - burst * T - now,
    saturating at INT64_MAX."""
    cdef int64_t base, limit
    tat_after[0] = tat
    if interval == 0:
        return 0
    if count > burst:
        if count > INT64_MAX // interval:
            return INT64_MAX
        return count * interval
    base = tat if tat > now else now
    limit = now + (burst - count) * interval
    if base <= limit:
        tat_after[0] = base + count * interval
        return 0
    # base - limit would overflow only when limit < 0: saturate.
    if limit < 0 and base > INT64_MAX + limit:
        return INT64_MAX
    return base - limit
