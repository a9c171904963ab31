"""Latency histograms: HdrHistogram (the `hdrhistogram` package) with exact totals beside it.

Values are whole microseconds from 0 up to `highest_us` (default one hour), kept to `digits`
significant decimal digits (3 by default: values below 2048 us are exact, above that a
bucket is at most 1/1024 of its values wide). Negative values count as 0; values above
`highest_us` go into the top bucket, so percentiles read them as the top of the range
(the exact `max` still says what was seen).

Beside the HdrHistogram counts, a LatencyHistogram keeps the exact count, sum, min and max,
so `mean()` and `max` are exact and percentiles never leave the range actually recorded.

Percentiles are the package's (`get_percentile_to_value_dict`: the count at percentile q is
round(q/100 * count), at least 1; q > 0 answers with the highest value of that bucket, q = 0
with the lowest), clipped to [min, max]. So a percentile is never below the exact nearest-rank
answer for that count and above it by less than one bucket (0.1 % at 3 digits). Other
HdrHistogram implementations (Java, C, Go) pick the count with ceil instead of round, so on
small counts they may answer with the next value up; on large counts they agree.

`encode()` gives the standard HdrHistogram V2 compressed, base64 encoding, which any
HdrHistogram implementation can decode and add up (`HdrHistogram.decode(text)`,
`decode_and_add`), across processes and across runs; `state()` / `from_state()` carry it,
with the exact totals, between worker processes.

Memory: the counts are a fixed array, 4 bytes a bucket (widened to 8 bytes if one histogram
ever holds 2**32 values or more). One hour at 3 digits is 23,552 buckets (about 95 KB a
histogram); at 2 digits 3,328 buckets (about 14 KB), so 600 slice histograms of a 60 s run
take about 8.6 MB in a worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from hdrh.histogram import HdrHistogram

HOUR_US = 3_600_000_000
_NARROW_LIMIT = 2**32 - 1  # what a 4-byte bucket holds


def _new_hdr(digits: int, highest_us: int, word_size: int = 4) -> HdrHistogram:
    return HdrHistogram(1, highest_us, digits, word_size=word_size)


class LatencyHistogram:
    """Microsecond values in an HdrHistogram, with exact count/total/min/max; see the module docstring."""

    __slots__ = ("digits", "highest_us", "_hdr", "_counts", "_index", "count", "total", "min", "max")

    def __init__(self, digits: int = 3, highest_us: int = HOUR_US) -> None:
        if not 1 <= digits <= 5:
            raise ValueError(f"digits must be within 1..5, not {digits}")
        if highest_us < 2:
            raise ValueError(f"highest_us must be at least 2, not {highest_us}")
        self.digits = digits
        self.highest_us = int(highest_us)
        self._use(_new_hdr(digits, self.highest_us))
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    # ---------------------------------------------------------------- recording

    def record(self, value_us: int, count: int = 1) -> None:
        """Count value_us, `count` times (the claims of one batch share one call's latency)."""
        value_us = int(value_us)
        if value_us < 0:
            value_us = 0
        if self.count == 0 or value_us < self.min:
            self.min = value_us
        if value_us > self.max:
            self.max = value_us
        self.count += count
        self.total += value_us * count
        if self.count > _NARROW_LIMIT and self._hdr.word_size < 8:
            self._widen()
        # HdrHistogram.record_value, with the bucket index worked out by int.bit_length (about
        # 4x quicker than the package's; test_loadgen_histogram checks both agree):
        hdr = self._hdr
        if value_us > self.highest_us:
            value_us = self.highest_us
        mask, shift, unit, half_mag, half = self._index
        bucket = (value_us | mask).bit_length() - shift
        self._counts[((bucket + 1) << half_mag) + (value_us >> (bucket + unit)) - half] += count
        hdr.total_count += count
        if value_us < hdr.min_value:
            hdr.min_value = value_us
        if value_us > hdr.max_value:
            hdr.max_value = value_us

    def record_seconds(self, seconds: float, count: int = 1) -> None:
        self.record(round(seconds * 1_000_000), count)

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add other's counts into this one (same digits and range); returns self."""
        if other.digits != self.digits or other.highest_us != self.highest_us:
            raise ValueError(
                f"cannot merge {other.digits}-digit counts up to {other.highest_us} us into "
                f"{self.digits}-digit ones up to {self.highest_us} us"
            )
        if not other.count:
            return self
        if not self.count:  # take a copy of other's counts: cheaper than adding them up
            self._use(HdrHistogram.decode(other._hdr.encode()))
            self.min, self.max, self.count, self.total = other.min, other.max, other.count, other.total
            return self
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total
        if self.count > _NARROW_LIMIT and self._hdr.word_size < 8:
            self._widen()
        self._hdr.add(other._hdr)
        return self

    def _use(self, hdr: HdrHistogram) -> None:
        self._hdr = hdr
        self._counts = hdr.counts
        self._index = (
            hdr.sub_bucket_mask,
            hdr.unit_magnitude + hdr.sub_bucket_half_count_magnitude + 1,
            hdr.unit_magnitude,
            hdr.sub_bucket_half_count_magnitude,
            hdr.sub_bucket_half_count,
        )

    def _widen(self) -> None:
        """Move the counts to 8-byte buckets before a 4-byte one could overflow."""
        wide = _new_hdr(self.digits, self.highest_us, word_size=8)
        wide.add(self._hdr)
        self._use(wide)

    # ---------------------------------------------------------------- queries

    def percentiles(self, qs: Iterable[float]) -> list[float]:
        """Percentiles (q within 0..100) in microseconds, as the module docstring says; NaN when empty."""
        wanted = [float(q) for q in qs]
        for q in wanted:
            if not 0 <= q <= 100:
                raise ValueError(f"q must be within 0..100, not {q}")
        if not self.count:
            return [math.nan] * len(wanted)
        found = self._hdr.get_percentile_to_value_dict(wanted)
        return [float(min(max(found[q], self.min), self.max)) for q in wanted]

    def percentile(self, q: float) -> float:
        return self.percentiles([q])[0]

    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def hdr(self) -> HdrHistogram:
        """The HdrHistogram holding the counts (shared, not a copy)."""
        return self._hdr

    # ---------------------------------------------------------------- transport

    def encode(self) -> str:
        """The counts in the standard HdrHistogram V2 compressed, base64 encoding (ASCII text).

        Any HdrHistogram implementation reads it back (Python: `HdrHistogram.decode(text)`);
        the exact sum, min and max are not part of it (see state()).
        """
        return self._hdr.encode().decode("ascii")

    def state(self) -> dict[str, Any]:
        """A plain, JSON-able dict (the encoded counts plus the exact totals); from_state reverses it."""
        return {
            "digits": self.digits,
            "highest_us": self.highest_us,
            "hdr": self.encode(),
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LatencyHistogram:
        hist = cls(int(state["digits"]), int(state.get("highest_us", HOUR_US)))
        decoded = HdrHistogram.decode(state["hdr"])
        if (decoded.significant_figures, decoded.highest_trackable_value) != (hist.digits, hist.highest_us):
            raise ValueError(
                f"encoded counts have {decoded.significant_figures} digits up to "
                f"{decoded.highest_trackable_value} us, not {hist.digits} up to {hist.highest_us}"
            )
        if decoded.total_count != int(state["count"]):
            raise ValueError(f"encoded counts hold {decoded.total_count} values, state says {state['count']}")
        hist._use(decoded)
        hist.count = int(state["count"])
        hist.total = int(state["total"])
        hist.min = int(state["min"])
        hist.max = int(state["max"])
        return hist

    @classmethod
    def decode(cls, encoded: str | bytes) -> LatencyHistogram:
        """A histogram from encode()'s text alone (any V2 encoder's). The exact sum is not in the
        encoding, so count, min and max come from the buckets and the mean from bucket middles."""
        decoded = HdrHistogram.decode(encoded)
        hist = cls(int(decoded.significant_figures), int(decoded.highest_trackable_value))
        hist._use(decoded)
        hist.count = int(decoded.get_total_count())
        if hist.count:
            hist.min = int(decoded.get_min_value())
            hist.max = int(decoded.get_max_value())
            hist.total = round(decoded.get_mean_value() * hist.count)
        return hist

