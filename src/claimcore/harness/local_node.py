"""A front node as a child process: `python -m claimcore serve` on a free loopback port.

Used by `claimcore demo` and by the tests, which need real nodes they can start, signal and stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from claimcore.harness.embedded_redis import free_port, stop_child
from claimcore.security.access import PLAINTEXT, Access

#: The folder holding this claimcore package (src/ in a checkout), so the child imports this copy
#: even when claimcore is not pip-installed.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
STOP_TIMEOUT_S = 15.0


class NodeStartError(RuntimeError):
    """The node exited, or was not SERVING in time; the message ends with its log."""


def health_status(address: str, timeout: float = 1.0, reach: Access = PLAINTEXT) -> int | None:
    """The gRPC health status of the node at address, or None if it does not answer."""
    with reach.channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            ).status
        except grpc.RpcError:
            return None


class LocalNode:
    """One `claimcore serve` child process on 127.0.0.1.

    redis_url "" passes `--redis ""`, so the node starts its own redis-server;
    extra_args go to `claimcore serve` as they are (e.g. "--grace", "5"); env adds to its
    environment (CLAIMCORE_TEST_CLOCK_OFFSET_MS runs it with a clock that is off).
    Without --tls-cert it serves --plaintext, without --credentials --no-auth;
    `reach` is how its own health probe dials it (TLS roots for a TLS node).
    """

    def __init__(self, redis_url: str, *extra_args: str, reach: Access = PLAINTEXT,
                 env: dict[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.env = dict(env or {})  # extra environment, e.g. CLAIMCORE_TEST_CLOCK_OFFSET_MS
        self.extra_args = list(extra_args)
        self.reach = reach
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode = 0
        # Unnamed, so nothing is left behind; read with pread, as the child shares its offset.
        self._log = tempfile.TemporaryFile(prefix="claimcore-node-")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "claimcore", "serve",
            "--redis", self.redis_url,
            "--port", str(self.port),
            "--host", "127.0.0.1",
            *([] if "--tls-cert" in self.extra_args else ["--plaintext"]),
            *([] if "--credentials" in self.extra_args else ["--no-auth"]),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 20.0) -> LocalNode:
        """Start the node and wait until its health check says SERVING."""
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches only the parent, which stops the node in order
        )
        try:
            self._wait_serving(self.proc, timeout)
        except BaseException:  # no orphan node, also on Ctrl-C
            self.stop()
            raise
        return self

    def _wait_serving(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise NodeStartError(
                    f"front node exited with code {proc.returncode} before serving:\n"
                    f"{self.log_tail()}"
                )
            status = health_status(self.address, 0.5, self.reach)
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            if time.monotonic() > deadline:
                last = "no answer"
                if status is not None:
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                raise NodeStartError(
                    f"front node on {self.address} not SERVING after {timeout:.0f} s "
                    f"(last: {last}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send sig (then SIGKILL if it does not exit in time); return the exit code.

        Calling it again returns the same code; 0 if the node never started.
        """
        if self.proc is None:
            return self.returncode
        self.returncode = stop_child(self.proc, sig, STOP_TIMEOUT_S)
        self.proc = None
        return self.returncode

    def log_tail(self, limit: int = 8000) -> str:
        """The last `limit` bytes of the node's stdout and stderr."""
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        return os.pread(fd, limit, max(0, size - limit)).decode(errors="replace")
