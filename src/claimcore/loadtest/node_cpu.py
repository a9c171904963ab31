"""The front nodes' CPU-seconds over a run, read from their own /metrics.

A node serves prometheus_client's `process_cpu_seconds_total` (ProcessCollector, in
claimcore.node.metrics; under `serve --workers N` the parent's /metrics sums the workers').
loadgen and the demo read it on every node before and after the load, so the report gives
what the run cost the front tier, measured where it was spent, not guessed from the client.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

CPU_SAMPLE = "process_cpu_seconds_total"
TIMEOUT_S = 5.0


class NodeCpuError(RuntimeError):
    """A node's /metrics did not answer, or has no process_cpu_seconds_total."""


def parse_metrics_urls(text: str) -> list[str]:
    """'host:port,http://host:port/metrics' -> full /metrics URLs; raises ValueError on a bad one."""
    urls = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        url = entry if "://" in entry else f"http://{entry}"
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise ValueError(f"--node-metrics {entry!r} is not HOST:PORT or an http(s) URL with a port")
        urls.append(url if parts.path not in ("", "/") else urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, "/metrics", parts.query, "")))
    if not urls:
        raise ValueError("--node-metrics needs at least one HOST:PORT or URL")
    return urls


def read_cpu_seconds(url: str) -> float:
    """The node's process_cpu_seconds_total now."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:  # noqa: S310 - an operator's URL
            text = reply.read().decode()
    except OSError as exc:
        raise NodeCpuError(f"cannot read {url}: {exc}") from None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == CPU_SAMPLE:
                return float(sample.value)
    raise NodeCpuError(f"{url} has no {CPU_SAMPLE}")


class CpuMeter:
    """The CPU counters of several nodes, read once before a run and once after it."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self.before: list[float] = []

    def start(self) -> CpuMeter:
        self.before = [read_cpu_seconds(url) for url in self.urls]
        return self

    def stop(self) -> dict[str, Any]:
        """What report.front_cpu_figures takes: each node's counter before and after."""
        after = [read_cpu_seconds(url) for url in self.urls]
        return {"nodes": [{"url": url, "before": b, "after": a}
                          for url, b, a in zip(self.urls, self.before, after, strict=True)]}
