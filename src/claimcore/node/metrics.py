"""Prometheus metrics of one front node (docs/metrics.md lists them and what to watch).

The hot path only bumps plain dict entries and list slots (a claim costs a
dict lookup and an add, tens of nanoseconds); the Prometheus families are
built from those at scrape time by `NodeMetrics.collect`, in a per-node
CollectorRegistry served by prometheus_client's HTTP server on its own thread.
The scrape reads copies (`dict(d)` is atomic under the GIL), so it never sees
a table changing under it.

Label sets stay bounded: outcomes, reasons, methods and codes are fixed
lists; campaign ids are labels for the first `CAMPAIGN_LABELS` distinct
campaigns the node counts, "other" after that; no user id, request id or key
is ever a label. Only campaigns that exist reach a campaign label (claims are
counted after the campaign was found).

The stock gauges are sampled about once a second by `sample_forever`, for
the campaigns the node has in its cache: one pipelined read of every such
campaign's shard states and sold-out time per round.

The standard gRPC server families (`grpc_server_started_total`, `grpc_server_handled_total`,
`grpc_server_handling_seconds`, named and labelled as go-grpc-prometheus does, so that boards made
for gRPC servers work) are counted by `RpcMetrics`, the outermost layer of the call pipeline, in one
`MethodCalls` per unary method made when the method is wrapped: a call adds to two of its slots and
times itself with one perf_counter pair. `claimcore_rpc_errors_total` and `claimcore_claim_seconds`
are built from the same counts.

Under `serve --workers N` (workers.py) each worker keeps its NodeMetrics and
serves them on a loopback port of its own; the parent's one /metrics is
`WorkersMetrics`, which scrapes the workers and merges them: counters and
histograms summed, gauges (sampled from the shared Redis, so alike up to
a second's lag) by `GAUGE_MERGE`, plus per-worker families that show the spread.
The process families (prometheus_client's ProcessCollector) cover the workers, the processes that
serve: CPU seconds, resident and virtual memory and open fds summed, the start time the earliest
(the parent, a supervisor that forwards signals and merges scrapes, is left out, so that loadgen's
--node-metrics measures what serving cost); each worker's CPU and resident memory are also shown
with a `worker` label.
prometheus_client's multiprocess mode was the other way: it merges only its
own mmap-backed metrics, not a custom collector's families, and would put a
file write with a lock on every claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from claimcore import __version__
from claimcore.campaign import CampaignConfig
from claimcore.node.pipeline import rewrapped
from claimcore.store.inventory import RedisInventory
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import short_names

CAMPAIGN_LABELS = 1_000  # distinct campaign label values, at most; then "other"
OTHER = "other"

CLAIM_OUTCOMES = {number: name.lower() for name, number in short_names(pb.Outcome).items()}
REDEEM_OUTCOMES = {number: name.lower() for name, number in short_names(pb.RedeemOutcome).items()}
TIMED_METHODS = ("Claim", "ClaimBatch")
DROP_REASONS = ("admission_rate", "abuse", "overloaded")

# The families' names (ops/dashboard/prometheus.py imports some, so a rename here is a rename there;
# monitoring/ names them too, and tests/ops/test_monitoring.py checks those against a real node).
# A counter's samples add "_total" to its name; a histogram's add "_bucket", "_sum" and "_count".
CLAIMS = "claimcore_claims"
CLAIM_SECONDS = "claimcore_claim_seconds"
ADMISSION_DROPS = "claimcore_admission_drops"
REDEMPTIONS = "claimcore_redemptions"
RPC_ERRORS = "claimcore_rpc_errors"
REDIS_UP = "claimcore_redis_up"
INFO = "claimcore_info"
STOCK = "claimcore_stock_remaining_vouchers"   # was claimcore_stock_remaining
GRANTED = "claimcore_granted_vouchers"         # was claimcore_granted
SOLD_OUT = "claimcore_sold_out_seconds"
ROUND_TRIPS = "claimcore_redis_round_trips"
BATCH_SIZE = "claimcore_redis_batch_size_claims"  # was claimcore_redis_batch_size
WORKER_CLAIMS = "claimcore_worker_claims"  # serve --workers only: claims answered by each worker
WORKER_INFO = "claimcore_worker_info"      # serve --workers only: each worker's index and pid
WORKER_CPU = "claimcore_worker_cpu_seconds"                # serve --workers only: each worker's CPU
WORKER_MEMORY = "claimcore_worker_resident_memory_bytes"   # serve --workers only: each worker's RSS
# The standard gRPC server families, as go-grpc-prometheus names and labels them.
GRPC_STARTED = "grpc_server_started"
GRPC_HANDLED = "grpc_server_handled"
GRPC_SECONDS = "grpc_server_handling_seconds"
GRPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
UNARY = "unary"  # grpc_type: only unary calls are counted (streams pass through the layer)
# grpc_code values are Go's names of the codes (OK, InvalidArgument, Canceled...), as gRPC boards expect.
GRPC_CODES = {code.name: "OK" if code is grpc.StatusCode.OK else "Canceled"
              if code is grpc.StatusCode.CANCELLED else code.name.title().replace("_", "")
              for code in grpc.StatusCode}
CLAIM_SERVICE = pb.DESCRIPTOR.services_by_name["ClaimService"].full_name
PROCESS_CPU = "process_cpu_seconds"  # ProcessCollector's counter (samples: process_cpu_seconds_total)
PROCESS_MEMORY = "process_resident_memory_bytes"

# Seconds per call: a claim waits ~linger + one Redis round trip; a stalled Redis shows up to 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # claims per claim.lua call


def _counter(name: str, doc: str, labels: list[str], counts: Mapping[tuple[str, ...], float],
             shown: Callable[..., list[str]] = lambda *key: list(key)) -> CounterMetricFamily:
    """A counter family of `counts` (label values -> count), in label order; `shown` turns a
    key into the label values exposed (outcome codes into names)."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(dict(counts).items()):
        family.add_metric(shown(*key), n)
    return family


class Endpoint:
    """A registry served over HTTP at /metrics (the node's own, or the merged one of
    serve --workers): `registry` is set by the subclass."""

    registry: CollectorRegistry
    _http: Any = None

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP on host:port (0 = a free port); returns the port."""
        try:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class Histogram:
    """A Prometheus histogram without locks: the node's event loop is its only writer."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le is inclusive
        self.total += value

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative (le, count) pairs ending with +Inf, and the sum."""
        counts, total = list(self.counts), self.total
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out, total


class MethodCalls:
    """One unary method's calls, counted by RpcMetrics: started, ended OK, ended with each other code
    (its upper-case name), and the time each took."""

    __slots__ = ("service", "method", "started", "ok", "failed", "seconds")

    def __init__(self, service: str, method: str, seconds: Histogram) -> None:
        self.service = service
        self.method = method
        self.started = 0
        self.ok = 0
        self.failed: dict[str, int] = {}
        self.seconds = seconds

    def fail(self, code: str) -> None:
        self.failed[code] = self.failed.get(code, 0) + 1

    def handled(self) -> dict[str, int]:
        """Calls ended, by upper-case code name (OK included); a copy, read at scrape."""
        ended = dict(self.failed)  # atomic under the GIL, as the other tables' copies
        ended["OK"] = self.ok
        return ended


class NodeMetrics(Endpoint):
    """Everything a node counts, and the collector that turns it into Prometheus families."""

    def __init__(self, version: str = __version__, max_campaigns: int = CAMPAIGN_LABELS) -> None:
        self.version = version
        self.max_campaigns = max_campaigns
        self._campaigns: set[str] = set()
        self.claims: dict[tuple[str, int], int] = {}          # (campaign label, Outcome number)
        self.drops: dict[tuple[str, str], int] = {}           # (campaign label, reason)
        self.redemptions: dict[tuple[str, int], int] = {}     # (campaign label, RedeemOutcome number)
        self.rpc_errors: dict[tuple[str, str], int] = {}      # (method, status code name): unknown methods
        self.calls: dict[str, MethodCalls] = {}               # full method name -> its calls (RpcMetrics)
        self.claim_seconds = {method: Histogram(LATENCY_BUCKETS) for method in TIMED_METHODS}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.round_trips = 0
        self.redis_up = 0
        # Sampled gauges, each replaced whole by the sampler.
        self.stock: dict[tuple[str, int], int] = {}
        self.granted: dict[str, int] = {}
        self.sold_out_seconds: dict[str, float] = {}
        self._slots: dict[str, int] = {}  # shard slots last seen per campaign (a reshard adds some)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        # process_cpu_seconds_total and the other process_* families (read from /proc at scrape
        # time): loadgen reads the front nodes' CPU-seconds from it; workers' are summed.
        ProcessCollector(registry=self.registry)

    # ------------------------------------------------------------------ counting (hot path)

    def campaign(self, campaign_id: str) -> str:
        """The campaign's label value: itself among the first max_campaigns, else "other"."""
        if campaign_id in self._campaigns:
            return campaign_id
        if len(self._campaigns) < self.max_campaigns:
            self._campaigns.add(campaign_id)
            return campaign_id
        return OTHER

    def claimed(self, campaign_id: str, outcome: int) -> None:
        counts = self.claims
        key = (campaign_id, outcome)
        n = counts.get(key)
        if n is None:
            key = (self.campaign(campaign_id), outcome)
            n = counts.get(key, 0)
        counts[key] = n + 1

    def dropped(self, campaign_id: str, reason: str) -> None:
        key = (self.campaign(campaign_id), reason)
        self.drops[key] = self.drops.get(key, 0) + 1

    def redeemed(self, campaign_id: str, outcome: int) -> None:
        key = (self.campaign(campaign_id), outcome)
        self.redemptions[key] = self.redemptions.get(key, 0) + 1

    def rpc_failed(self, method: str, code: str) -> None:
        """A call that no MethodCalls counts (a method the node does not have) ended with `code`."""
        key = (method, code)
        self.rpc_errors[key] = self.rpc_errors.get(key, 0) + 1

    def method_calls(self, full_method: str) -> MethodCalls:
        """The counts of a unary method ("/package.Service/Method"), made at its first wrapping.
        Claim and ClaimBatch share their histograms with claimcore_claim_seconds."""
        calls = self.calls.get(full_method)
        if calls is None:
            service, _, method = full_method[1:].rpartition("/")
            timed = self.claim_seconds.get(method) if service == CLAIM_SERVICE else None
            calls = MethodCalls(service, method, timed or Histogram(LATENCY_BUCKETS))
            self.calls[full_method] = calls
        return calls

    def flushed(self, sizes: list[int]) -> None:
        """One round trip of the batcher carrying claim.lua calls of these sizes."""
        self.round_trips += 1
        for size in sizes:
            self.batch_size.observe(size)

    # ------------------------------------------------------------------ scrape

    def collect(self) -> Iterator[Metric]:
        yield _counter(CLAIMS, "Claims answered, by campaign and outcome (unary calls and each item "
                       "of a batch)", ["campaign", "outcome"], self.claims,
                       lambda campaign, outcome: [campaign, CLAIM_OUTCOMES.get(outcome, "unknown")])
        seconds = HistogramMetricFamily(CLAIM_SECONDS, "Latency of Claim and ClaimBatch calls "
                                        "in the node, failed ones included", labels=["method"])
        for method, histogram in self.claim_seconds.items():
            buckets, total = histogram.buckets()
            seconds.add_metric([method], buckets, total)
        yield seconds
        yield _counter(ADMISSION_DROPS, "Claims refused before Redis: the campaign's admission rate, "
                       "the anti-scalper limits, or node overload", ["campaign", "reason"], self.drops)
        yield from self._sampled()
        yield CounterMetricFamily(ROUND_TRIPS, "Round trips of the claim batcher to "
                                  "Redis (one per flush)", value=self.round_trips)
        batch_buckets, batch_total = self.batch_size.buckets()
        batch = HistogramMetricFamily(BATCH_SIZE, "Claims per claim.lua call")
        batch.add_metric([], batch_buckets, batch_total)
        yield batch
        yield _counter(REDEMPTIONS, "Redeem calls answered, by campaign and outcome",
                       ["campaign", "outcome"], self.redemptions,
                       lambda campaign, outcome: [campaign, REDEEM_OUTCOMES.get(outcome, "unknown")])
        yield from self._grpc()
        yield GaugeMetricFamily(REDIS_UP, "1 while Redis answers the node's PING, else 0",
                                value=self.redis_up)
        info = GaugeMetricFamily(INFO, "The node's claimcore version", labels=["version"])
        info.add_metric([self.version], 1)
        yield info

    def _grpc(self) -> Iterator[Metric]:
        """The gRPC families and claimcore_rpc_errors_total, from the same MethodCalls. Each method's
        ended calls are read before its started ones, so a scrape never shows more ended than started."""
        started = CounterMetricFamily(GRPC_STARTED, "Total number of RPCs started on the server "
                                      "(unary calls)", labels=GRPC_LABELS)
        handled = CounterMetricFamily(GRPC_HANDLED, "Total number of RPCs completed on the server, "
                                      "regardless of success or failure (unary calls)",
                                      labels=[*GRPC_LABELS, "grpc_code"])
        seconds = HistogramMetricFamily(GRPC_SECONDS, "Histogram of response latency (seconds) of gRPC "
                                        "that had been application-level handled by the server",
                                        labels=GRPC_LABELS)
        errors = dict(self.rpc_errors)
        for _, calls in sorted(self.calls.items()):
            labels = [UNARY, calls.service, calls.method]
            ended = calls.handled()
            for code, n in sorted(ended.items()):
                handled.add_metric([*labels, GRPC_CODES.get(code, code)], n)
                if code != "OK":
                    errors[calls.method, code] = errors.get((calls.method, code), 0) + n
            started.add_metric(labels, calls.started)
            buckets, total = calls.seconds.buckets()
            seconds.add_metric(labels, buckets, total)
        yield started
        yield handled
        yield seconds
        yield _counter(RPC_ERRORS, "Calls that ended with a non-OK gRPC status, by method and status "
                       "code", ["method", "code"], errors)

    def _sampled(self) -> Iterator[Metric]:
        stock = GaugeMetricFamily(STOCK, "Vouchers left per shard (sampled every ~1 s)",
                                  labels=["campaign", "shard"])
        for (campaign, shard), n in sorted(self.stock.items()):
            stock.add_metric([campaign, str(shard)], n)
        yield stock
        granted = GaugeMetricFamily(GRANTED, "Vouchers granted (sampled every ~1 s)",
                                    labels=["campaign"])
        for campaign, n in sorted(self.granted.items()):
            granted.add_metric([campaign], n)
        yield granted
        sold_out = GaugeMetricFamily(SOLD_OUT, "Seconds from the campaign's start to "
                                     "its first sell-out; absent until it sells out", labels=["campaign"])
        for campaign, s in sorted(self.sold_out_seconds.items()):
            sold_out.add_metric([campaign], s)
        yield sold_out

    # ------------------------------------------------------------------ sampling

    async def sample(self, inventory: RedisInventory, configs: list[CampaignConfig]) -> None:
        """Read the stock, grants and sold-out time of these campaigns in one round trip."""
        configs = [c for c in configs if self.campaign(c.campaign_id) != OTHER]
        if not configs:
            self.stock, self.granted, self.sold_out_seconds = {}, {}, {}
            return
        plan = [(c, max(c.shard_slots, self._slots.get(c.campaign_id, 0))) for c in configs]
        stock: dict[tuple[str, int], int] = {}
        granted: dict[str, int] = {}
        sold_out: dict[str, float] = {}
        for (config, slots), seen in zip(plan, await inventory.gauges(plan), strict=True):
            cid = config.campaign_id
            if seen.slots > slots:
                self._slots[cid] = seen.slots  # resharded: read the new shards next time
            for s, left in enumerate(seen.stock):
                if left is not None or s < config.shards:
                    stock[(cid, s)] = left or 0
            granted[cid] = seen.granted
            if seen.sold_out_at_ms:
                start = config.starts_at_ms or seen.created_at_ms
                sold_out[cid] = max(0.0, (seen.sold_out_at_ms - start) / 1000)
        self.stock, self.granted, self.sold_out_seconds = stock, granted, sold_out

    async def sample_forever(self, inventory: RedisInventory, cached: Callable[[], list[CampaignConfig]],
                             every_s: float = 1.0) -> None:
        """Background task: sample the cached campaigns every `every_s` (Redis away: keep the last)."""
        while True:
            with contextlib.suppress(Exception):  # Redis away: redis_up says so, the watcher logs it
                await self.sample(inventory, cached())
            await asyncio.sleep(every_s)

    # ------------------------------------------------------------------ serving


class RpcMetrics:
    """The outermost layer of the call pipeline (pipeline.py): counts and times every unary call.

    Each unary method gets its MethodCalls when it is wrapped; a call then adds to `started`, to `ok`
    (or to its code in `failed`), and observes its time: two slot adds, one perf_counter pair and one
    histogram add. It wraps whatever the inner layers made of the handler (refusals of undecodable
    bytes and of unknown keys), so their statuses are counted too. Streaming methods (health Watch,
    WatchCampaigns, reflection) pass through uncounted; an unknown method is counted only in
    claimcore_rpc_errors_total, as method "unknown", code UNIMPLEMENTED (`unknown`: gRPC answers it
    without a handler, and its name, the caller's choice, is never a label).
    """

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def unknown(self, method: str) -> None:
        self.metrics.rpc_failed("unknown", "UNIMPLEMENTED")

    def __call__(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None:
            return handler
        calls = self.metrics.method_calls(full_method)
        behaviour, observe, fail, clock = handler.unary_unary, calls.seconds.observe, calls.fail, \
            time.perf_counter
        ok_code, status_code = grpc.StatusCode.OK, grpc.StatusCode

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            calls.started += 1
            started = clock()
            try:
                reply = await behaviour(request, context)
            except asyncio.CancelledError:  # the caller's deadline passed, or it cancelled
                remaining = context.time_remaining()
                fail("DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED")
                raise
            except BaseException:
                code = context.code()
                fail(code.name if isinstance(code, status_code) and code is not ok_code else "UNKNOWN")
                raise
            else:
                code = context.code()  # None unless the handler set one
                if code is None or code is ok_code:
                    calls.ok += 1
                else:
                    fail(code.name if isinstance(code, status_code) else "UNKNOWN")
                return reply
            finally:
                observe(clock() - started)

        return rewrapped(handler, unary_unary)


def _add(a: float, b: float) -> float:
    return a + b


# How workers' gauges merge (they sample the same Redis about once a second, so they differ only by lag):
# Redis is up if every worker reaches it; stock left is the latest (lowest) sample; the workers'
# memory and open fds add up, and the node started when its first worker did; anything else
# (granted, sold-out seconds, info, the fd limit) the highest.
GAUGE_MERGE: dict[str, Callable[[float, float], float]] = {
    REDIS_UP: min, STOCK: min, PROCESS_MEMORY: _add, "process_virtual_memory_bytes": _add,
    "process_open_fds": _add, "process_start_time_seconds": min}
SCRAPE_TIMEOUT_S = 2.0


def merge_families(scrapes: list[list[Metric]]) -> list[Metric]:
    """Several processes' families as one: counters and histograms summed, gauges by GAUGE_MERGE."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in scrapes:
        for family in families:
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            table = values[family.name]
            combine = GAUGE_MERGE.get(family.name, max) if family.type == "gauge" else _add
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                table[key] = combine(table[key], sample.value) if key in table else sample.value
    for name, family in merged.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(merged.values())


class WorkersMetrics(Endpoint):
    """The one /metrics of `serve --workers N`: every worker's /metrics, merged (merge_families)."""

    def __init__(self, workers: list[tuple[int, str]]) -> None:
        """workers: each worker's pid and the URL of its own /metrics (loopback), by index."""
        self.workers = workers
        self._last: dict[int, list[Metric]] = {}  # each worker's last scrape that answered
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def scrape(self, url: str) -> list[Metric]:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as reply:  # noqa: S310 - our own http URL
            return list(text_string_to_metric_families(reply.read().decode()))

    def collect(self) -> Iterator[Metric]:
        scrapes: list[list[Metric]] = []
        claims = CounterMetricFamily(WORKER_CLAIMS, "Claims answered by each worker process "
                                     "(serve --workers): how evenly the connections spread",
                                     labels=["worker"])
        info = GaugeMetricFamily(WORKER_INFO, "One per worker process that answered this scrape "
                                 "(one that did not counts with its last figures)",
                                 labels=["worker", "pid"])
        cpu = CounterMetricFamily(WORKER_CPU, "CPU seconds of each worker process (serve --workers); "
                                  "process_cpu_seconds_total adds them up", labels=["worker"])
        memory = GaugeMetricFamily(WORKER_MEMORY, "Resident memory of each worker process (serve "
                                   "--workers); process_resident_memory_bytes adds them up",
                                   labels=["worker"])
        for index, (pid, url) in enumerate(self.workers):
            try:
                families = self._last[index] = self.scrape(url)
                info.add_metric([str(index), str(pid)], 1)
            except OSError:  # slow or gone (then the parent is stopping the others; workers.py)
                families = self._last.get(index, [])  # its last figures: a sum must not go down
            scrapes.append(families)
            own = {f.name: sum(s.value for s in f.samples) for f in families
                   if f.name in (CLAIMS, PROCESS_CPU, PROCESS_MEMORY)}
            claims.add_metric([str(index)], own.get(CLAIMS, 0))
            if PROCESS_CPU in own:
                cpu.add_metric([str(index)], own[PROCESS_CPU])
            if PROCESS_MEMORY in own:
                memory.add_metric([str(index)], own[PROCESS_MEMORY])
        yield from merge_families(scrapes)
        yield claims
        yield info
        yield cpu
        yield memory

