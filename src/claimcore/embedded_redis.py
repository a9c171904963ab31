"""Start and stop private redis-servers on free loopback ports.

EmbeddedRedis is one server: used by `claimcore serve` when no --redis is
given, by `claimcore demo`, and by the tests (which must talk to a real
redis-server, never an imitation). EmbeddedCluster is a real Redis Cluster of
several such servers, for the cluster tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class RedisServerMissing(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_child(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send sig, then SIGKILL if the child outlives `timeout`; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def find_redis_server() -> str:
    path = os.environ.get("CLAIMCORE_REDIS_SERVER") or shutil.which("redis-server")
    if not path:
        for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
            if os.path.exists(candidate):
                return candidate
        raise RedisServerMissing(
            "redis-server not found: run `make setup` (installs the redis-server package) "
            "or pass --redis URL of a running Redis"
        )
    return path


class EmbeddedRedis:
    """A redis-server child process with its own data folder.

    appendfsync: 'everysec' (default) or 'always'; see docs/architecture.md for
    what each loses. Use as a context manager or call start()/stop().
    """

    def __init__(
        self,
        port: int | None = None,
        appendfsync: str = "everysec",
        data_dir: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="claimcore-redis-")
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.data_dir,
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(Path(self.data_dir) / "redis.log"),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    raise RuntimeError(f"redis-server exited at start: {err.strip()}")
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """kill -9, as a crash would; the data folder stays for a restart."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc:
            stop_child(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class EmbeddedCluster:
    """A Redis Cluster of `masters` private redis-servers, slots split evenly.

    Built with CLUSTER ADDSLOTSRANGE and CLUSTER MEET, as redis-cli --cluster
    create would; each node gets an explicit bus port (port + 10000 may not exist).
    """

    def __init__(self, masters: int = 3, appendfsync: str = "everysec") -> None:
        self.nodes = [EmbeddedRedis(appendfsync=appendfsync) for _ in range(masters)]
        self.bus_ports = [free_port() for _ in range(masters)]
        for node, bus_port in zip(self.nodes, self.bus_ports, strict=True):
            node.extra_args = ["--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                               "--cluster-config-file", str(Path(node.data_dir) / "nodes.conf"),
                               "--cluster-node-timeout", "2000"]

    @property
    def addresses(self) -> str:
        """host:port,host:port,... as `claimcore serve --redis-cluster` takes it."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 20.0) -> EmbeddedCluster:
        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=node.port, decode_responses=True) for node in self.nodes]
        try:
            step = 16384 // len(self.nodes)
            for i, client in enumerate(clients):
                last = 16383 if i == len(clients) - 1 else (i + 1) * step - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
            for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
            deadline = time.monotonic() + timeout
            while not all(c.cluster("info")["cluster_state"] == "ok" and
                          len(c.cluster("nodes")) == len(self.nodes) for c in clients):
                if time.monotonic() > deadline:
                    raise TimeoutError("redis cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.cleanup()
            raise
        finally:
            for client in clients:
                client.close()
        return self

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
