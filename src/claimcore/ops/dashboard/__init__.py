"""`claimcore dashboard`: a launch as it happens, on a big screen (docs/dashboard.md).

This module is the command: its flags, their checks, and `run`. collector.py asks the nodes for each
snapshot (AdminService figures, gRPC health, and with --metrics their Prometheus endpoints, read by
prometheus.py); web.py serves the page (page.html), the snapshots as server-sent events, and /snapshot,
with aiohttp.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

from claimcore.security import access

DEFAULT_TARGET = "127.0.0.1:50051"


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The dashboard's flags, with --api-key and --tls-* (claimcore.security.access); sets func=run."""
    src = parser.add_argument_group("what to watch")
    src.add_argument("--target", default=DEFAULT_TARGET, metavar="HOST:PORT[,HOST:PORT...]",
                     help=f"front nodes to ask (figures from the first that answers; health of each); "
                          f"default {DEFAULT_TARGET}")
    src.add_argument("--metrics", default="", metavar="URL[,URL...]",
                     help="the nodes' Prometheus endpoints (http://host:port/metrics, or host:port): "
                          "adds latency percentiles, the outcome mix and the rejection reasons")
    src.add_argument("--campaign", action="append", default=[], metavar="ID",
                     help="a campaign to show (repeat, or comma-separated); default: every campaign")
    src.add_argument("--max-campaigns", type=int, default=24, metavar="N",
                     help="without --campaign, show at most the first N in launch order (default 24)")
    web = parser.add_argument_group("the page")
    web.add_argument("--host", default="127.0.0.1", help="address to serve the page on (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8080, help="port of the page (default 8080; 0 = a free one)")
    web.add_argument("--every-s", type=float, default=0.5, metavar="S",
                     help="seconds between snapshots (default 0.5)")
    access.add_arguments(parser)
    parser.set_defaults(func=run)


def metrics_url(text: str) -> str:
    """`host:port` means http://host:port/metrics."""
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a metrics URL: {text!r}")
    return text if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}/metrics"


def check_arguments(args: argparse.Namespace) -> list[str]:
    problems = []
    if not _csv(args.target):
        problems.append("--target needs at least one HOST:PORT")
    if not (0.05 <= args.every_s <= 60):
        problems.append("--every-s must be between 0.05 and 60")
    if not (0 <= args.port <= 65535):
        problems.append("--port must be 0..65535")
    if args.max_campaigns < 1:
        problems.append("--max-campaigns must be at least 1")
    for url in _csv(args.metrics):
        try:
            metrics_url(url)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def run(args: argparse.Namespace) -> int:
    """`claimcore dashboard`: serve until SIGINT or SIGTERM. 0 when stopped, 2 for bad flags."""
    problems = check_arguments(args)
    try:
        reach = access.from_args(args)
        reach.check()
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        for p in problems:
            print(f"claimcore dashboard: {p}", file=sys.stderr)
        return 2
    import uvloop  # imported here: building the CLI's parser need not load the collector and the node

    from claimcore.ops.dashboard.collector import Collector
    from claimcore.ops.dashboard.web import serve

    collector = Collector(_csv(args.target), [metrics_url(u) for u in _csv(args.metrics)],
                          [c for item in args.campaign for c in _csv(item)], reach, args.every_s,
                          args.max_campaigns)
    return uvloop.run(serve(collector, args.host, args.port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="claimcore dashboard", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
