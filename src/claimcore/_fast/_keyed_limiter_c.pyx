# cython: language_level=3
"""Compiled keyed GCRA limiter; the twin is ``_keyed_limiter_py`` (same results, same errors).

A table of GCRA buckets keyed by str, all with one rate and burst, in bounded memory.

Per key, the arithmetic is exactly TokenBucket's: both call the one GCRA core,
``_gcra.pxd`` (read ``_token_bucket_c``'s docstring for its rules): emission
interval T = max(1, round(1e9 / rate_per_s)) ns (rate <= 0: unlimited, take()
always returns 0 and nothing is stored), burst = max(1, burst) capped so that
burst * T <= SPAN_MAX, and a theoretical arrival time (tat) per key.
A key not in the table is a fresh, full bucket (tat = -NOW_LIMIT). So for a key
that has stayed in the table, take(key, now, n) returns exactly what
TokenBucket.take(now, n) returns on a bucket of its own, and peek() returns the
same without consuming anything.

Table: slots 0 .. used-1 (used <= capacity grows on demand), a dict key -> slot,
a C array of tats (INT64_MIN marks a free slot), a list of keys by slot, a stack of
free slots and a clock hand. Only an admitted take() of a new key inserts it (a
refusal never inserts; a fresh bucket refuses only n > burst). Each insertion first
sweeps the next SAMPLE (8) slots from the hand, round-robin, deterministic:

    * every swept entry with tat <= now is dropped: its bucket is full again, so
      forgetting it changes nothing (provided the clock does not go back);
    * the new key takes a free slot (last freed first), else a new slot while
      used < capacity;
    * else (table full, nothing swept had expired) the swept entry with the
      smallest tat (the first one on ties) is evicted: the bucket closest to full,
      so the eviction is as little lenient as possible. ``evictions`` counts them.

Consequence: an evicted key starts again with a fresh (full) bucket. Under a flood
of distinct keys a key can only be evicted when more than ``capacity`` keys are
active (tat > now) at once, and then only when it is the fullest of its sample:
size capacity above the number of keys active within burst * T.

Input bounds are TokenBucket's: now_ns in [-NOW_LIMIT, NOW_LIMIT] (ValueError),
n >= 1 (ValueError), int64 integers (OverflowError, TypeError for non-integers);
key must be a str (TypeError); capacity in [1, 2**62] (ValueError). The key is
checked first, then as in TokenBucket.take (now_ns and n converted, n >= 1, the
range of now_ns); nothing changes on an error.
"""

from cpython.dict cimport PyDict_DelItem, PyDict_GetItemWithError, PyDict_SetItem
from cpython.long cimport PyLong_AsSsize_t, PyLong_FromSsize_t
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.stdint cimport INT64_MAX as C_INT64_MAX
from libc.stdint cimport INT64_MIN as C_INT64_MIN
from libc.stdint cimport int64_t

cimport claimcore._fast._gcra as gcra

__all__ = ["INT64_MAX", "NOW_LIMIT", "SAMPLE", "SPAN_MAX", "KeyedLimiter"]

cdef int64_t _FREE = C_INT64_MIN
cdef Py_ssize_t _SAMPLE = 8
cdef Py_ssize_t _INITIAL = 64

INT64_MAX = C_INT64_MAX
NOW_LIMIT = gcra.NOW_LIMIT
SPAN_MAX = gcra.SPAN_MAX
SAMPLE = _SAMPLE


cdef class KeyedLimiter:
    """GCRA buckets keyed by str in at most ``capacity`` entries; see the module docstring."""

    cdef double _rate
    cdef int64_t _burst
    cdef int64_t _interval
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _used        # slots handed out so far (high-water mark)
    cdef Py_ssize_t _allocated   # length of the C arrays
    cdef Py_ssize_t _nfree       # entries on the free stack
    cdef Py_ssize_t _hand
    cdef Py_ssize_t _evictions
    cdef int64_t *_tat
    cdef Py_ssize_t *_free
    cdef dict _slots
    cdef list _keys

    def __cinit__(self):
        self._tat = NULL
        self._free = NULL

    def __init__(self, double rate_per_s, burst, capacity):
        cdef int64_t cap = gcra.as_index(burst)
        cdef int64_t size = gcra.as_index(capacity)
        cdef int64_t interval = gcra.interval_for(rate_per_s)
        if size < 1:
            raise ValueError("capacity must be >= 1")
        if size > <int64_t>(2**62):
            raise ValueError("capacity must be <= 2**62")
        self._rate = rate_per_s
        self._burst = gcra.burst_for(cap, interval)
        self._interval = interval
        self._capacity = <Py_ssize_t>size
        self._used = 0
        self._allocated = 0
        self._nfree = 0
        self._hand = 0
        self._evictions = 0
        self._slots = {}
        self._keys = []
        PyMem_Free(self._tat)
        PyMem_Free(self._free)
        self._tat = NULL
        self._free = NULL

    def __dealloc__(self):
        PyMem_Free(self._tat)
        PyMem_Free(self._free)

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

    @property
    def capacity(self):
        return self._capacity

    @property
    def evictions(self):
        """Entries evicted while their tat was still ahead of now (each one got a fresh bucket)."""
        return self._evictions

    def __len__(self):
        return len(self._slots)

    def __contains__(self, key):
        return key in self._slots

    def __repr__(self):
        return (f"KeyedLimiter(rate_per_s={self._rate!r}, burst={self._burst}, "
                f"capacity={self._capacity})")

    cdef int _grow(self) except -1:
        cdef Py_ssize_t size = self._allocated * 2 if self._allocated else _INITIAL
        cdef void *mem
        if size > self._capacity:
            size = self._capacity
        mem = PyMem_Realloc(self._tat, size * sizeof(int64_t))
        if mem == NULL:
            raise MemoryError()
        self._tat = <int64_t *>mem
        mem = PyMem_Realloc(self._free, size * sizeof(Py_ssize_t))
        if mem == NULL:
            raise MemoryError()
        self._free = <Py_ssize_t *>mem
        self._allocated = size
        return 0

    cdef int _drop(self, Py_ssize_t slot) except -1:
        PyDict_DelItem(self._slots, self._keys[slot])
        self._keys[slot] = None
        self._tat[slot] = _FREE
        return 0

    cdef int _insert(self, object key, int64_t now, int64_t tat) except -1:
        cdef Py_ssize_t used = self._used
        cdef Py_ssize_t sample = _SAMPLE if used > _SAMPLE else used
        cdef Py_ssize_t hand = self._hand
        cdef Py_ssize_t slot, i
        cdef Py_ssize_t victim = -1
        cdef int64_t victim_tat = C_INT64_MAX
        cdef int64_t t
        if hand >= used:
            hand = 0
        for i in range(sample):
            slot = hand
            hand += 1
            if hand == used:
                hand = 0
            t = self._tat[slot]
            if t == _FREE:
                continue
            if t <= now:
                self._drop(slot)
                self._free[self._nfree] = slot
                self._nfree += 1
            elif t < victim_tat:
                victim_tat = t
                victim = slot
        self._hand = hand
        if self._nfree:
            self._nfree -= 1
            slot = self._free[self._nfree]
            self._keys[slot] = key
        elif used < self._capacity:
            if used == self._allocated:
                self._grow()
            slot = used
            self._used = used + 1
            self._keys.append(key)
        else:
            slot = victim  # full and nothing expired: every swept slot is live with tat > now
            self._drop(slot)
            self._evictions += 1
            self._keys[slot] = key
        self._tat[slot] = tat
        PyDict_SetItem(self._slots, key, PyLong_FromSsize_t(slot))
        return 0

    cdef inline int64_t _wait(self, object key, now_ns, n, bint consume) except -1:
        cdef int64_t now, count, tat, tat_after, wait
        cdef PyObject *found
        cdef Py_ssize_t slot = -1
        if not isinstance(key, str):
            raise TypeError("key must be a str, not " + type(key).__name__)
        gcra.request(now_ns, n, &now, &count)
        found = PyDict_GetItemWithError(self._slots, key)
        if found == NULL:
            tat = -gcra.NOW_LIMIT
        else:
            slot = PyLong_AsSsize_t(<object>found)
            tat = self._tat[slot]
        wait = gcra.wait(tat, now, count, self._burst, self._interval, &tat_after)
        if consume and tat_after != tat:  # admitted: tokens consumed
            if slot >= 0:
                self._tat[slot] = tat_after
            else:
                self._insert(key, now, tat_after)
        return wait

    def take(self, key, now_ns, n=1):
        """0 if n of key's tokens were admitted (and consumed), else the ns to wait (nothing consumed)."""
        return self._wait(key, now_ns, n, True)

    def peek(self, key, now_ns, n=1):
        """What take() would return now, without consuming or inserting anything."""
        return self._wait(key, now_ns, n, False)
