"""The front node: the only place that wires the parts together.

uvloop + grpc.aio; ClaimService and AdminService; gRPC health (NOT_SERVING
while Redis does not answer) and server reflection; SIGTERM/SIGINT drain:
health goes NOT_SERVING, new calls are refused, in-flight calls finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from claimcore.lifecycle import recycling, rounds
from claimcore.lifecycle.categories import CategoryGate
from claimcore.lifecycle.redemption import Redemptions
from claimcore.lifecycle.verifier import HttpVerifier
from claimcore.node import claim_service, tracing
from claimcore.node.admin_service import AdminService
from claimcore.node.admission import Admission
from claimcore.node.batcher import ClaimBatcher
from claimcore.node.claim_service import ClaimService
from claimcore.node.metrics import NodeMetrics, RpcMetrics
from claimcore.node.pipeline import Pipeline, authenticated, decoded
from claimcore.node.redeem_service import RedeemService
from claimcore.node.soldout import SoldOutCache
from claimcore.node.watch import CampaignStates
from claimcore.security.abuse import AbuseLimits, LimitSettings
from claimcore.security.auth import Credentials
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.clients import redis_client, redis_cluster_client
from claimcore.store.cluster_calls import require_replica_acks
from claimcore.store.inventory import RedisInventory
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

log = logging.getLogger("claimcore.node.server")

SERVICES = [
    "",
    pb.DESCRIPTOR.services_by_name["ClaimService"].full_name,
    pb.DESCRIPTOR.services_by_name["AdminService"].full_name,
    pb.DESCRIPTOR.services_by_name["RedeemService"].full_name,
]

@dataclass
class NodeOptions:
    redis_url: str  # one Redis; or "" with redis_cluster set
    host: str = "127.0.0.1"
    port: int = 50051
    max_batch: int = 256
    max_queued: int = 50_000
    linger_s: float = 0.002
    max_concurrent_rpcs: int = 20_000
    redis_timeout_s: float = 2.0
    redis_connections: int = 64
    grace_s: float = 5.0
    redis_cluster: str = ""  # host:port,... of a Redis Cluster's nodes (any few suffice)
    replica_acks: int = 0  # cluster: WAIT for this many replicas after each master's scripts (0 = off)
    replica_timeout_ms: int = 200  # how long that WAIT may take; fewer acks: UNAVAILABLE, outcome unknown
    verifier_url: str = ""  # external verifier asked before each redemption (verifier.py); "" = none
    verifier_timeout_ms: int = 300
    recycle_every_s: float = 60.0  # sweep for expired vouchers to recycle (0 = never; recycling.py)
    tls_cert: str = ""       # PEM certificate chain and key: serve TLS (else plaintext, if allowed)
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM roots: mutual TLS, callers must show a certificate they signed
    credentials: Credentials | None = None  # who may call (auth.py); None = an open node
    limits: LimitSettings | None = None     # anti-scalper limits (security/abuse.py); None = none
    metrics_port: int = -1  # serve Prometheus /metrics on host:this (0 = a free port, -1 = off; metrics.py)
    trace_file: str = ""  # OpenTelemetry spans as JSON lines to this file ("" = no tracing; tracing.py)
    reuse_port: bool = False  # SO_REUSEPORT: several processes share host:port (serve --workers; workers.py)
    metrics_host: str = ""    # where /metrics listens ("" = host); a worker's is loopback only


def server_tls(options: NodeOptions) -> grpc.ServerCredentials | None:
    """TLS from the certificate files; mutual TLS when a client CA is given; None = plaintext."""
    if not (options.tls_cert or options.tls_key):
        if options.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (options.tls_cert and options.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    try:
        chain, key = Path(options.tls_cert).read_bytes(), Path(options.tls_key).read_bytes()
        roots = Path(options.tls_client_ca).read_bytes() if options.tls_client_ca else None
    except OSError as exc:
        raise ValueError(f"TLS files: {exc}") from None
    # gRPC would only fail to bind, with no word on why: load them here first, to say which file is wrong.
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(options.tls_cert, options.tls_key)
    except ssl.SSLError as exc:
        raise ValueError(f"TLS files: --tls-cert {options.tls_cert} and --tls-key {options.tls_key} are not "
                         f"a PEM certificate chain and its private key ({exc.reason or exc})") from None
    if options.tls_client_ca:
        try:
            check.load_verify_locations(options.tls_client_ca)
        except ssl.SSLError as exc:
            raise ValueError(f"TLS files: --tls-client-ca {options.tls_client_ca} is not a PEM CA "
                             f"certificate ({exc.reason or exc})") from None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=roots,
                                       require_client_auth=roots is not None)


def abuse_limits(options: NodeOptions) -> AbuseLimits | None:
    """The anti-scalper limits: the flags' settings, with the credentials file's channel quotas."""
    settings = options.limits or LimitSettings()
    quotas = dict(settings.channel_quotas)
    if options.credentials:
        quotas.update({name: (q.claims_per_s, q.burst) for name, q in options.credentials.quotas.items()})
    limits = AbuseLimits.from_settings(dataclasses.replace(settings, channel_quotas=quotas))
    return limits if limits.enabled else None


class Node:
    def __init__(self, options: NodeOptions) -> None:
        self.options = options
        self.redis = (
            redis_cluster_client(options.redis_cluster, options.redis_timeout_s) if options.redis_cluster
            else redis_client(options.redis_url, options.redis_timeout_s, options.redis_connections)
        )
        if options.redis_cluster and options.replica_acks:
            require_replica_acks(self.redis, options.replica_acks, options.replica_timeout_ms)
        self.inventory = RedisInventory(self.redis)
        self.campaigns = CampaignCache(self.inventory)
        self.soldout = SoldOutCache(self.inventory)
        self.metrics = NodeMetrics()
        self.batcher = ClaimBatcher(
            self.inventory, self.soldout.is_sold_out, self.soldout.mark, self.campaigns.reload,
            max_batch=options.max_batch, max_queued=options.max_queued, linger_s=options.linger_s,
            gate=CategoryGate(self.inventory), metrics=self.metrics,
        )
        self.health = health.aio.HealthServicer()
        creds = options.credentials
        if options.trace_file:
            tracing.setup(options.trace_file)
        self.server = grpc.aio.server(
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", 1 << 20),
                ("grpc.max_send_message_length", 4 << 20),
                # Off for one process, so that a port already taken is an error, not a silent share.
                ("grpc.so_reuseport", int(options.reuse_port)),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        claims = ClaimService(self.inventory, self.campaigns, Admission(), self.soldout, self.batcher,
                              abuse_limits(options), self.metrics)
        # WatchCampaigns (watch.py): one task computes the watched campaigns' states for every stream.
        claims.watches = self.watches = CampaignStates(self.inventory, self.campaigns, self.soldout)
        # Every service is added through the call pipeline (pipeline.py), which wraps each method once.
        # Metrics (when served) outermost: they see every status, the others' refusals included.
        # Decoding next: undecodable bytes get INVALID_ARGUMENT whoever sends them.
        # Tracing (when on) after decoding: its spans read the decoded requests.
        rpc_metrics = RpcMetrics(self.metrics) if options.metrics_port >= 0 else None
        pipeline = Pipeline([*([rpc_metrics] if rpc_metrics else []), decoded,
                             *([tracing.Traced()] if options.trace_file else []),
                             *([authenticated(creds)] if creds else [])],
                            on_unknown=rpc_metrics.unknown if rpc_metrics else None)
        claim_service.add_to_server(claims, pipeline)
        verifier = (HttpVerifier(options.verifier_url, options.verifier_timeout_ms / 1000)
                    if options.verifier_url else None)
        redemptions = Redemptions(self.inventory, self.campaigns, verifier)
        pb_grpc.add_AdminServiceServicer_to_server(
            AdminService(self.inventory, self.campaigns, redemptions), pipeline)
        pb_grpc.add_RedeemServiceServicer_to_server(
            RedeemService(redemptions, self.campaigns, self.metrics), pipeline)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, pipeline)
        # What reflection.enable_server_reflection does for an aio server, through the pipeline.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(
            [*SERVICES[1:], health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME]), pipeline)
        pipeline.install(self.server)
        self.port = 0
        self.metrics_port = -1  # the port /metrics is served on, once started; -1 = not served
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> int:
        address = f"{self.options.host}:{self.options.port}"
        tls = server_tls(self.options)
        try:  # grpcio returns 0, or (newer) raises RuntimeError, for an address it cannot bind
            self.port = (self.server.add_secure_port(address, tls) if tls
                         else self.server.add_insecure_port(address))
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {self.options.host}:{self.options.port}: the port is in use, "
                          "or the host is not an address of this machine")
        if self.options.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(self.options.metrics_host or self.options.host,
                                                   self.options.metrics_port)
        await self._set_health(False)
        await self.server.start()
        self._tasks = [asyncio.create_task(self._watch_redis()),
                       asyncio.create_task(self.soldout.run()),
                       asyncio.create_task(self.watches.run())]
        if self.metrics_port >= 0:
            self._tasks.append(asyncio.create_task(
                self.metrics.sample_forever(self.inventory, self.campaigns.cached)))
        self._tasks.append(asyncio.create_task(rounds.release_forever(self.inventory, self.campaigns)))
        if self.options.recycle_every_s > 0:
            self._tasks.append(asyncio.create_task(
                recycling.sweep_forever(self.inventory, self.campaigns, self.options.recycle_every_s)))
        return self.port

    async def _set_health(self, serving: bool) -> None:
        codes = health_pb2.HealthCheckResponse
        status = codes.SERVING if serving else codes.NOT_SERVING
        for name in SERVICES:
            await self.health.set(name, status)

    async def _watch_redis(self) -> None:
        """Health follows Redis: SERVING only while it answers PING."""
        serving: bool | None = None
        while True:
            try:
                ok = bool(await asyncio.wait_for(self.redis.ping(), 1.0))
            except Exception:  # noqa: BLE001 - any failure means not serving
                ok = False
            if ok != serving:
                serving = ok
                self.metrics.redis_up = int(ok)
                await self._set_health(ok)
                log.log(logging.INFO if ok else logging.WARNING,
                        "redis %s: health %s", "reachable" if ok else "unreachable",
                        "SERVING" if ok else "NOT_SERVING",
                        extra={"event": "redis_up" if ok else "redis_down"})
            await asyncio.sleep(0.5 if ok else 0.2)

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain: NOT_SERVING first, then refuse new calls and let in-flight ones finish."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.watches.close()  # watch streams end now: their clients go to another node
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.options.grace_s if grace_s is None else grace_s)
        self.metrics.close()
        await self.redis.aclose()
        if self.options.trace_file:
            tracing.shutdown()  # writes the spans still buffered


async def run_node(options: NodeOptions, ready: asyncio.Event | None = None) -> None:
    node = Node(options)
    port = await node.start()
    log.info("claimcore node listening on %s:%d", options.host, port)
    print(f"claimcore: serving on {options.host}:{port}", flush=True)
    if node.metrics_port >= 0:
        print(f"claimcore: metrics on http://{options.host}:{node.metrics_port}/metrics", flush=True)
    if ready is not None:
        ready.set()
    await drain_on_signal(node)


async def drain_on_signal(node: Node, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT (or `stop` is set), then drain the node."""
    if stop is None:
        stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Draining: a second signal must not cut the drain or the clean-up short
        # (an embedded redis-server would be orphaned).
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    log.info("draining (grace %.1fs)", node.options.grace_s)
    await node.stop()
