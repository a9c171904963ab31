"""The `claimcore` command: serve, demo, loadgen, campaign administration, ledger export and reconcile."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import grpc
from google.protobuf import json_format

from claimcore import __version__, access


def cmd_serve(args: argparse.Namespace) -> int:
    import uvloop

    from claimcore.embedded_redis import EmbeddedRedis, RedisServerMissing
    from claimcore.server import NodeOptions, run_node

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
        from claimcore.auth import CredentialsError, load_credentials

        try:
            credentials = load_credentials(args.credentials)
        except CredentialsError as exc:
            print(f"claimcore serve: {exc}", file=sys.stderr)
            return 2
    from claimcore.limits import LimitSettings, parse_channel_quota

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
        credentials=credentials, limits=limits,
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


def _admin(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from claimcore.v1 import claims_pb2_grpc as pb_grpc

    return pb_grpc.AdminServiceStub(access.dial(args.target))


def cmd_keygen(args: argparse.Namespace) -> int:
    """A new API key, and the line that lets it in (the file keeps only its digest)."""
    from claimcore.auth import digest_line, new_key

    key = new_key()
    section = "[admin]" if args.admin else f"[channels.{args.channel}]"
    print(f"# the key: give it to its holder, keep it secret (CLAIMCORE_API_KEY or --api-key)\n{key}\n"
          f"# for the credentials file, under {section}:\nkeys = [\"{digest_line(key)}\"]")
    return 0


def _print(message) -> None:  # type: ignore[no-untyped-def]
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2))


def cmd_campaign(args: argparse.Namespace) -> int:
    from claimcore.v1 import claims_pb2 as pb

    admin = _admin(args)
    try:
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
            _print(admin.CreateCampaign(pb.CreateCampaignRequest(campaign=campaign), timeout=10))
        elif args.action == "list":
            _print(admin.ListCampaigns(pb.ListCampaignsRequest(), timeout=10))
        elif args.action == "recycle":
            _print(admin.RecycleExpired(pb.GetCampaignRequest(campaign_id=args.campaign_id), timeout=300))
        elif args.action == "reshard":
            _print(admin.Reshard(pb.ReshardRequest(campaign_id=args.campaign_id, shards=args.shards),
                                 timeout=args.timeout))
        else:
            call = {"show": admin.GetCampaign, "pause": admin.PauseCampaign,
                    "resume": admin.ResumeCampaign}[args.action]
            _print(call(pb.GetCampaignRequest(campaign_id=args.campaign_id), timeout=10))
    except grpc.RpcError as err:
        print(f"claimcore campaign {args.action}: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    return 0


def cmd_merchant(args: argparse.Namespace) -> int:
    from claimcore.v1 import claims_pb2 as pb

    admin = _admin(args)
    try:
        if args.action == "register":
            _print(admin.RegisterMerchant(pb.Merchant(
                campaign_id=args.campaign_id, merchant_id=args.merchant_id, name=args.name,
                category=args.category, region=args.region), timeout=10))
        else:
            _print(admin.ListMerchants(pb.GetCampaignRequest(campaign_id=args.campaign_id), timeout=10))
    except grpc.RpcError as err:
        print(f"claimcore merchant {args.action}: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
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


def cmd_eligibility(args: argparse.Namespace) -> int:
    """Load a CSV of user_id,allowed,denied,region,tags(;-separated),remove in calls of 10,000."""
    import csv

    from claimcore.v1 import claims_pb2 as pb

    records = []
    try:
        with open(args.file, newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    records.append(pb.EligibilityRecord(
                        user_id=row["user_id"], allowed=_flag(row.get("allowed") or ""),
                        denied=_flag(row.get("denied") or ""), region=row.get("region") or "",
                        tags=[t for t in (row.get("tags") or "").split(";") if t],
                        remove=_flag(row.get("remove") or "")))
                except (KeyError, ValueError) as exc:
                    raise ValueError(f"{args.file} line {line}: {exc}") from None
    except (OSError, ValueError) as exc:
        print(f"claimcore eligibility load: {exc}", file=sys.stderr)
        return 2
    admin = _admin(args)
    updated = 0
    try:
        for start in range(0, len(records), 10_000):
            updated += admin.UpdateEligibility(pb.UpdateEligibilityRequest(
                campaign_id=args.campaign_id, records=records[start:start + 10_000]), timeout=60).updated
    except grpc.RpcError as err:
        print(f"claimcore eligibility load: {err.code().name}: {err.details()} "
              f"(after {updated} records)", file=sys.stderr)
        return 1
    print(f"claimcore eligibility load: {updated} records of {args.campaign_id} updated")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from claimcore import demo, ledger_cli, loadgen

    parser = argparse.ArgumentParser(prog="claimcore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"claimcore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
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

    keygen = sub.add_parser("keygen", help="make an API key and its line for the credentials file")
    who = keygen.add_mutually_exclusive_group(required=True)
    who.add_argument("--channel", type=_channel_id, help="the channel id the key is for")
    who.add_argument("--admin", action="store_true", help="an admin key")
    keygen.set_defaults(func=cmd_keygen)

    demo_parser = sub.add_parser("demo", help="run a launch-second burst end to end and report")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.run)

    loadgen_parser = sub.add_parser("loadgen", help="replay a launch against running nodes, check and report")
    loadgen.add_arguments(loadgen_parser)
    access.add_arguments(loadgen_parser)
    loadgen_parser.set_defaults(func=loadgen.run)

    merchant = sub.add_parser("merchant", help="register and list the merchants of a campaign")
    merchant.add_argument("--target", default="127.0.0.1:50051", help="a node's host:port")
    merchant_actions = merchant.add_subparsers(dest="action", required=True)
    register = merchant_actions.add_parser("register")
    register.add_argument("campaign_id")
    register.add_argument("merchant_id")
    register.add_argument("--name", default="")
    register.add_argument("--category", default="")
    register.add_argument("--region", default="")
    merchant_actions.add_parser("list").add_argument("campaign_id")
    access.add_arguments(merchant)
    merchant.set_defaults(func=cmd_merchant)

    elig = sub.add_parser("eligibility", help="load or change users' eligibility for a campaign")
    elig.add_argument("--target", default="127.0.0.1:50051", help="a node's host:port")
    elig_actions = elig.add_subparsers(dest="action", required=True)
    load = elig_actions.add_parser("load", help="CSV columns: user_id,allowed,denied,region,tags,remove "
                                                "(tags separated by ';'; flags 1/0)")
    load.add_argument("campaign_id")
    load.add_argument("file")
    access.add_arguments(elig)
    elig.set_defaults(func=cmd_eligibility)

    export = sub.add_parser("export", help="write a campaign's ledger events as CSV or JSON lines")
    ledger_cli.add_export_arguments(export)
    access.add_arguments(export)
    export.set_defaults(func=ledger_cli.run_export)
    reconcile = sub.add_parser("reconcile", help="check a campaign's live figures against its ledger")
    ledger_cli.add_reconcile_arguments(reconcile)
    access.add_arguments(reconcile)
    reconcile.set_defaults(func=ledger_cli.run_reconcile)

    camp = sub.add_parser("campaign", help="administer campaigns through a node")
    camp.add_argument("--target", default="127.0.0.1:50051", help="a node's host:port")
    actions = camp.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create")
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
    for action in ("show", "pause", "resume", "recycle"):
        actions.add_parser(action).add_argument("campaign_id")
    reshard = actions.add_parser("reshard", help="change a live campaign's shard count (docs/resharding.md)")
    reshard.add_argument("campaign_id")
    reshard.add_argument("--shards", type=int, required=True, help="the new shard count")
    reshard.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for it to finish")
    actions.add_parser("list")
    access.add_arguments(camp)
    camp.set_defaults(func=cmd_campaign)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if hasattr(args, "api_key"):  # a command that calls nodes
        try:
            reach = access.from_args(args)
            reach.check()
        except ValueError as exc:
            print(f"claimcore {args.command}: {exc}", file=sys.stderr)
            return 2
        access.configure(reach)
    return int(args.func(args) or 0)
