"""The nodes' Prometheus figures for the dashboard: the samples of a scrape, running sums, percentiles.

A scrape is the text exposition format (version 0.0.4: what the nodes' /metrics answers a client that
asks for text/plain), read whole with prometheus_client's parser. A scrape the parser refuses counts as
a failed one (the source is shown down, with the parser's reason), as Prometheus itself does. The names
read are the node's own (claimcore.node.metrics): renaming a family there renames what the dashboard
looks for, and the browser test checks each of them against a real node's /metrics.

Counters (and histogram buckets, which are counters) are followed per source: each scrape's increase over
the previous one (a counter that went down restarted: its whole value is the increase), so a node
restarting or missing a scrape never makes a figure go backwards.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from claimcore.node import metrics as node_metrics

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels, float]
SeriesKey = tuple[str, Labels]

#: The samples the dashboard reads, by the names of the node's families (`claimcore serve
#: --metrics-port N`): a counter's samples add "_total", a histogram's "_bucket", "_count" and "_sum".
CLAIMS = node_metrics.CLAIMS + "_total"
CLAIM_SECONDS = node_metrics.CLAIM_SECONDS
ADMISSION_DROPS = node_metrics.ADMISSION_DROPS + "_total"
REDEMPTIONS = node_metrics.REDEMPTIONS + "_total"
RPC_ERRORS = node_metrics.RPC_ERRORS + "_total"
REDIS_UP = node_metrics.REDIS_UP
INFO = node_metrics.INFO
COUNTERS = frozenset((CLAIMS, ADMISSION_DROPS, REDEMPTIONS, RPC_ERRORS, CLAIM_SECONDS + "_bucket",
                      CLAIM_SECONDS + "_count", CLAIM_SECONDS + "_sum"))  # fmt: skip
#: Every family name the dashboard reads (the test checks each is in a node's /metrics).
READ = (CLAIMS, CLAIM_SECONDS + "_bucket", ADMISSION_DROPS, REDEMPTIONS, RPC_ERRORS, REDIS_UP, INFO)
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))


def parse_text(text: str) -> list[Sample]:
    """Every sample of a text exposition, as (name, sorted labels, value); ValueError for text that is
    not one (the parser's reason)."""
    try:
        return [(s.name, tuple(sorted(s.labels.items())), float(s.value))
                for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"not Prometheus text: {exc}") from None


def label(labels: Labels, name: str) -> str:
    for key, value in labels:
        if key == name:
            return value
    return ""


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over (upper bound `le`, cumulative count) pairs; None without data.

    Linear interpolation inside the bucket that holds the rank; a rank in the +Inf bucket answers the
    highest finite bound (what Prometheus does).
    """
    pairs = sorted((le, c) for le, c in buckets if not math.isnan(le))
    if not pairs or pairs[-1][0] != math.inf:
        return None
    fixed: list[tuple[float, float]] = []
    top = 0.0
    for le, c in pairs:  # cumulative counts never go down (sums of deltas might, by a reset)
        top = max(top, c)
        fixed.append((le, top))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    for i, (le, c) in enumerate(fixed):
        if c >= rank:
            if le == math.inf:
                return fixed[i - 1][0] if i > 0 else None
            lower, below = (fixed[i - 1][0], fixed[i - 1][1]) if i > 0 else (0.0, 0.0)
            if i == 0 and le <= 0:
                return le
            inside = c - below
            if inside <= 0:
                return le
            return lower + (le - lower) * (rank - below) / inside
    return None


def percentiles(buckets: Iterable[tuple[float, float]]) -> dict[str, float | None]:
    pairs = list(buckets)
    return {key: quantile(q, pairs) for key, q in QUANTILES}


class MetricsState:
    """The last scrape of every source, and the counters' increases over a sliding window.

    `observe(source, samples, t)` after each successful scrape; `totals()` sums every source's last
    values (a source that misses a scrape keeps its last ones); `window(seconds, now)` sums the
    increases of the last `seconds`.
    """

    def __init__(self, keep_s: float = 60.0) -> None:
        self.keep_s = keep_s
        self.last: dict[str, dict[SeriesKey, float]] = {}
        self.seen_at: dict[str, float] = {}
        #: (previous scrape's time, this scrape's time, the increases between them)
        self.increases: deque[tuple[float, float, dict[SeriesKey, float]]] = deque()

    def observe(self, source: str, samples: list[Sample], t: float) -> None:
        now = {(name, labels): value for name, labels, value in samples}
        prev = self.last.get(source)
        if prev is not None:
            inc: dict[SeriesKey, float] = {}
            for key, value in now.items():
                if key[0] not in COUNTERS:
                    continue
                before = prev.get(key)
                d = value if before is None or value < before else value - before
                if d > 0:
                    inc[key] = d
            self.increases.append((self.seen_at[source], t, inc))
        self.last[source] = now
        self.seen_at[source] = t
        while self.increases and self.increases[0][1] < t - self.keep_s:
            self.increases.popleft()

    def totals(self) -> dict[SeriesKey, float]:
        out: dict[SeriesKey, float] = {}
        for series in self.last.values():
            for key, value in series.items():
                if key[0] in COUNTERS:
                    out[key] = out.get(key, 0.0) + value
        return out

    def window(self, seconds: float, now: float) -> tuple[dict[SeriesKey, float], float]:
        """The summed increases of the scrapes in the last `seconds`, and the time they span (from the
        scrape before the oldest of them)."""
        out: dict[SeriesKey, float] = {}
        oldest = now
        for before, t, inc in self.increases:
            if t < now - seconds:
                continue
            oldest = min(oldest, before)
            for key, value in inc.items():
                out[key] = out.get(key, 0.0) + value
        return out, now - oldest

    def gauges(self, source: str, name: str) -> list[tuple[Labels, float]]:
        return [(labels, value) for (n, labels), value in self.last.get(source, {}).items() if n == name]


def by_label(series: dict[SeriesKey, float], name: str, key: str,
             where: dict[str, set[str]] | None = None) -> dict[str, float]:
    """Sum the series called `name` by the value of label `key`, keeping those whose labels match `where`."""
    out: dict[str, float] = {}
    for (n, labels), value in series.items():
        if n != name:
            continue
        if where and any(label(labels, k) not in allowed for k, allowed in where.items()):
            continue
        v = label(labels, key)
        out[v] = out.get(v, 0.0) + value
    return out


def histograms(series: dict[SeriesKey, float], name: str, by: str) -> dict[str, list[tuple[float, float]]]:
    """The buckets of histogram `name` summed by label `by`: {value: [(le, cumulative count)]}."""
    acc: dict[str, dict[float, float]] = {}
    for (n, labels), value in series.items():
        if n != name + "_bucket":
            continue
        try:
            le = float(label(labels, "le"))
        except ValueError:
            continue
        group = acc.setdefault(label(labels, by), {})
        group[le] = group.get(le, 0.0) + value
    return {k: sorted(v.items()) for k, v in acc.items()}
