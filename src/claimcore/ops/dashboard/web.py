"""The dashboard's page and its feed: a small asyncio HTTP server (stdlib streams, on uvloop).

    /           the page (page.html: inline CSS and JS, no external assets)
    /events     server-sent events: one JSON snapshot every --every-s
    /snapshot   the latest snapshot once, for scripts and tests
    /healthz    "ok", for a load balancer or a probe

The snapshots come from collector.py; `serve` runs both until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from claimcore.ops.dashboard.collector import Collector


class Hub:
    """The latest snapshot, and a wake-up for every /events stream when a new one is out."""

    def __init__(self) -> None:
        self.body = b""
        self.version = 0
        self.changed = asyncio.Condition()

    async def publish(self, snapshot: dict[str, Any]) -> None:
        self.body = json.dumps(snapshot, separators=(",", ":"), allow_nan=False).encode()
        async with self.changed:
            self.version += 1
            self.changed.notify_all()

    async def wait_newer(self, version: int, timeout: float) -> bool:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.version > version), timeout)
            except TimeoutError:
                return False
        return True


def page() -> bytes:
    return resources.files(__package__).joinpath("page.html").read_bytes()


def _head(status: str, ctype: str, length: int | None = None, extra: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}", "Cache-Control: no-store",
             "X-Content-Type-Options: nosniff"]
    if length is not None:
        lines += [f"Content-Length: {length}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


class Dashboard:
    def __init__(self, collector: Collector, every_s: float) -> None:
        self.collector = collector
        self.every_s = every_s
        self.hub = Hub()
        self.page = page()
        self.streams = 0

    async def collect_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                snap = await self.collector.tick()
                await self.hub.publish(snap)
            except Exception as exc:  # noqa: BLE001 - the screen must keep going; the error is shown
                print(f"claimcore dashboard: collecting failed: {exc!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(max(0.0, self.every_s - (time.monotonic() - started)))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            for _ in range(100):  # headers: read and ignore
                line = await asyncio.wait_for(reader.readline(), 10)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request.decode("latin-1").split()
            if len(parts) < 2:
                return
            method, path = parts[0], urlsplit(parts[1]).path
            if method not in ("GET", "HEAD"):
                await self._send(writer, "405 Method Not Allowed", "text/plain", b"GET only\n", method)
            elif path == "/":
                await self._send(writer, "200 OK", "text/html; charset=utf-8", self.page, method)
            elif path == "/snapshot":
                if not self.hub.version:
                    await self.hub.wait_newer(0, 30)
                await self._send(writer, "200 OK", "application/json", self.hub.body or b"{}", method)
            elif path == "/events" and method == "GET":
                await self._stream(writer)
            elif path == "/healthz":
                await self._send(writer, "200 OK", "text/plain", b"ok\n", method)
            else:
                await self._send(writer, "404 Not Found", "text/plain", b"not found\n", method)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, status: str, ctype: str, body: bytes,
                    method: str) -> None:
        writer.write(_head(status, ctype, len(body)) + (body if method != "HEAD" else b""))
        await asyncio.wait_for(writer.drain(), 10)

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        """Server-sent events: every new snapshot as one `data:` line; a comment every 15 s otherwise."""
        self.streams += 1
        try:
            extra = "Connection: keep-alive\r\nX-Accel-Buffering: no\r\n"  # nginx: do not buffer the stream
            writer.write(_head("200 OK", "text/event-stream", extra=extra) + b"retry: 1000\n\n")
            version = 0
            while True:
                if self.hub.version > version:
                    version = self.hub.version
                    writer.write(b"data: " + self.hub.body + b"\n\n")
                else:
                    writer.write(b": keep-alive\n\n")
                await asyncio.wait_for(writer.drain(), 10)  # a client that stopped reading is let go
                await self.hub.wait_newer(version, 15)
        finally:
            self.streams -= 1


async def serve(collector: Collector, host: str, port: int) -> int:
    """Collect every collector.every_s and serve the page on host:port until SIGINT or SIGTERM: 0 then,
    2 if host:port cannot be served on."""
    collector.open()
    dash = Dashboard(collector, collector.every_s)
    try:
        server = await asyncio.start_server(dash.handle, host, port, reuse_address=True)
    except OSError as exc:
        print(f"claimcore dashboard: cannot serve on {host}:{port}: {exc}", file=sys.stderr)
        await collector.close()
        return 2
    bound = server.sockets[0].getsockname()[1]
    shown = host if ":" not in host else f"[{host}]"
    targets, urls = collector.targets, collector.metrics_urls
    print(f"claimcore dashboard: http://{shown}:{bound}/ watching {', '.join(targets)}"
          f"{' with metrics from ' + ', '.join(urls) if urls else ' (no --metrics)'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    collecting = asyncio.create_task(dash.collect_forever())
    try:
        async with server:
            await stop.wait()
    finally:
        collecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collecting
        await collector.close()
    return 0
