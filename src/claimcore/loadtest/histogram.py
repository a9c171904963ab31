"""A log-bucketed latency histogram (HDR style): fixed relative precision, cheap to merge.

Values are whole microseconds (negative ones count as 0). With `digits` significant decimal
digits, let H = 2**ceil(log2(10**digits)) (1024 for 3 digits):

- values below 2H each have a bucket of their own, so they are kept exactly;
- above, the values sharing a bit length are split into H equal buckets, so a bucket is
  never wider than 1/H of the values in it.

A percentile answers with the highest value of the bucket holding the nearest-rank value,
clipped to the largest value recorded: never below the exact answer, and above it by less
than 1/H of it (0.1 % for 3 digits). There is no upper limit; 60 s is about 17,000 buckets.

Buckets are kept in a dict holding only the non-empty ones, so many small histograms (one
per 100 ms of a run) stay small, and worker processes send bucket counts, not latencies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class LatencyHistogram:
    """Counts of microsecond values in log-linear buckets; see the module docstring."""

    __slots__ = ("digits", "_half", "_linear", "_shift", "counts", "count", "total", "min", "max")

    def __init__(self, digits: int = 3) -> None:
        if not 1 <= digits <= 5:
            raise ValueError(f"digits must be within 1..5, not {digits}")
        self.digits = digits
        magnitude = math.ceil(math.log2(10**digits))
        self._half = 1 << magnitude  # H: buckets per power of two above the linear range
        self._linear = self._half << 1  # values below this have a bucket each
        self._shift = magnitude + 1
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    # ---------------------------------------------------------------- buckets

    def bucket_of(self, value_us: int) -> int:
        if value_us < self._linear:
            return value_us if value_us > 0 else 0
        k = value_us.bit_length() - self._shift  # k >= 1: the bucket is 2**k wide
        return k * self._half + (value_us >> k)

    def bucket_range(self, index: int) -> tuple[int, int]:
        """The lowest and highest value that fall into bucket `index`."""
        if index < self._linear:
            return index, index
        k = index // self._half - 1
        low = (index - k * self._half) << k
        return low, low + (1 << k) - 1

    # ---------------------------------------------------------------- recording

    def record(self, value_us: int, count: int = 1) -> None:
        """Count value_us, `count` times (the claims of one batch share one call's latency)."""
        value_us = max(0, int(value_us))
        i = self.bucket_of(value_us)
        self.counts[i] = self.counts.get(i, 0) + count
        if self.count == 0 or value_us < self.min:
            self.min = value_us
        if value_us > self.max:
            self.max = value_us
        self.count += count
        self.total += value_us * count

    def record_seconds(self, seconds: float, count: int = 1) -> None:
        self.record(round(seconds * 1_000_000), count)

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add other's counts into this one (same digits); returns self."""
        if other.digits != self.digits:
            raise ValueError(f"cannot merge {other.digits}-digit counts into {self.digits}-digit ones")
        if not other.count:
            return self
        counts = self.counts
        for i, n in other.counts.items():
            counts[i] = counts.get(i, 0) + n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total
        return self

    # ---------------------------------------------------------------- queries

    def percentiles(self, qs: Iterable[float]) -> list[float]:
        """Nearest-rank percentiles (q within 0..100) in microseconds; NaN when empty."""
        wanted = list(qs)
        for q in wanted:
            if not 0 <= q <= 100:
                raise ValueError(f"q must be within 0..100, not {q}")
        if not self.count:
            return [math.nan] * len(wanted)
        ranks = sorted((max(1, math.ceil(q / 100.0 * self.count)), n) for n, q in enumerate(wanted))
        out = [math.nan] * len(wanted)
        seen = 0
        pending = iter(ranks)
        rank, slot = next(pending)
        for i in sorted(self.counts):
            seen += self.counts[i]
            while seen >= rank:
                out[slot] = float(min(self.bucket_range(i)[1], self.max))
                nxt = next(pending, None)
                if nxt is None:
                    return out
                rank, slot = nxt
        return out  # pragma: no cover - ranks never exceed count

    def percentile(self, q: float) -> float:
        return self.percentiles([q])[0]

    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    # ---------------------------------------------------------------- transport

    def state(self) -> dict[str, Any]:
        """A plain dict (picklable, JSON-able once keys are strings); from_state reverses it."""
        return {
            "digits": self.digits,
            "counts": dict(self.counts),
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LatencyHistogram:
        hist = cls(int(state["digits"]))
        hist.counts = {int(i): int(n) for i, n in state["counts"].items()}
        hist.count = int(state["count"])
        hist.total = int(state["total"])
        hist.min = int(state["min"])
        hist.max = int(state["max"])
        return hist
