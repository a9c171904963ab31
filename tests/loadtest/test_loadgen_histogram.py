"""Tests of the log-bucketed latency histogram: precision, merging, transport."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from claimcore.loadtest.histogram import LatencyHistogram
from claimcore.loadtest.report import percentile

QS = (0, 1, 25, 50, 90, 99, 99.9, 99.99, 100)


def filled(values, digits: int = 3) -> LatencyHistogram:
    hist = LatencyHistogram(digits)
    for v in values:
        hist.record(v)
    return hist


def test_small_values_are_exact():
    values = list(range(0, 2048))  # below 2H with H = 1024 for three digits
    random.Random(1).shuffle(values)
    hist = filled(values)
    exact = sorted(values)
    for q in QS:
        assert hist.percentile(q) == percentile(exact, q)


def test_buckets_tile_the_values_without_gaps():
    hist = LatencyHistogram(2)
    previous_high = -1
    for index in range(hist.bucket_of(10_000_000) + 1):
        low, high = hist.bucket_range(index)
        assert low == previous_high + 1
        assert hist.bucket_of(low) == index and hist.bucket_of(high) == index
        if low >= 256:  # above the linear range, a bucket is at most 1/128 of its values wide
            assert (high - low + 1) / low <= 1 / 128
        previous_high = high


@pytest.mark.parametrize("digits", [2, 3])
def test_percentiles_are_within_the_stated_precision(digits):
    rng = random.Random(digits)
    # Latency-like data: a lognormal body around 2 ms with a tail up to tens of seconds.
    values = [int(rng.lognormvariate(7.5, 1.5)) for _ in range(50_000)]
    values += [rng.randint(1_000_000, 60_000_000) for _ in range(50)]
    hist = filled(values, digits)
    exact = sorted(values)
    bound = 1 / 2 ** math.ceil(math.log2(10**digits))
    for q in QS:
        truth = percentile(exact, q)
        got = hist.percentile(q)
        assert truth <= got <= truth * (1 + bound), (q, truth, got)
    assert hist.percentile(100) == max(values)
    assert hist.count == len(values) and hist.min == min(values) and hist.max == max(values)
    assert hist.mean() == pytest.approx(sum(values) / len(values))


def test_merging_equals_recording_everything_in_one():
    rng = random.Random(7)
    parts = [[int(rng.expovariate(1 / 5000)) for _ in range(3000)] for _ in range(4)]
    merged = LatencyHistogram()
    for part in parts:
        merged.merge(filled(part))
    whole = filled([v for part in parts for v in part])
    assert merged.counts == whole.counts
    assert (merged.count, merged.total, merged.min, merged.max) == (
        whole.count, whole.total, whole.min, whole.max,
    )  # fmt: skip
    assert merged.percentiles(QS) == whole.percentiles(QS)


def test_merging_an_empty_histogram_changes_nothing():
    hist = filled([5, 10, 15])
    before = hist.state()
    hist.merge(LatencyHistogram())
    assert hist.state() == before
    empty = LatencyHistogram().merge(filled([42]))
    assert (empty.min, empty.max, empty.count) == (42, 42, 1)


def test_merging_different_precisions_is_refused():
    with pytest.raises(ValueError):
        LatencyHistogram(3).merge(LatencyHistogram(2))


def test_state_round_trips_through_pickle_and_json_style_keys():
    hist = filled([1, 2, 3000, 4_000_000])
    state = pickle.loads(pickle.dumps(hist.state()))
    assert LatencyHistogram.from_state(state).state() == hist.state()
    as_json = dict(state, counts={str(k): v for k, v in state["counts"].items()})
    assert LatencyHistogram.from_state(as_json).percentiles(QS) == hist.percentiles(QS)


def test_record_with_a_count_and_in_seconds():
    hist = LatencyHistogram()
    hist.record_seconds(0.0015, count=3)  # three claims of one batch call
    hist.record(-5)  # a clock step backwards counts as 0
    assert hist.count == 4 and hist.min == 0 and hist.max == 1500
    assert hist.percentile(50) == 1500 and hist.percentile(0) == 0
    assert hist.total == 4500


def test_empty_histogram_answers_nan():
    hist = LatencyHistogram()
    assert all(math.isnan(v) for v in hist.percentiles([50, 99]))
    assert math.isnan(hist.mean())
    with pytest.raises(ValueError):
        hist.percentile(101)
    with pytest.raises(ValueError):
        LatencyHistogram(0)
