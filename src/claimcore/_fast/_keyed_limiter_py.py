"""Pure-Python twin of ``_keyed_limiter_c``: same table, same sweep, same results, same errors.

A table of GCRA buckets keyed by str, all with one rate and burst, in bounded memory.

Per key, the arithmetic is exactly TokenBucket's: both call the one GCRA core,
``_gcra_py`` (read ``_token_bucket_py``'s docstring for its rules): emission
interval T = max(1, round(1e9 / rate_per_s)) ns (rate <= 0: unlimited, take()
always returns 0 and nothing is stored), burst = max(1, burst) capped so that
burst * T <= SPAN_MAX, and a theoretical arrival time (tat) per key.
A key not in the table is a fresh, full bucket (tat = -NOW_LIMIT). So for a key
that has stayed in the table, take(key, now, n) returns exactly what
TokenBucket.take(now, n) returns on a bucket of its own, and peek() returns the
same without consuming anything.

Table: slots 0 .. used-1 (used <= capacity grows on demand), a dict key -> slot,
a list of tats (FREE = INT64_MIN marks a free slot), a list of keys by slot, a
stack of free slots and a clock hand. Only an admitted take() of a new key inserts
it (a refusal never inserts; a fresh bucket refuses only n > burst). Each insertion
first sweeps the next SAMPLE (8) slots from the hand, round-robin, deterministic:

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

from __future__ import annotations

from . import _gcra_py as gcra
from ._gcra_py import INT64_MAX, NOW_LIMIT, SPAN_MAX

__all__ = ["INT64_MAX", "NOW_LIMIT", "SAMPLE", "SPAN_MAX", "KeyedLimiter"]

SAMPLE = 8
FREE = -(2**63)


class KeyedLimiter:
    """GCRA buckets keyed by str in at most ``capacity`` entries; see the module docstring."""

    __slots__ = ("_rate", "_burst", "_interval", "_capacity", "_hand", "_evictions", "_tat", "_free",
                 "_slots", "_keys")

    def __init__(self, rate_per_s: float, burst: int, capacity: int) -> None:
        rate = gcra.as_double(rate_per_s)
        burst = gcra.as_int64(burst)
        size = gcra.as_int64(capacity)
        interval = gcra.interval_for(rate)
        if size < 1:
            raise ValueError("capacity must be >= 1")
        if size > 2**62:
            raise ValueError("capacity must be <= 2**62")
        self._rate = rate
        self._burst = gcra.burst_for(burst, interval)
        self._interval = interval
        self._capacity = size
        self._hand = 0
        self._evictions = 0
        self._tat: list[int] = []  # by slot; len() is the number of slots used so far
        self._free: list[int] = []
        self._slots: dict[str, int] = {}
        self._keys: list[str | None] = []

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

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def evictions(self) -> int:
        """Entries evicted while their tat was still ahead of now (each one got a fresh bucket)."""
        return self._evictions

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def __repr__(self) -> str:
        return f"KeyedLimiter(rate_per_s={self._rate!r}, burst={self._burst}, capacity={self._capacity})"

    def _drop(self, slot: int) -> None:
        del self._slots[self._keys[slot]]  # type: ignore[arg-type]
        self._keys[slot] = None
        self._tat[slot] = FREE

    def _insert(self, key: str, now: int, new_tat: int) -> None:
        tats = self._tat
        used = len(tats)
        hand = self._hand
        if hand >= used:
            hand = 0
        victim, victim_tat = -1, INT64_MAX
        for _ in range(min(SAMPLE, used)):
            slot = hand
            hand += 1
            if hand == used:
                hand = 0
            t = tats[slot]
            if t == FREE:
                continue
            if t <= now:
                self._drop(slot)
                self._free.append(slot)
            elif t < victim_tat:
                victim, victim_tat = slot, t
        self._hand = hand
        if self._free:
            slot = self._free.pop()
            self._keys[slot] = key
            tats[slot] = new_tat
        elif used < self._capacity:
            slot = used
            self._keys.append(key)
            tats.append(new_tat)
        else:
            slot = victim  # full and nothing expired: every swept slot is live with tat > now
            self._drop(slot)
            self._evictions += 1
            self._keys[slot] = key
            tats[slot] = new_tat
        self._slots[key] = slot

    def _wait(self, key: str, now_ns: int, n: int, consume: bool) -> int:
        if not isinstance(key, str):
            raise TypeError("key must be a str, not " + type(key).__name__)
        now, n = gcra.request(now_ns, n)
        slot = self._slots.get(key)
        tat = -NOW_LIMIT if slot is None else self._tat[slot]
        wait, tat_after = gcra.wait(tat, now, n, self._burst, self._interval)
        if consume and tat_after != tat:  # admitted: tokens consumed
            if slot is not None:
                self._tat[slot] = tat_after
            else:
                self._insert(key, now, tat_after)
        return wait

    def take(self, key: str, now_ns: int, n: int = 1) -> int:
        """0 if n of key's tokens were admitted (and consumed), else the ns to wait (nothing consumed)."""
        return self._wait(key, now_ns, n, True)

    def peek(self, key: str, now_ns: int, n: int = 1) -> int:
        """What take() would return now, without consuming or inserting anything."""
        return self._wait(key, now_ns, n, False)
