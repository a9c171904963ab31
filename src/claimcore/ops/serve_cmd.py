"""`claimcore serve`: run a front node; its flags and the checks made before it starts.

It refuses to start (exit 2) unless given TLS (--tls-cert, --tls-key) or --plaintext, and --credentials
or --no-auth (docs/security.md). Without --redis or --redis-cluster it starts an embedded redis-server
(harness/embedded_redis.py) whose AOF lives in a data folder (--data-dir; default_data_dir() otherwise),
so a restart on the same folder keeps every campaign and grant; --ephemeral uses a temporary folder,
removed on the way out. The node itself is node/server.py's run_node; with --workers N (N > 1) it is
node/workers.py's N processes on one port, sharing that Redis (this process starts and stops it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from claimcore.harness.embedded_redis import EmbeddedRedis
    from claimcore.security.abuse import LimitSettings
    from claimcore.security.auth import Credentials


def cpu_count() -> int:
    """The cores this process may run on (os.process_cpu_count, Python 3.13+; else the affinity mask)."""
    counted = getattr(os, "process_cpu_count", None)
    if counted is not None:
        return max(1, counted() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_data_dir() -> Path:
    """Where the embedded redis-server keeps its data without --data-dir: $XDG_DATA_HOME/claimcore,
    else ~/.local/share/claimcore (the same place whatever folder the node is started from)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"  # XDG: relative is ignored
    return base / "claimcore"


def _default_data_dir_shown() -> str:
    try:
        return str(default_data_dir())
    except RuntimeError:  # no home folder known: `serve` then asks for --data-dir
        return "unknown: no home folder"


def workers_count(text: str) -> int:
    """--workers: a count >= 1, or "auto" (one per core)."""
    if text.strip().lower() == "auto":
        return cpu_count()
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"a number >= 1 or auto, not {text!r}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis",
                        help="Redis URL (redis://host:port/db); default: start an embedded redis-server "
                             "keeping its data in --data-dir")
    parser.add_argument("--redis-cluster", metavar="HOST:PORT,...",
                        help="run on a Redis Cluster, given a few of its nodes")
    parser.add_argument("--replica-acks", type=int, default=0, metavar="N",
                        help="with --redis-cluster: a grant is answered only once N replicas have it "
                             "(WAIT); else UNAVAILABLE, outcome unknown (see docs/cluster.md)")
    parser.add_argument("--replica-timeout-ms", type=int, default=200, metavar="T",
                        help="how long each master's WAIT for --replica-acks may take")
    parser.add_argument("--verifier-url", default="", metavar="URL",
                        help="ask this external verifier (HTTP POST, JSON) before each redemption "
                             "(docs/redemption.md)")
    parser.add_argument("--verifier-timeout-ms", type=int, default=300,
                        help="past it, the redemption is answered VERIFICATION_UNAVAILABLE")
    parser.add_argument("--recycle-every-s", type=float, default=60.0,
                        help="give expired unused vouchers' stock back this often (0 = never)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    parser.add_argument("--workers", type=workers_count, default=1, metavar="N",
                        help="front processes sharing the port and the Redis, one core each "
                             "(auto: one per core; default 1; docs/operations.md)")
    parser.add_argument("--appendfsync", choices=["everysec", "always"], default="everysec",
                        help="durability of the embedded redis-server (see docs/architecture.md; "
                             "default everysec)")
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument("--data-dir", metavar="PATH",
                      help="folder of the embedded redis-server's data (AOF), kept over restarts; "
                           "one node at a time (default: $XDG_DATA_HOME/claimcore, else "
                           f"~/.local/share/claimcore; here {_default_data_dir_shown()}; docs/operations.md)")
    kept.add_argument("--ephemeral", action="store_true",
                      help="keep the embedded redis-server's data in a temporary folder, removed on stop: "
                           "nothing survives a restart (demos, tests; default off)")
    parser.add_argument("--max-batch", type=int, default=256, help="claims per Lua call, at most")
    parser.add_argument("--max-queued", type=int, default=50_000,
                        help="claims queued on the node before it sheds with RESOURCE_EXHAUSTED")
    parser.add_argument("--linger-ms", type=float, default=2.0,
                        help="wait before each Redis round trip so claims share it (latency for CPU)")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on SIGTERM")
    parser.add_argument("--metrics-port", type=int, default=-1, metavar="N",
                        help="serve Prometheus metrics at http://HOST:N/metrics (0 picks a free port; "
                             "default -1: off; docs/metrics.md)")
    parser.add_argument("--trace-file", metavar="PATH", default=None,
                        help="OpenTelemetry tracing: append claim and Redis flush spans to PATH as JSON "
                             "lines (env CLAIMCORE_TRACE_FILE; needs claimcore[tracing]; docs/metrics.md)")
    security = parser.add_argument_group("security (docs/security.md): TLS, or --plaintext; "
                                         "--credentials, or --no-auth")
    security.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    security.add_argument("--tls-key", help="its PEM private key")
    security.add_argument("--tls-client-ca", help="PEM roots: mutual TLS, callers show a certificate "
                                                  "signed by them")
    security.add_argument("--plaintext", action="store_true", help="serve without TLS (loopback, tests)")
    security.add_argument("--credentials", metavar="FILE",
                          help="TOML file of the admin's and the channels' API key digests and quotas")
    security.add_argument("--no-auth", action="store_true",
                          help="no credentials: anyone may call anything (loopback, tests, the demo)")

    abuse = parser.add_argument_group("anti-scalper limits (docs/abuse-limits.md): claims per second "
                                      "per node, 0 = off; burst 0 = one second's worth")
    for kind in ("user", "device", "ip"):
        abuse.add_argument(f"--{kind}-rate", type=float, default=0.0, help=f"claims/s per {kind}")
        abuse.add_argument(f"--{kind}-burst", type=int, default=0,
                           help=f"claims one {kind} may make at once before --{kind}-rate applies "
                                "(0: one second's worth)")
    abuse.add_argument("--limit-capacity", type=int, default=300_000,
                       help="keys each table (users, devices, IPs) holds at most: bounds memory")
    abuse.add_argument("--deny-file", help="deny list: lines user:ID, device:ID, ip:ADDR or ip:CIDR")
    abuse.add_argument("--channel-quota", action="append", default=[], metavar="CHANNEL=RATE[:BURST]",
                       help="a channel's claims/s on this node (repeat); the credentials file's "
                            "claims_per_s win")


def run(args: argparse.Namespace) -> int:
    """Serve until stopped: 0 then, 1 if the node fails, 2 for bad settings (docs/cli.md)."""
    from claimcore.node import logs  # here, not at the top: the other commands do not load the node

    log_format = os.environ.get(logs.ENV, "")
    if log_format and not getattr(args, "log_format", None):  # a --log-format flag wins
        try:
            logs.configure(log_format, logging.getLogger().getEffectiveLevel())
        except ValueError as exc:
            print(f"claimcore serve: {logs.ENV}: {exc}", file=sys.stderr)
            return 2
    url = args.redis
    if args.redis_cluster and url:
        print("claimcore serve: give --redis or --redis-cluster, not both", file=sys.stderr)
        return 2
    if (args.data_dir is not None or args.ephemeral) and (url or args.redis_cluster):
        flag = "--data-dir" if args.data_dir is not None else "--ephemeral"
        given = "--redis" if url else "--redis-cluster"
        print(f"claimcore serve: USAGE: {flag} is for the embedded redis-server, not with {given} "
              "(see claimcore serve --help)", file=sys.stderr)
        return 2
    if args.replica_acks and not args.redis_cluster:
        print("claimcore serve: --replica-acks needs --redis-cluster", file=sys.stderr)
        return 2
    if not (args.tls_cert or args.plaintext):
        print("claimcore serve: give --tls-cert and --tls-key (TLS), or --plaintext to serve without TLS",
              file=sys.stderr)
        return 2
    if not (args.credentials or args.no_auth):
        print("claimcore serve: give --credentials FILE (docs/security.md), or --no-auth to let anyone "
              "call anything", file=sys.stderr)
        return 2
    credentials = None
    if args.credentials:
        from claimcore.security.auth import CredentialsError, load_credentials

        try:
            credentials = load_credentials(args.credentials)
        except CredentialsError as exc:
            print(f"claimcore serve: {exc}", file=sys.stderr)
            return 2
    from claimcore.security.abuse import LimitSettings, parse_channel_quota

    try:
        limits = LimitSettings(
            user_rate=args.user_rate, user_burst=args.user_burst, device_rate=args.device_rate,
            device_burst=args.device_burst, ip_rate=args.ip_rate, ip_burst=args.ip_burst,
            capacity=args.limit_capacity, deny_file=args.deny_file,
            channel_quotas=dict(parse_channel_quota(q) for q in args.channel_quota))
    except ValueError as exc:
        print(f"claimcore serve: {exc}", file=sys.stderr)
        return 2
    embedded = None
    try:
        if not url and not args.redis_cluster:
            # Until the node's own handlers are set, a SIGTERM ends this process through this clean-up,
            # which stops the embedded redis-server (else it would outlive us, holding the data folder).
            signal.signal(signal.SIGTERM, _exit_on_signal)
            embedded, code = _embedded_server(args)
            if embedded is not None:
                code = _start_embedded(embedded, args)
            if code:
                return code
            url = embedded.url
        return _serve(args, url, credentials, limits)
    finally:
        if embedded:
            embedded.cleanup()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)  # a stop asked for while starting: the clean-up runs, and it is a clean stop


def _embedded_server(args: argparse.Namespace) -> tuple[EmbeddedRedis | None, int]:
    """The embedded redis-server, not started yet, on its data folder (--data-dir, the default, made if
    missing; or --ephemeral's temporary one); else None and the exit code, its one line printed."""
    from claimcore.harness.embedded_redis import EmbeddedRedis

    data_dir = None
    if not args.ephemeral:
        try:
            data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
            data_dir = data_dir.resolve()
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except RuntimeError as exc:  # Path.home(): no home folder
            print(f"claimcore serve: no default data folder ({exc}): give --data-dir PATH, or "
                  "--ephemeral to keep nothing", file=sys.stderr)
            return None, 2
        except OSError as exc:
            print(f"claimcore serve: cannot use {data_dir} as the data folder: {exc.strerror or exc} "
                  "(give --data-dir PATH, or --ephemeral to keep nothing)", file=sys.stderr)
            return None, 2
    # Its own process group: a Ctrl-C reaches this process, which drains, then stops the server.
    return EmbeddedRedis(appendfsync=args.appendfsync, data_dir=str(data_dir) if data_dir else None,
                         own_process_group=True), 0


def _start_embedded(embedded: EmbeddedRedis, args: argparse.Namespace) -> int:
    """Start it and print the start line (0); else its one line and the exit code."""
    import redis

    from claimcore.harness.embedded_redis import DataDirInUse, RedisServerMissing

    try:
        embedded.start()
    except RedisServerMissing as exc:
        print(f"claimcore serve: {exc}", file=sys.stderr)
        return 2
    except DataDirInUse as exc:  # refused, not shared: two nodes' servers would write one AOF
        remedy = ("stop that node first" if exc.starter_alive
                  else f"stop that redis-server (kill {exc.redis_pid}) first")
        print(f"claimcore serve: {exc}: {remedy}, or give another --data-dir", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as exc:  # it exited at start (a bad AOF: its log says), or hung
        print(f"claimcore serve: {exc}", file=sys.stderr)
        return 1
    if args.ephemeral:
        where = f"ephemeral: data is lost on stop (temporary folder {embedded.data_dir})"
    else:
        kept = "kept"
        with contextlib.suppress(redis.RedisError):  # only a figure for the line: never a reason to stop
            found = embedded.key_count()  # what the AOF brought back: 0 for a new folder
            kept = f"kept: {found} keys loaded" if found else "kept: new folder, or empty"
        where = f"data in {embedded.data_dir} ({kept})"
    print(f"claimcore: embedded redis-server at {embedded.url} (appendfsync {args.appendfsync}), {where}",
          flush=True)
    return 0


def _serve(args: argparse.Namespace, url: str | None, credentials: Credentials | None,
           limits: LimitSettings) -> int:
    """Run the node (or --workers N of them) on `url` until stopped."""
    import uvloop  # here, not at the top: the other commands do not load the node

    from claimcore.node.server import NodeOptions, run_node

    options = NodeOptions(
        redis_url=url or "", host=args.host, port=args.port, max_batch=args.max_batch,
        max_queued=args.max_queued, grace_s=args.grace, linger_s=args.linger_ms / 1000,
        redis_cluster=args.redis_cluster or "",
        replica_acks=args.replica_acks, replica_timeout_ms=args.replica_timeout_ms,
        verifier_url=args.verifier_url, verifier_timeout_ms=args.verifier_timeout_ms,
        recycle_every_s=args.recycle_every_s,
        tls_cert=args.tls_cert or "", tls_key=args.tls_key or "", tls_client_ca=args.tls_client_ca or "",
        credentials=credentials, limits=limits, metrics_port=args.metrics_port,
        trace_file=args.trace_file or os.environ.get("CLAIMCORE_TRACE_FILE", ""),
    )
    try:
        if args.workers > 1:
            from claimcore.node.workers import run_workers

            return run_workers(options, args.workers)
        uvloop.run(run_node(options))
    except (OSError, ValueError) as exc:
        print(f"claimcore serve: {exc}", file=sys.stderr)
        return 1
    return 0
