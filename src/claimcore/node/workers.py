"""`claimcore serve --workers N`: N front processes on one port, and the parent that runs them.

A Python node uses one core (one event loop, one GIL). To use a machine's
cores, N worker processes each run a whole node (server.py's Node) bound to
the same host:port with SO_REUSEPORT; the kernel hands each new TCP connection
to one of them (connections, not calls: a client spreads its calls by opening
several connections, ClaimClient(connections_per_node=N)). They share one
Redis, so stock, holds and idempotency are Redis's as with several nodes.

The parent (the process `claimcore serve` started) checks the port is free (or
picks one for --port 0), starts the workers, prints the usual start line once,
serves the one merged /metrics (metrics.py's WorkersMetrics), forwards SIGTERM
and SIGINT to every worker (each drains: NOT_SERVING, new calls refused, the
grace), and waits for them. A worker that dies on its own stops the rest: the
parent exits 1 with one line, and does not respawn.

Workers are multiprocessing "spawn" children, not re-run command lines: the
parent has already checked the flags and loaded the files into a NodeOptions,
which the child receives pickled, so there is no second command line to
rebuild; spawn starts a fresh interpreter (gRPC does not survive fork). Each
worker leaves the terminal's process group, so a Ctrl-C reaches the parent
only, which drains the workers in order, and it drains by itself if the parent
disappears (checked every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection, wait
from types import FrameType

from claimcore.node import logs
from claimcore.node.metrics import WorkersMetrics
from claimcore.node.server import Node, NodeOptions, drain_on_signal, server_tls

log = logging.getLogger("claimcore.node.workers")

START_TIMEOUT_S = 60.0   # every worker listens within this, or the parent gives up
STOP_MARGIN_S = 10.0     # past a worker's grace, the parent kills it
INTERNAL_HOST = "127.0.0.1"  # where each worker's own /metrics listens, for the parent only


def claim_port(host: str, port: int) -> int:
    """Check host:port is free (0: pick a free one) by binding it alone; returns the port.

    The workers bind with SO_REUSEPORT, which would share a port another process of this
    user already serves; this bind without it refuses that case. The probe is closed before
    the workers bind (a short race, as with any port picked in advance).
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            bare or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is fine
            probe.bind(address)
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run_workers(options: NodeOptions, count: int) -> int:
    """Run `count` workers of `options` on one port until signalled; the exit code (docs/cli.md)."""
    server_tls(options)  # unreadable TLS files: one error here, not one per worker
    port = claim_port(options.host, options.port)
    metered = options.metrics_port >= 0
    worker_options = dataclasses.replace(options, port=port, reuse_port=True,
                                         metrics_port=0 if metered else -1, metrics_host=INTERNAL_HOST)
    root = logging.getLogger()
    log_format = "json" if any(isinstance(h.formatter, logs.JsonFormatter) for h in root.handlers) else "text"
    parent = Workers(worker_options, count, log_format, root.getEffectiveLevel())
    with parent.signals_forwarded():
        try:
            parent.start()
        except WorkerFailed as exc:
            print(f"claimcore serve: {exc}", file=sys.stderr, flush=True)
            parent.stop()
            return 1
        merged = None
        if not parent.stopping:
            print(f"claimcore: serving on {options.host}:{port}", flush=True)
            print(f"claimcore: {count} workers, pids {' '.join(str(p) for p in parent.pids)}", flush=True)
            if metered:
                merged = WorkersMetrics([(pid, f"http://{INTERNAL_HOST}:{mp}/metrics")
                                         for pid, mp in zip(parent.pids, parent.metrics_ports, strict=True)])
                try:
                    merged_port = merged.serve(options.host, options.metrics_port)
                except OSError as exc:
                    print(f"claimcore serve: {exc}", file=sys.stderr, flush=True)
                    parent.stop()
                    return 1
                print(f"claimcore: metrics on http://{options.host}:{merged_port}/metrics", flush=True)
        try:
            died = parent.watch()
        finally:
            if merged is not None:
                merged.close()
    if died:
        print(f"claimcore serve: {died}; stopped the other workers", file=sys.stderr, flush=True)
        return 1
    return 0 if all(code == 0 for code in parent.exit_codes()) else 1


class WorkerFailed(Exception):
    """A worker did not start: its own error, or how it ended."""


class Workers:
    """The parent's side: the worker processes, their pipes, and the stop."""

    def __init__(self, options: NodeOptions, count: int, log_format: str, log_level: int) -> None:
        self.options = options
        self.count = count
        self.log_format = log_format
        self.log_level = log_level
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.pids: list[int] = []
        self.metrics_ports: list[int] = []
        self.stopping = False

    @contextlib.contextmanager
    def signals_forwarded(self):  # type: ignore[no-untyped-def]
        """While inside: SIGTERM and SIGINT make every worker drain. After: ignored, as in run_node,
        so a second signal cannot cut the clean-up short (an embedded redis-server would be orphaned)."""
        def forward(signum: int, frame: FrameType | None) -> None:
            if not self.stopping:
                log.info("signal %d: draining %d workers", signum, len(self.processes))
            self.stop_all()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)

    def start(self) -> None:
        """Start every worker and wait until each listens; WorkerFailed if one does not."""
        context = multiprocessing.get_context("spawn")
        pipes: list[Connection] = []
        for index in range(self.count):
            if self.stopping:
                return
            ours, theirs = context.Pipe(duplex=False)
            process = context.Process(target=worker_main, name=f"claimcore-worker-{index}", args=(
                index, self.options, theirs, self.log_format, self.log_level, os.getpid()))
            process.start()
            theirs.close()
            self.processes.append(process)
            pipes.append(ours)
        if self.stopping:  # a signal came while they were starting: they drain as they come up
            self.stop_all()
        deadline = time.monotonic() + START_TIMEOUT_S
        ready: dict[int, tuple[int, int]] = {}
        waiting = dict(enumerate(pipes))
        while waiting and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFailed(f"worker {min(waiting)} did not listen within {START_TIMEOUT_S:.0f} s")
            for pipe in wait(list(waiting.values()), timeout=min(left, 0.5)):
                index = next(i for i, p in waiting.items() if p is pipe)
                try:
                    kind, *rest = pipe.recv()
                except EOFError:  # exited without a word: it died starting
                    self.processes[index].join(1.0)
                    raise WorkerFailed(f"worker {index} exited with code "
                                       f"{self.processes[index].exitcode} while starting") from None
                if kind != "ready":
                    raise WorkerFailed(f"worker {index}: {rest[0]}")
                ready[index] = (rest[0], rest[1])
                del waiting[index]
                pipe.close()
        self.pids = [ready[i][0] if i in ready else self.processes[i].pid or 0 for i in range(self.count)]
        self.metrics_ports = [ready[i][1] if i in ready else -1 for i in range(self.count)]

    def watch(self) -> str:
        """Wait until every worker has exited; "" after a stop, else which worker died on its own.

        Once stopping, a worker still running past its grace and STOP_MARGIN_S is killed.
        """
        running = {p.sentinel: i for i, p in enumerate(self.processes)}
        died = ""
        kill_at: float | None = None
        while running:
            for sentinel in wait(list(running), timeout=0.5):
                index = running.pop(sentinel)
                process = self.processes[index]
                process.join()
                if not self.stopping:
                    died = f"worker {index} (pid {process.pid}) exited with code {process.exitcode}"
                    self.stop_all()
            if self.stopping and kill_at is None:
                kill_at = time.monotonic() + self.options.grace_s + STOP_MARGIN_S
            if kill_at is not None and time.monotonic() > kill_at:
                for index in running.values():
                    log.warning("worker %d did not drain in time: killed", index)
                    self.processes[index].kill()
                kill_at = float("inf")  # the kills end them; wait() sees it
        return died

    def stop_all(self) -> None:
        """Ask every worker still running to drain (SIGTERM)."""
        self.stopping = True
        for process in self.processes:
            if process.exitcode is None and process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def stop(self) -> None:
        """Drain every worker and wait for them: SIGKILL past their grace and a margin."""
        self.stop_all()
        deadline = time.monotonic() + self.options.grace_s + STOP_MARGIN_S
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()

    def exit_codes(self) -> list[int | None]:
        return [p.exitcode for p in self.processes]


# ---------------------------------------------------------------------- the worker's side


def worker_main(index: int, options: NodeOptions, pipe: Connection, log_format: str, log_level: int,
                parent_pid: int) -> None:
    """A worker process: one node on the shared port, until SIGTERM or the parent's end."""
    os.setpgid(0, 0)  # out of the terminal's group: Ctrl-C goes to the parent, which stops us in order
    logs.configure(log_format, log_level)
    import uvloop  # here: the parent does not run an event loop

    try:
        uvloop.run(_serve(index, options, pipe, parent_pid))
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            pipe.send(("failed", str(exc)))
        sys.exit(1)


async def _serve(index: int, options: NodeOptions, pipe: Connection, parent_pid: int) -> None:
    node = Node(options)
    await node.start()
    log.info("worker %d (pid %d) listening on %s:%d", index, os.getpid(), options.host, node.port)
    pipe.send(("ready", os.getpid(), node.metrics_port))
    pipe.close()
    stop = asyncio.Event()
    orphaned = asyncio.create_task(_until_parent_gone(parent_pid, stop))
    try:
        await drain_on_signal(node, stop)
    finally:
        orphaned.cancel()


async def _until_parent_gone(parent_pid: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    log.warning("the parent process is gone: draining")
    stop.set()
