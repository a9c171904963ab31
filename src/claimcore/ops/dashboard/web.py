"""The dashboard's page and its feed, served with aiohttp (on uvloop, next to the collector).

    /           the page (page.html: inline CSS and JS, no external assets), with the latest snapshot
                embedded, so a page opened mid-burst shows figures at once
    /events     server-sent events: the latest snapshot at once, then each new one (every --every-s)
    /snapshot   the latest snapshot once, for scripts and tests
    /healthz    "ok", for a load balancer or a probe

`make_app` builds the application around a Collector (the tests run it in-process); `serve` runs it
and the collector until SIGINT or SIGTERM.
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

from aiohttp import web

from claimcore.ops.dashboard.collector import Collector

FIRST_SNAPSHOT_WAIT_S = 30.0  # /snapshot and the page wait this long for the very first snapshot
KEEP_ALIVE_S = 15.0  # a comment on an idle event stream, so proxies keep it open
SHUTDOWN_S = 2.0
#: Where page.html takes the snapshot it is served with.
EMBED = b'<script id="first-snapshot" type="application/json">null</script>'
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class Hub:
    """The latest snapshot, and a wake-up for every /events stream when a new one is out (or at close)."""

    def __init__(self) -> None:
        self.body = b""
        self.version = 0
        self.closed = False
        self.changed = asyncio.Condition()

    async def publish(self, snapshot: dict[str, Any]) -> None:
        self.body = json.dumps(snapshot, separators=(",", ":"), allow_nan=False).encode()
        async with self.changed:
            self.version += 1
            self.changed.notify_all()

    async def close(self) -> None:
        async with self.changed:
            self.closed = True
            self.changed.notify_all()

    async def wait_newer(self, version: int, timeout: float) -> bool:
        async with self.changed:
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: self.version > version or self.closed), timeout)
            except TimeoutError:
                return False
        return self.version > version


def page() -> bytes:
    return resources.files(__package__).joinpath("page.html").read_bytes()


class Dashboard:
    """The collector's loop and the page's routes, sharing one Hub."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.every_s = collector.every_s
        self.hub = Hub()
        self.page = page()
        assert EMBED in self.page, "page.html lost its first-snapshot script"
        self.streams = 0
        self.collecting: asyncio.Task[None] | None = None

    async def collect_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                snap = await self.collector.tick()
                await self.hub.publish(snap)
            except Exception as exc:  # noqa: BLE001 - the screen must keep going; the error is shown
                print(f"claimcore dashboard: collecting failed: {exc!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(max(0.0, self.every_s - (time.monotonic() - started)))

    async def _latest(self) -> bytes:
        if not self.hub.version:
            await self.hub.wait_newer(0, FIRST_SNAPSHOT_WAIT_S)
        return self.hub.body

    async def index(self, request: web.Request) -> web.Response:
        """The page with the latest snapshot in it (every "<" written \\u003c: JSON inside a script element
        cannot end it or open a comment)."""
        body = (await self._latest()) or b"null"
        embedded = EMBED.replace(b">null<", b">" + body.replace(b"<", b"\\u003c") + b"<")
        return web.Response(body=self.page.replace(EMBED, embedded), content_type="text/html",
                            charset="utf-8", headers=HEADERS)

    async def snapshot(self, request: web.Request) -> web.Response:
        return web.Response(body=(await self._latest()) or b"{}", content_type="application/json",
                            headers=HEADERS)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers=HEADERS)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the latest snapshot at once, then every new one as one `data:` line; a
        comment every KEEP_ALIVE_S otherwise. Ends when the client goes or the server stops."""
        response = web.StreamResponse(headers={
            **HEADERS, "Content-Type": "text/event-stream",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        })
        await response.prepare(request)
        self.streams += 1
        try:
            await response.write(b"retry: 1000\n\n")
            version = 0
            while not self.hub.closed:
                if self.hub.version > version:
                    version = self.hub.version
                    await response.write(b"data: " + self.hub.body + b"\n\n")
                else:
                    await response.write(b": keep-alive\n\n")
                await self.hub.wait_newer(version, KEEP_ALIVE_S)
        except ConnectionError:
            pass  # the page was closed
        finally:
            self.streams -= 1
        return response

    async def _start_collecting(self, app: web.Application) -> None:
        self.collector.open()
        self.collecting = asyncio.create_task(self.collect_forever())

    async def _stop_streams(self, app: web.Application) -> None:
        await self.hub.close()

    async def _stop_collecting(self, app: web.Application) -> None:
        if self.collecting is not None:
            self.collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.collecting
        await self.collector.close()


DASHBOARD = web.AppKey("dashboard", Dashboard)  # app[DASHBOARD]: its Dashboard (the tests reach the Hub)


def make_app(collector: Collector) -> web.Application:
    """The aiohttp application: the routes above, the collector started and stopped with it. GET routes
    answer HEAD too; other methods get 405."""
    dash = Dashboard(collector)
    app = web.Application()
    app[DASHBOARD] = dash
    app.router.add_get("/", dash.index)
    app.router.add_get("/events", dash.events, allow_head=False)
    app.router.add_get("/snapshot", dash.snapshot)
    app.router.add_get("/healthz", dash.healthz)
    app.on_startup.append(dash._start_collecting)
    app.on_shutdown.append(dash._stop_streams)
    app.on_cleanup.append(dash._stop_collecting)
    return app


async def start(collector: Collector, host: str, port: int) -> tuple[web.AppRunner, int]:
    """The app served on host:port; the runner (to clean up) and the port bound. OSError if it cannot."""
    runner = web.AppRunner(make_app(collector), access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


async def serve(collector: Collector, host: str, port: int) -> int:
    """Collect every collector.every_s and serve the page on host:port until SIGINT or SIGTERM: 0 then,
    2 if host:port cannot be served on."""
    try:
        runner, bound = await start(collector, host, port)
    except OSError as exc:
        print(f"claimcore dashboard: cannot serve on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    shown = host if ":" not in host else f"[{host}]"
    targets, urls = collector.targets, collector.metrics_urls
    print(f"claimcore dashboard: http://{shown}:{bound}/ watching {', '.join(targets)}"
          f"{' with metrics from ' + ', '.join(urls) if urls else ' (no --metrics)'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
