"""The `claimcore` command: serve, demo, loadgen, campaign administration, ledger export and reconcile.

Output, exit codes and settings: docs/cli.md."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import NoReturn

import grpc
from google.protobuf import json_format

from claimcore import __version__
from claimcore.ops import cli_config, cli_output
from claimcore.security import access

CONNECT_TIMEOUT_S = 5.0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvloop

    from claimcore.harness.embedded_redis import EmbeddedRedis, RedisServerMissing
    from claimcore.node import logs
    from claimcore.node.server import NodeOptions, run_node

    log_format = os.environ.get(logs.ENV, "")
    if log_format and not getattr(args, "log_format", None):  # a --log-format flag wins
        try:
            logs.configure(log_format, logging.getLogger().getEffectiveLevel())
        except ValueError as exc:
            print(f"claimcore serve: {logs.ENV}: {exc}", file=sys.stderr)
            return 2
    embedded = None
    url = args.redis
    if args.redis_cluster and url:
        print("claimcore serve: give --redis or --redis-cluster, not both", file=sys.stderr)
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
    if not url and not args.redis_cluster:
        try:
            embedded = EmbeddedRedis(appendfsync=args.appendfsync).start()
        except RedisServerMissing as exc:
            print(f"claimcore serve: {exc}", file=sys.stderr)
            return 2
        url = embedded.url
        print(f"claimcore: started its own redis-server at {url} (appendfsync {args.appendfsync})",
              flush=True)
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
        uvloop.run(run_node(options))
    except (OSError, ValueError) as exc:
        print(f"claimcore serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded:
            embedded.cleanup()
    return 0


def _reach(args: argparse.Namespace) -> grpc.Channel:
    """A connected channel to --target (exit 3 if nothing answers within --connect-timeout)."""
    return cli_output.connect(access.dial, args.target, args.connect_timeout,
                              getattr(args, "sources", {}).get("target", ""))


def _admin(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from claimcore.v1 import claims_pb2_grpc as pb_grpc

    return pb_grpc.AdminServiceStub(_reach(args))


def cmd_keygen(args: argparse.Namespace) -> int:
    """A new API key, and the line that lets it in (the file keeps only its digest)."""
    from claimcore.security.auth import digest_line, new_key

    key = new_key()
    section = "[admin]" if args.admin else f"[channels.{args.channel}]"
    line = f"keys = [\"{digest_line(key)}\"]"
    if args.output == "json":
        print(json.dumps({"key": key, "section": section, "credentials_line": line}, indent=2))
        return 0
    print(f"# the key: give it to its holder, keep it secret (CLAIMCORE_API_KEY or --api-key)\n{key}\n"
          f"# for the credentials file, under {section}:\n{line}")
    return 0


def _print(message) -> None:  # type: ignore[no-untyped-def]
    """The --json output: the reply as JSON, as the CLI has always printed it."""
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2))


def _emit(args: argparse.Namespace, message, text: Callable[[], str]) -> None:  # type: ignore[no-untyped-def]
    """The reply as JSON with --json, else the human-readable text."""
    if args.output == "json":
        _print(message)
    else:
        print(text())


def _status(info, now_ms: int) -> str:  # type: ignore[no-untyped-def]
    c = info.campaign
    if info.resharding:
        return "resharding"
    if info.paused:
        return "paused"
    if info.sold_out_at_ms:
        return "sold out"
    if c.ends_at_ms and now_ms >= c.ends_at_ms:
        return "ended"
    if c.starts_at_ms and now_ms < c.starts_at_ms:
        return "not started"
    return "live"


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size:,} {unit}"
    return f"{ms:,} ms"


def _campaign_text(info) -> str:  # type: ignore[no-untyped-def]
    """A campaign as a key/value block and its per-shard table."""
    c = info.campaign
    yes = {True: "yes", False: "no"}
    pairs: list[tuple[str, object]] = [
        ("campaign", c.campaign_id), ("name", c.name), ("status", _status(info, int(time.time() * 1000))),
        ("inventory", cli_output.number(c.inventory)), ("granted", cli_output.number(info.granted)),
        ("remaining", cli_output.number(info.remaining)),
    ]
    if c.rounds or info.held_for_rounds:
        pairs.append(("held for rounds", cli_output.number(info.held_for_rounds)))
    pairs += [
        ("shards", f"{c.shards} (epoch {info.shard_epoch})"),
        ("per-user limit", c.per_user_limit or 1),
        ("starts", cli_output.when(c.starts_at_ms, "at once")),
        ("ends", cli_output.when(c.ends_at_ms, "never")),
        ("sold out at", cli_output.when(info.sold_out_at_ms)),
        ("created", cli_output.when(info.created_at_ms)),
        ("admission rate", f"{c.admission_rate:,} claims/s per node" if c.admission_rate else "unlimited"),
        ("value", f"{c.value_cents:,} cents"),
        ("min spend", f"{c.min_spend_cents:,} cents"),
        ("category", c.category),
        ("valid for", _duration(c.valid_for_ms) if c.valid_for_ms else "no limit"),
        ("vouchers per order", c.max_vouchers_per_order or 1),
        ("stackable", yes[c.stackable]),
        ("one per category", yes[c.one_per_category]),
        ("regions", ", ".join(c.regions) or "all"),
        ("channels", ", ".join(c.channels) or "all"),
        ("allow list only", yes[c.allow_list]),
        ("resident regions", ", ".join(c.resident_regions) or "any"),
        ("required tags", ", ".join(c.required_tags) or "none"),
    ]
    if c.rounds:
        pairs.append(("rounds", "; ".join(
            f"{cli_output.number(r.amount)} at {cli_output.when(r.release_at_ms)}" for r in c.rounds)))
    shards = cli_output.table(
        ["SHARD", "REMAINING", "GRANTED", "STATE"],
        [(s.shard, cli_output.number(s.remaining), cli_output.number(s.granted),
          "retired" if s.retired else "live") for s in info.shards],
        right=(0, 1, 2))
    return cli_output.block(pairs) + "\n\n" + shards


def _campaign_table(admin, ids: list[str]) -> str:  # type: ignore[no-untyped-def]
    """One row per campaign: its figures read with GetCampaign, many calls in flight at once."""
    from claimcore.v1 import claims_pb2 as pb

    if not ids:
        return "no campaigns"
    infos = []
    for start in range(0, len(ids), 64):
        futures = [admin.GetCampaign.future(pb.GetCampaignRequest(campaign_id=cid), timeout=10)
                   for cid in ids[start:start + 64]]
        for future in futures:
            try:
                infos.append(future.result())
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    raise  # NOT_FOUND: deleted since the list was read
    now = int(time.time() * 1000)
    n = cli_output.number
    return cli_output.table(
        ["CAMPAIGN", "STATUS", "INVENTORY", "GRANTED", "REMAINING", "SHARDS", "SOLD OUT AT"],
        [(i.campaign.campaign_id, _status(i, now), n(i.campaign.inventory), n(i.granted), n(i.remaining),
          i.campaign.shards, cli_output.when(i.sold_out_at_ms)) for i in infos],
        right=(2, 3, 4, 5))


def _reshard_text(reply) -> str:  # type: ignore[no-untyped-def]
    n = cli_output.number
    pairs: list[tuple[str, object]] = [
        ("campaign", reply.campaign.campaign.campaign_id),
        ("shards", f"{reply.from_shards} -> {reply.to_shards} (epoch {reply.shard_epoch})"),
        ("moved users", n(reply.moved_users)),
        ("moved grant records", n(reply.moved_records)),
        ("moved stock", n(reply.moved_stock)),
        ("moving users waited", f"{reply.frozen_ms:,} ms"),
        ("took", f"{reply.took_ms:,} ms"),
        ("granted", n(reply.campaign.granted)),
        ("remaining", n(reply.campaign.remaining)),
    ]
    if reply.resumed:
        pairs.append(("resumed", "yes: finished a reshard an earlier call left half-done"))
    return cli_output.block(pairs)


def cmd_campaign(args: argparse.Namespace) -> int:
    from claimcore.v1 import claims_pb2 as pb

    admin = _admin(args)
    if args.action == "create":
        campaign = pb.Campaign(
            campaign_id=args.campaign_id, name=args.name, inventory=args.inventory,
            shards=args.shards, per_user_limit=args.per_user_limit,
            starts_at_ms=args.starts_at_ms, ends_at_ms=args.ends_at_ms,
            admission_rate=args.admission_rate, value_cents=args.value_cents,
            min_spend_cents=args.min_spend_cents, category=args.category,
            valid_for_ms=args.valid_for_ms, max_vouchers_per_order=args.max_vouchers_per_order,
            regions=args.region, allow_list=args.allow_list,
            resident_regions=args.resident_region, required_tags=args.required_tag,
            rounds=[pb.Round(release_at_ms=at, amount=amount) for at, amount in args.round],
            one_per_category=args.one_per_category, stackable=args.stackable,
            channels=args.channel,
        )
        info = admin.CreateCampaign(pb.CreateCampaignRequest(campaign=campaign), timeout=10)
        _emit(args, info, lambda: _campaign_text(info))
    elif args.action == "list":
        listed = admin.ListCampaigns(pb.ListCampaignsRequest(), timeout=10)
        _emit(args, listed, lambda: _campaign_table(admin, list(listed.campaign_ids)))
    elif args.action == "recycle":
        with cli_output.Progress() as progress:
            recycled = progress.wait(admin.RecycleExpired.future(
                pb.GetCampaignRequest(campaign_id=args.campaign_id), timeout=300),
                f"recycling the expired vouchers of {args.campaign_id}")
        _emit(args, recycled, lambda: cli_output.block(
            [("campaign", args.campaign_id), ("recycled", cli_output.number(recycled.recycled))]))
    elif args.action == "reshard":
        with cli_output.Progress() as progress:
            done = progress.wait(admin.Reshard.future(
                pb.ReshardRequest(campaign_id=args.campaign_id, shards=args.shards), timeout=args.timeout),
                f"resharding {args.campaign_id} to {args.shards} shards")
        _emit(args, done, lambda: _reshard_text(done))
    else:
        call = {"show": admin.GetCampaign, "pause": admin.PauseCampaign,
                "resume": admin.ResumeCampaign}[args.action]
        info = call(pb.GetCampaignRequest(campaign_id=args.campaign_id), timeout=10)
        _emit(args, info, lambda: _campaign_text(info))
    return 0


def cmd_merchant(args: argparse.Namespace) -> int:
    from claimcore.v1 import claims_pb2 as pb

    admin = _admin(args)
    if args.action == "register":
        merchant = admin.RegisterMerchant(pb.Merchant(
            campaign_id=args.campaign_id, merchant_id=args.merchant_id, name=args.name,
            category=args.category, region=args.region), timeout=10)
        if args.output == "json":
            _print(merchant)
        else:
            print(cli_output.block([("registered", merchant.merchant_id), ("campaign", merchant.campaign_id),
                                    ("name", merchant.name), ("category", merchant.category),
                                    ("region", merchant.region)]))
    else:
        listed = admin.ListMerchants(pb.GetCampaignRequest(campaign_id=args.campaign_id), timeout=10)
        if args.output == "json":
            _print(listed)
        elif not listed.merchants:
            print(f"no merchants registered for {args.campaign_id}")
        else:
            print(cli_output.table(["MERCHANT", "NAME", "CATEGORY", "REGION"],
                                   [(m.merchant_id, m.name, m.category, m.region) for m in listed.merchants]))
    return 0


def _channel_id(text: str) -> str:
    from claimcore import validation

    if not text or validation.CHANNEL_ID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"a channel id is 1 to 64 of [A-Za-z0-9._-], not {text!r}")
    return text


def _round(text: str) -> tuple[int, int]:
    at, _, amount = text.partition(":")
    if not (at.isdigit() and amount.isdigit()):
        raise argparse.ArgumentTypeError(f"a round is RELEASE_AT_MS:AMOUNT, not {text!r}")
    return int(at), int(amount)


def _flag(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "y"):
        return True
    if text.strip().lower() in ("", "0", "false", "no", "n"):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


ELIGIBILITY_BATCH = 10_000


def cmd_eligibility(args: argparse.Namespace) -> int:
    """Load a CSV of user_id,allowed,denied,region,tags(;-separated),remove in calls of 10,000."""
    import csv

    from claimcore.v1 import claims_pb2 as pb

    records = []
    try:
        with open(args.file, newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    if row.get("user_id") is None:
                        raise ValueError("no user_id column")
                    records.append(pb.EligibilityRecord(
                        user_id=row["user_id"], allowed=_flag(row.get("allowed") or ""),
                        denied=_flag(row.get("denied") or ""), region=row.get("region") or "",
                        tags=[t for t in (row.get("tags") or "").split(";") if t],
                        remove=_flag(row.get("remove") or "")))
                except ValueError as exc:
                    raise ValueError(f"{args.file} line {line}: {exc}") from None
    except OSError as exc:
        raise cli_output.CliError("FILE", f"{exc.strerror or exc}: {args.file}",
                                  cli_output.EXIT_USAGE) from None
    except (ValueError, csv.Error) as exc:
        raise cli_output.CliError("BAD_INPUT", str(exc), cli_output.EXIT_USAGE) from None
    admin = _admin(args)
    updated = 0
    calls = -(-len(records) // ELIGIBILITY_BATCH)
    with cli_output.Progress() as progress:
        for number, start in enumerate(range(0, len(records), ELIGIBILITY_BATCH), start=1):
            progress.update(f"eligibility of {args.campaign_id}: call {number}/{calls}, "
                            f"{start:,} of {len(records):,} records sent")
            try:
                updated += admin.UpdateEligibility(pb.UpdateEligibilityRequest(
                    campaign_id=args.campaign_id, records=records[start:start + ELIGIBILITY_BATCH]),
                    timeout=60).updated
            except grpc.RpcError as err:
                raise cli_output.from_rpc(err, f" (after {updated} records)") from None
    if args.output == "json":
        print(json.dumps({"campaign_id": args.campaign_id, "records": len(records), "updated": updated},
                         indent=2))
    else:
        print(f"claimcore eligibility load: {updated} records of {args.campaign_id} updated")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from claimcore.loadtest import demo, loadgen
    from claimcore.ops import dashboard, ledger_cli

    parser = _Parser(prog="claimcore", description=__doc__, epilog="exit codes: 0 ok; 1 the node refused "
                     "or a check failed; 2 bad usage, input or file; 3 no node reachable (docs/cli.md)")
    parser.add_argument("--version", action="version", version=f"claimcore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="config file (env CLAIMCORE_CONFIG; default ~/.config/claimcore/config.toml)")
    parser.add_argument("--log-format", choices=["text", "json"], default=None,
                        help="log lines as text or JSON (env CLAIMCORE_LOG_FORMAT, config log_format; "
                             "default text)")
    general, node, output = _general_options(), _node_options(), _output_options()
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a front node")
    serve.add_argument("--redis",
                       help="Redis URL (redis://host:port/db); default: start a private redis-server")
    serve.add_argument("--redis-cluster", metavar="HOST:PORT,...",
                       help="run on a Redis Cluster, given a few of its nodes")
    serve.add_argument("--replica-acks", type=int, default=0, metavar="N",
                       help="with --redis-cluster: a grant is answered only once N replicas have it "
                            "(WAIT); else UNAVAILABLE, outcome unknown (see docs/cluster.md)")
    serve.add_argument("--replica-timeout-ms", type=int, default=200, metavar="T",
                       help="how long each master's WAIT for --replica-acks may take")
    serve.add_argument("--verifier-url", default="", metavar="URL",
                       help="ask this external verifier (HTTP POST, JSON) before each redemption "
                            "(docs/redemption.md)")
    serve.add_argument("--verifier-timeout-ms", type=int, default=300,
                       help="past it, the redemption is answered VERIFICATION_UNAVAILABLE")
    serve.add_argument("--recycle-every-s", type=float, default=60.0,
                       help="give expired unused vouchers' stock back this often (0 = never)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    serve.add_argument("--appendfsync", choices=["everysec", "always"], default="everysec",
                       help="durability of the private redis-server (see docs/architecture.md)")
    serve.add_argument("--max-batch", type=int, default=256, help="claims per Lua call, at most")
    serve.add_argument("--max-queued", type=int, default=50_000,
                       help="claims queued on the node before it sheds with RESOURCE_EXHAUSTED")
    serve.add_argument("--linger-ms", type=float, default=2.0,
                       help="wait before each Redis round trip so claims share it (latency for CPU)")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on SIGTERM")
    serve.add_argument("--metrics-port", type=int, default=-1, metavar="N",
                       help="serve Prometheus metrics at http://HOST:N/metrics (0 picks a free port; "
                            "default -1: off; docs/metrics.md)")
    serve.add_argument("--trace-file", metavar="PATH", default=None,
                       help="OpenTelemetry tracing: append claim and Redis flush spans to PATH as JSON "
                            "lines (env CLAIMCORE_TRACE_FILE; needs claimcore[tracing]; docs/metrics.md)")
    security = serve.add_argument_group("security (docs/security.md): TLS, or --plaintext; "
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
    serve.set_defaults(func=cmd_serve)

    abuse = serve.add_argument_group("anti-scalper limits (docs/abuse-limits.md): claims per second "
                                     "per node, 0 = off; burst 0 = one second's worth")
    for kind in ("user", "device", "ip"):
        abuse.add_argument(f"--{kind}-rate", type=float, default=0.0, help=f"claims/s per {kind}")
        abuse.add_argument(f"--{kind}-burst", type=int, default=0)
    abuse.add_argument("--limit-capacity", type=int, default=300_000,
                       help="keys each table (users, devices, IPs) holds at most: bounds memory")
    abuse.add_argument("--deny-file", help="deny list: lines user:ID, device:ID, ip:ADDR or ip:CIDR")
    abuse.add_argument("--channel-quota", action="append", default=[], metavar="CHANNEL=RATE[:BURST]",
                       help="a channel's claims/s on this node (repeat); the credentials file's "
                            "claims_per_s win")

    keygen = sub.add_parser("keygen", parents=[general, output],
                            help="make an API key and its line for the credentials file")
    who = keygen.add_mutually_exclusive_group(required=True)
    who.add_argument("--channel", type=_channel_id, help="the channel id the key is for")
    who.add_argument("--admin", action="store_true", help="an admin key")
    keygen.set_defaults(func=cmd_keygen)

    demo_parser = sub.add_parser("demo", help="run a launch-second burst end to end and report")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.run)

    dashboard.add_arguments(sub.add_parser("dashboard", help="show a launch live on a big screen "
                                                             "(docs/dashboard.md)"))

    loadgen_parser = sub.add_parser("loadgen", help="replay a launch against running nodes, check and report")
    loadgen.add_arguments(loadgen_parser)
    access.add_arguments(loadgen_parser)
    loadgen_parser.set_defaults(func=loadgen.run, reaches_node=True)

    # The node's settings (--target, --api-key, --tls-*, ...) and --json are taken before the action
    # (`campaign --target X list`) and after it (`campaign list --target X`): both parsers know them.
    common = [general, node, output]
    merchant = sub.add_parser("merchant", aliases=["merchants"], parents=common,
                              help="register and list the merchants of a campaign")
    merchant_actions = merchant.add_subparsers(dest="action", required=True)
    register = merchant_actions.add_parser("register", parents=common, help="let a merchant redeem")
    register.add_argument("campaign_id")
    register.add_argument("merchant_id")
    register.add_argument("--name", default="")
    register.add_argument("--category", default="")
    register.add_argument("--region", default="")
    merchant_actions.add_parser("list", parents=common, help="a table of the campaign's merchants"
                                ).add_argument("campaign_id")
    merchant.set_defaults(func=cmd_merchant, reaches_node=True)

    elig = sub.add_parser("eligibility", parents=common,
                          help="load or change users' eligibility for a campaign")
    elig_actions = elig.add_subparsers(dest="action", required=True)
    load = elig_actions.add_parser("load", parents=common,
                                   help="CSV columns: user_id,allowed,denied,region,tags,remove "
                                        "(tags separated by ';'; flags 1/0)")
    load.add_argument("campaign_id")
    load.add_argument("file")
    elig.set_defaults(func=cmd_eligibility, reaches_node=True)

    export = sub.add_parser("export", parents=[general, node],
                            help="write a campaign's ledger events as CSV or JSON lines")
    ledger_cli.add_export_arguments(export)
    export.set_defaults(func=ledger_cli.run_export, reaches_node=True)
    reconcile = sub.add_parser("reconcile", parents=common,
                               help="check a campaign's live figures against its ledger "
                                    "(exit 1: differences)")
    ledger_cli.add_reconcile_arguments(reconcile)
    reconcile.set_defaults(func=ledger_cli.run_reconcile, reaches_node=True)

    camp = sub.add_parser("campaign", parents=common, help="administer campaigns through a node")
    actions = camp.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=common, help="create a campaign (idempotent)")
    create.add_argument("campaign_id")
    create.add_argument("--inventory", type=int, required=True)
    create.add_argument("--shards", type=int, default=0)
    create.add_argument("--per-user-limit", type=int, default=1)
    create.add_argument("--starts-at-ms", type=int, default=0)
    create.add_argument("--ends-at-ms", type=int, default=0)
    create.add_argument("--admission-rate", type=int, default=0)
    create.add_argument("--value-cents", type=int, default=0)
    create.add_argument("--min-spend-cents", type=int, default=0)
    create.add_argument("--category", default="")
    create.add_argument("--name", default="")
    create.add_argument("--valid-for-ms", type=int, default=0, help="voucher validity from grant; 0 = none")
    create.add_argument("--max-vouchers-per-order", type=int, default=1, help="stacking within the campaign")
    create.add_argument("--region", action="append", default=[],
                        help="a region whose merchants may redeem (repeat; none = all)")
    create.add_argument("--round", action="append", default=[], metavar="RELEASE_AT_MS:AMOUNT", type=_round,
                        help="a later round holding back AMOUNT until RELEASE_AT_MS (repeat)")
    create.add_argument("--allow-list", action="store_true", help="only users on the allow list may claim")
    create.add_argument("--stackable", action="store_true",
                        help="its vouchers may share an order with other stackable campaigns' vouchers")
    create.add_argument("--one-per-category", action="store_true",
                        help="a user may hold vouchers of one such campaign of the category")
    create.add_argument("--resident-region", action="append", default=[],
                        help="users must reside in one of these regions (repeat)")
    create.add_argument("--channel", action="append", default=[], type=_channel_id,
                        help="a channel that may claim it (repeat; none = every channel)")
    create.add_argument("--required-tag", action="append", default=[], help="users must carry it (repeat)")
    for action, what in (("show", "its figures and per-shard table"), ("pause", "stop grants at once"),
                         ("resume", "restart grants"),
                         ("recycle", "give expired unused vouchers' stock back")):
        actions.add_parser(action, parents=common, help=what).add_argument("campaign_id")
    reshard = actions.add_parser("reshard", parents=common,
                                 help="change a live campaign's shard count (docs/resharding.md)")
    reshard.add_argument("campaign_id")
    reshard.add_argument("--shards", type=int, required=True, help="the new shard count")
    reshard.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for it to finish")
    actions.add_parser("list", parents=common, help="one row per campaign")
    camp.set_defaults(func=cmd_campaign, reaches_node=True)
    return parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, `claimcore <command>: USAGE: <details>`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(cli_output.EXIT_USAGE,
                  f"{self.prog}: USAGE: {cli_output.one_line(message)} (see {self.prog} --help)\n")


def _general_options() -> argparse.ArgumentParser:
    """--config and --log-format, also after the command (`default=SUPPRESS`: not given = not set)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings: flags, else the environment, else the config file "
                                      "(docs/cli.md)")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="config file (env CLAIMCORE_CONFIG; default ~/.config/claimcore/config.toml)")
    group.add_argument("--log-format", choices=["text", "json"], default=argparse.SUPPRESS,
                       help="log lines as text or JSON (env CLAIMCORE_LOG_FORMAT, config log_format)")
    return parent


def _node_options() -> argparse.ArgumentParser:
    """How to reach the node: given before or after the action, so none of them has a default here."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("reaching the node (flags, else the environment, else the config file)")
    group.add_argument("--target", metavar="HOST:PORT", default=argparse.SUPPRESS,
                       help="a node (env CLAIMCORE_TARGET, config target; default 127.0.0.1:50051)")
    group.add_argument("--api-key", default=argparse.SUPPRESS,
                       help="the caller's API key (env CLAIMCORE_API_KEY, config api_key)")
    group.add_argument("--tls-ca", default=argparse.SUPPRESS,
                       help="dial with TLS, trusting these PEM roots (env CLAIMCORE_TLS_CA, config tls_ca); "
                            "else plaintext")
    group.add_argument("--tls-cert", default=argparse.SUPPRESS,
                       help="client certificate for mutual TLS (env CLAIMCORE_TLS_CERT, config tls_cert)")
    group.add_argument("--tls-key", default=argparse.SUPPRESS,
                       help="its private key (env CLAIMCORE_TLS_KEY, config tls_key)")
    group.add_argument("--connect-timeout", type=float, metavar="SECONDS", default=argparse.SUPPRESS,
                       help=f"give up (exit 3) if no node answers this soon (default {CONNECT_TIMEOUT_S:g})")
    return parent


def _output_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--json", dest="output", action="store_const", const="json",
                        default=argparse.SUPPRESS, help="print JSON for scripts (same as --output json)")
    choice.add_argument("--output", choices=["table", "json"], default=argparse.SUPPRESS,
                        help="tables for people (default) or JSON (env CLAIMCORE_OUTPUT, config output)")
    return parent


def _configure_logging(fmt: str, level: int) -> None:
    try:
        from claimcore.node import logs
    except ModuleNotFoundError as exc:  # claimcore.node.logs not there yet: plain text logs
        if exc.name != "claimcore.node.logs":
            raise
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    logs.configure(fmt, level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
    try:
        config = cli_config.load(getattr(args, "config", None))
        settings = cli_config.resolve({key: getattr(args, key, None) for key in cli_config.DEFAULTS}, config)
    except cli_config.ConfigError as exc:
        return cli_output.report(command, exc.code, str(exc), cli_output.EXIT_USAGE)
    _configure_logging(settings.log_format, logging.INFO if args.verbose else logging.WARNING)
    args.output, args.sources = settings.output, settings.sources
    if getattr(args, "reaches_node", False):  # a command that calls nodes
        args.target = settings.target
        if getattr(args, "connect_timeout", None) is None:
            args.connect_timeout = CONNECT_TIMEOUT_S
        for key in ("api_key", "tls_ca", "tls_cert", "tls_key"):
            setattr(args, key, getattr(settings, key))
        try:
            reach = access.from_args(args)
            reach.check()
        except ValueError as exc:
            code = "FILE" if str(exc).startswith("TLS file") else "USAGE"
            return cli_output.report(command, code, str(exc), cli_output.EXIT_USAGE)
        access.configure(reach)
    try:
        return int(args.func(args) or 0)
    except cli_output.CliError as exc:
        return cli_output.report(command, exc.code, exc.details, exc.exit_code)
    except grpc.RpcError as err:
        failure = cli_output.from_rpc(err)
        return cli_output.report(command, failure.code, failure.details, failure.exit_code)
