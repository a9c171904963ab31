"""Start and stop private redis-servers on free loopback ports.

EmbeddedRedis is one server: used by `claimcore serve` when no --redis is
given (its data kept in a data folder, or a throwaway one with --ephemeral),
by `claimcore demo`, and by the tests (which must talk to a real redis-server,
never an imitation). EmbeddedCluster is a real Redis Cluster of several such
servers, for the cluster tests.

A data folder is locked (flock on its claimcore.lock) while a server runs on
it, so two servers never append to the same AOF. The redis-server inherits the
lock, so it holds even when the process that started it was killed and left
the server running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class RedisServerMissing(RuntimeError):
    pass


class DataDirInUse(RuntimeError):
    """Another redis-server runs on this data folder (its lock is held).

    redis_pid, port and starter_pid say which, when the lock file names them (else 0);
    starter_alive is False when the process that started that server is gone."""

    def __init__(self, message: str, redis_pid: int = 0, port: int = 0, starter_pid: int = 0,
                 starter_alive: bool = True) -> None:
        super().__init__(message)
        self.redis_pid, self.port, self.starter_pid = redis_pid, port, starter_pid
        self.starter_alive = starter_alive


LOCK_FILE = "claimcore.lock"  # in the data folder: flock'd, holds "starter pid, redis-server pid, port"


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    return True


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
    data_dir: a folder to keep (created if missing; the AOF in it is loaded at
    start, and cleanup() leaves it); without it, a fresh temporary folder that
    cleanup() removes. start() raises DataDirInUse if another server runs on it.
    own_process_group: start the server out of the caller's process group, so a
    Ctrl-C in the terminal reaches the caller only, which stops the server after
    its own drain (`claimcore serve`); the tests leave it in theirs.
    """

    def __init__(
        self,
        port: int | None = None,
        appendfsync: str = "everysec",
        data_dir: str | None = None,
        extra_args: list[str] | None = None,
        own_process_group: bool = False,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="claimcore-redis-")
        self.extra_args = extra_args or []
        self.own_process_group = own_process_group
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None  # held from start() to stop(); kept over kill() for a restart

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return Path(self.data_dir) / "redis.log"

    def _lock(self) -> None:
        """Take the data folder's lock, or raise DataDirInUse naming who holds it."""
        if self._lock_fd is not None:  # ours still (a restart after kill())
            return
        Path(self.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(Path(self.data_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            if not (len(holder) == 3 and all(part.isdigit() for part in holder)):
                raise DataDirInUse(f"data folder {self.data_dir} is in use by another process") from None
            starter, server, port = (int(part) for part in holder)
            alive = _pid_alive(starter)
            by = f"started by pid {starter}" if alive else f"left running by pid {starter}, which is gone"
            raise DataDirInUse(f"data folder {self.data_dir} is in use by redis-server pid {server} "
                               f"on port {port}, {by}", server, port, starter, alive) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _note_holder(self) -> None:
        """Write who holds the lock into the lock file, for the message another starter gets."""
        if self._lock_fd is not None and self.proc is not None:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{os.getpid()} {self.proc.pid} {self.port}\n".encode(), 0)

    def _last_log_line(self) -> str:
        with contextlib.suppress(OSError):
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
            if lines:  # "pid:role date time # text": the text only
                return re.sub(r"^\d+:[A-Z] .*? [.*#-] ", "", lines[-1].strip())
        return ""

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self._lock()
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> EmbeddedRedis:
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
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]
        # The server inherits the lock: it stays held while the server runs, whoever started it.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     pass_fds=(self._lock_fd,) if self._lock_fd is not None else (),
                                     process_group=0 if self.own_process_group else None)
        self._note_holder()
        deadline = time.monotonic() + timeout
        # No retries inside ping(): redis-py's default backs off for seconds on a refused connection.
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
        try:
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    err = err.strip() or f"{self._last_log_line()} (its log: {self.log_path})"
                    raise RuntimeError(f"redis-server exited at start: {err}")
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
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
        """Stop the server (SIGTERM: it flushes its AOF) and release the data folder."""
        if self.proc:
            stop_child(self.proc)
        self.proc = None
        self._unlock()

    def key_count(self) -> int:
        """DBSIZE: the keys the running server holds (those loaded from its AOF, just after start)."""
        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            return int(client.dbsize())  # type: ignore[arg-type]
        finally:
            client.close()

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
    With replicas=N, each master gets N replicas (CLUSTER REPLICATE), in sync
    before start() returns. `nodes` lists the masters first, then the replicas,
    in the roles they started with; failovers change roles, not this list.
    node_timeout_ms is cluster-node-timeout: a master killed is replaced by its
    replica after roughly two of these.
    """

    def __init__(self, masters: int = 3, appendfsync: str = "everysec", replicas: int = 0,
                 node_timeout_ms: int = 2000) -> None:
        self.appendfsync = appendfsync
        self.node_timeout_ms = node_timeout_ms
        self.masters_at_start = masters
        self.nodes: list[EmbeddedRedis] = []
        self.bus_ports: list[int] = []
        for _ in range(masters * (1 + replicas)):
            self._new_node()

    def _new_node(self) -> EmbeddedRedis:
        node = EmbeddedRedis(appendfsync=self.appendfsync)
        bus_port = free_port()
        node.extra_args = ["--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                           "--cluster-config-file", str(Path(node.data_dir) / "nodes.conf"),
                           "--cluster-node-timeout", str(self.node_timeout_ms)]
        self.nodes.append(node)
        self.bus_ports.append(bus_port)
        return node

    @property
    def addresses(self) -> str:
        """host:port,host:port,... as `claimcore serve --redis-cluster` takes it."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        """A plain client of one node (close it after use)."""
        return redis.Redis(port=node.port, decode_responses=True, socket_timeout=5)

    def _ask(self, node: EmbeddedRedis, *command: object) -> object:
        client = self.client(node)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def node_id(self, node: EmbeddedRedis) -> str:
        return str(self._ask(node, "CLUSTER", "MYID"))

    def live(self) -> list[EmbeddedRedis]:
        return [node for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def _view(self, node: EmbeddedRedis) -> dict[str, tuple[str, str, str]]:
        """CLUSTER NODES as node's view: port -> (role, master id or '-', link state)."""
        raw = str(self._ask(node, "CLUSTER", "NODES"))
        view = {}
        for line in raw.splitlines():
            fields = line.split()
            port = fields[1].split("@")[0].rsplit(":", 1)[1]
            role = "master" if "master" in fields[2].split(",") else "replica"
            if "fail" in fields[2].split(","):
                role = "fail"
            view[port] = (role, fields[3], fields[7])
        return view

    def masters(self) -> list[EmbeddedRedis]:
        """Live masters that own slots now, as the live nodes agree."""
        by_port = {str(node.port): node for node in self.nodes}
        slots = self._ask(self.live()[0], "CLUSTER", "SLOTS")
        owners = {str(entry[2][1]) for entry in slots}  # type: ignore[union-attr]
        return [by_port[port] for port in sorted(owners, key=int) if port in by_port]

    def master_of(self, key: str) -> EmbeddedRedis:
        """The master that owns key's slot now."""
        node = self.live()[0]
        slot = int(self._ask(node, "CLUSTER", "KEYSLOT", key))  # type: ignore[arg-type]
        for entry in self._ask(node, "CLUSTER", "SLOTS"):  # type: ignore[union-attr]
            if entry[0] <= slot <= entry[1]:
                return next(n for n in self.nodes if n.port == int(entry[2][1]))
        raise LookupError(f"no master owns slot {slot}")

    def replicas_of(self, master: EmbeddedRedis) -> list[EmbeddedRedis]:
        """Live nodes that say (ROLE) they replicate `master`, their link up."""
        found = []
        for node in self.live():
            try:
                role = self._ask(node, "ROLE")
            except redis.RedisError:
                continue
            if role[0] == "slave" and int(role[2]) == master.port and role[3] == "connected":  # type: ignore[index]
                found.append(node)
        return found

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        for node in self.nodes:
            node.start()
        masters = self.nodes[:self.masters_at_start]
        clients = [self.client(node) for node in masters]
        try:
            step = 16384 // len(masters)
            for i, client in enumerate(clients):
                last = 16383 if i == len(clients) - 1 else (i + 1) * step - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
            for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
            self.wait_ok(timeout)
            ids = [self.node_id(m) for m in masters]
            for n, replica in enumerate(self.nodes[len(masters):]):
                master_id = ids[n % len(ids)]
                self._until(lambda r=replica, m=master_id: self._replicate(r, m), timeout,
                            "replica could not attach")
            self.wait_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        finally:
            for client in clients:
                client.close()
        return self

    def _replicate(self, replica: EmbeddedRedis, master_id: str) -> bool:
        try:
            self._ask(replica, "CLUSTER", "REPLICATE", master_id)
            return True
        except redis.ResponseError:  # the replica does not know that master yet
            return False

    @staticmethod
    def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            time.sleep(0.05)

    def _settled(self) -> bool:
        """Every live node: cluster_state ok, the same slot map, every replica in sync."""
        try:
            maps = []
            for node in self.live():
                client = self.client(node)
                try:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                    slots = client.execute_command("CLUSTER", "SLOTS")
                    maps.append(sorted((e[0], e[1], e[2][1]) for e in slots))
                    info = client.info("replication")
                    if info["role"] == "slave" and (info.get("master_link_status") != "up"
                                                    or info.get("master_sync_in_progress")):
                        return False
                finally:
                    client.close()
            return all(m == maps[0] for m in maps)
        except redis.RedisError:
            return False

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node agrees on the slot map and says cluster_state:ok."""
        self._until(self._settled, timeout, "redis cluster did not settle (state, slot map, replicas)")

    def failover(self, replica: EmbeddedRedis, timeout: float = 30.0) -> None:
        """CLUSTER FAILOVER run on a replica (lossless hand-over); waits until it is the master."""
        old = next(n for n in self.live() if n.port == int(self._ask(replica, "ROLE")[2]))  # type: ignore[index]
        self._ask(replica, "CLUSTER", "FAILOVER")
        self._until(lambda: self._role(replica) == "master" and self._role(old) == "slave", timeout,
                    f"replica {replica.port} not promoted")
        self.wait_ok(timeout)

    def kill_master(self, master: EmbeddedRedis, timeout: float = 30.0, wait: bool = True
                    ) -> EmbeddedRedis:
        """kill -9 a master; with wait, until one of its replicas is promoted and the cluster
        has settled. Returns that replica (without wait: the replica that should take over)."""
        replicas: list[EmbeddedRedis] = []

        def has_replica() -> bool:
            replicas[:] = self.replicas_of(master)
            return bool(replicas)

        self._until(has_replica, timeout, f"master {master.port} has no replica to fail over to")
        master.kill()
        master.proc = None
        if not wait:
            return replicas[0]
        return self.wait_promoted(replicas, timeout)

    def wait_promoted(self, candidates: list[EmbeddedRedis], timeout: float = 30.0) -> EmbeddedRedis:
        """Until one of `candidates` is a master and the cluster has settled; returns it."""
        promoted: list[EmbeddedRedis] = []

        def one_promoted() -> bool:
            promoted[:] = [r for r in candidates if self._role(r) == "master"]
            return bool(promoted)

        self._until(one_promoted, timeout, "no replica promoted")
        self.wait_ok(timeout)
        return promoted[0]

    def _role(self, node: EmbeddedRedis) -> str:
        try:
            return str(self._ask(node, "ROLE")[0])  # type: ignore[index]
        except redis.RedisError:
            return ""

    def restart(self, node: EmbeddedRedis, timeout: float = 30.0) -> None:
        """Start a killed node again (same port, data and nodes.conf): it rejoins, as a replica
        if it was failed over meanwhile; waits until the cluster has settled."""
        node.start()
        self.wait_ok(timeout)

    def add_master(self, timeout: float = 30.0) -> EmbeddedRedis:
        """A new empty master joined to the cluster (no slots yet: rebalance to give it some)."""
        node = self._new_node()
        node.start()
        self._ask(self.live()[0], "CLUSTER", "MEET", "127.0.0.1", node.port, self.bus_ports[-1])
        self._until(lambda: all(str(node.port) in self._view(n) for n in self.live()), timeout,
                    f"new master {node.port} not known to every node")
        self.wait_ok(timeout)
        return node

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
