"""The servers under test as child processes, and the readings taken around a measured phase."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import redis
from benchmarks.system import maths

from claimcore.harness.embedded_redis import free_port, stop_child

ROOT = Path(__file__).resolve().parents[2]  # the checkout: `benchmarks` is importable from here
CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServerStartError(RuntimeError):
    """The server exited, or did not accept connections in time; the message ends with its log."""


class BenchServer:
    """`python -m <module> --port P [args]` (the echo server or the naive baseline) on 127.0.0.1.

    Same surface as claimcore.harness.local_node.LocalNode: address, pid, start(), stop().
    """

    def __init__(self, module: str, *args: str) -> None:
        self.module = module
        self.args = list(args)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile(prefix="claimcore-bench-server-")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> BenchServer:
        env = dict(os.environ)
        paths = [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port), *self.args],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            while True:
                if self.proc.poll() is not None:
                    raise ServerStartError(f"{self.module} exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.2)
                    return self
                except grpc.FutureTimeoutError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise ServerStartError(f"{self.module} not listening after {timeout:.0f} s:\n"
                                               f"{self.log()}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc)
        self.proc = None

    def log(self, limit: int = 4000) -> str:
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        return os.pread(fd, limit, max(0, size - limit)).decode(errors="replace")


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    return maths.proc_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), CLK_TCK)


class Probe:
    """Takes a maths.Reading: the server process's CPU and, if it has one, its Redis's figures."""

    def __init__(self, server_pid: int, redis_port: int | None = None) -> None:
        self.server_pid = server_pid
        self.redis = redis.Redis(port=redis_port) if redis_port else None

    def __call__(self) -> maths.Reading:
        cpu = process_cpu_seconds(self.server_pid)
        if self.redis is None:
            return maths.Reading(cpu)
        info = self.redis.info("cpu", "stats", "commandstats")  # one command: see maths.OWN_COMMANDS
        return maths.Reading(cpu, maths.redis_cpu_seconds(info), int(info["total_commands_processed"]),
                             maths.command_calls(info, "evalsha"))

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
