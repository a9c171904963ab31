"""The administration commands: `claimcore campaign`, `merchant` and `eligibility` (calls to a node's
AdminService), and `keygen` (a new API key; no node needed).

Each command is a pair, add_<command>_arguments(parser, ...) and run_<command>(args), which cli.py puts
in its table of commands (as ledger_cli.py does for export and reconcile). Replies print as text for
people, or with --json as the reply message in JSON; output and exit codes: docs/cli.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from claimcore import validation
from claimcore.lifecycle import eligibility
from claimcore.ops import cli_output
from claimcore.security.auth import digest_line, new_key
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

Parents = Sequence[argparse.ArgumentParser]  # the node's settings and --json, known after each action too


# ---------------------------------------------------------------- shared


def _admin(args: argparse.Namespace) -> pb_grpc.AdminServiceStub:
    return pb_grpc.AdminServiceStub(cli_output.reach(args))


def _print(message: Message) -> None:
    """The --json output of a reply: every field, numbers as numbers (docs/cli.md, "JSON")."""
    cli_output.print_json(cli_output.message_json(message))


def _emit(args: argparse.Namespace, value: Message | dict[str, Any], text: Callable[[], str]) -> None:
    """The reply (or a dict made of it) as JSON with --json, else the human-readable text."""
    if args.output == "json":
        cli_output.print_json(cli_output.message_json(value) if isinstance(value, Message) else value)
    else:
        print(text())


def _info_json(info: pb.CampaignInfo) -> dict[str, Any]:
    """A CampaignInfo for --json, with the status the text shows."""
    return {**cli_output.message_json(info), "status": _status(info, int(time.time() * 1000))}


def _channel_id(text: str) -> str:
    if not text or validation.CHANNEL_ID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"a channel id is 1 to 64 of [A-Za-z0-9._-], not {text!r}")
    return text


# ---------------------------------------------------------------- keygen


def add_keygen_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--channel", type=_channel_id, help="the channel id the key is for")
    who.add_argument("--admin", action="store_true", help="an admin key")


def run_keygen(args: argparse.Namespace) -> int:
    """A new API key, and the line that lets it in (the file keeps only its digest)."""
    key = new_key()
    section = "[admin]" if args.admin else f"[channels.{args.channel}]"
    line = f"keys = [\"{digest_line(key)}\"]"
    if args.output == "json":
        cli_output.print_json({"key": key, "section": section, "credentials_line": line})
        return 0
    print(f"# the key: give it to its holder, keep it secret (CLAIMCORE_API_KEY or --api-key)\n{key}\n"
          f"# for the credentials file, under {section}:\n{line}")
    return 0


# ---------------------------------------------------------------- campaign


def add_campaign_arguments(parser: argparse.ArgumentParser, parents: Parents) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=parents, help="create a campaign (idempotent)")
    create.add_argument("campaign_id", help="the campaign's id: 1 to 64 of [A-Za-z0-9._-]")
    create.add_argument("--inventory", type=int, required=True, help="vouchers to give out (required)")
    create.add_argument("--shards", type=int, default=0,
                        help="Redis shards to spread it over; 0 = the node's default")
    create.add_argument("--per-user-limit", type=int, default=1, help="vouchers one user may hold")
    create.add_argument("--starts-at", "--starts-at-ms", dest="starts_at_ms", type=cli_output.parse_time,
                        default=0, metavar="TIME",
                        help="when claims open: an ISO 8601 time with its zone (2026-12-12T10:00:00+08:00, "
                             "...Z) or unix ms; 0 = at once")
    create.add_argument("--ends-at", "--ends-at-ms", dest="ends_at_ms", type=cli_output.parse_time, default=0,
                        metavar="TIME", help="when claims close (as --starts-at); 0 = never")
    create.add_argument("--admission-rate", type=int, default=0,
                        help="claims per second each node admits; 0 = unlimited")
    create.add_argument("--value-cents", type=int, default=0, help="a voucher's face value, cents")
    create.add_argument("--min-spend-cents", type=int, default=0,
                        help="the least order amount a voucher may be redeemed on, cents")
    create.add_argument("--category", default="", help="e.g. appliances, dining; merchants must match it")
    create.add_argument("--name", default="", help="a name for people, up to 200 characters")
    create.add_argument("--valid-for-ms", type=int, default=0, help="voucher validity from grant; 0 = none")
    create.add_argument("--max-vouchers-per-order", type=int, default=1, help="stacking within the campaign")
    create.add_argument("--region", action="append", default=[],
                        help="a region whose merchants may redeem (repeat; none = all)")
    create.add_argument("--round", action="append", default=[], metavar="RELEASE_AT:AMOUNT", type=_round,
                        help="a later round holding back AMOUNT until RELEASE_AT, a time as --starts-at "
                             "(repeat)")
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
                         ("resume", "restart grants (not while archived)"),
                         ("archive", "take a paused, ended or sold-out campaign off the lists; "
                                     "its figures and ledger stay"),
                         ("unarchive", "put an archived campaign back in the lists"),
                         ("recycle", "give expired unused vouchers' stock back")):
        actions.add_parser(action, parents=parents, help=what).add_argument("campaign_id",
                                                                            help="the campaign")
    reshard = actions.add_parser("reshard", parents=parents,
                                 help="change a live campaign's shard count (docs/resharding.md)")
    reshard.add_argument("campaign_id", help="the campaign")
    reshard.add_argument("--shards", type=int, required=True, help="the new shard count")
    reshard.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for it to finish")
    listing = actions.add_parser("list", parents=parents, help="one row per campaign")
    listing.add_argument("--archived", action="store_true", help="archived campaigns too")


def _round(text: str) -> tuple[int, int]:
    """RELEASE_AT:AMOUNT; the time may hold colons itself (10:00:00+08:00), the amount never does."""
    at, _, amount = text.rpartition(":")
    if not (at and amount.isdigit()):
        raise argparse.ArgumentTypeError(f"a round is RELEASE_AT_MS:AMOUNT or ISO_TIME:AMOUNT (a time with "
                                         f"its zone), not {text!r}")
    return cli_output.parse_time(at), int(amount)


def _status(info: pb.CampaignInfo, now_ms: int) -> str:
    c = info.campaign
    if info.resharding:
        return "resharding"
    if info.archived:
        return "archived"
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


def _campaign_text(info: pb.CampaignInfo) -> str:
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


def _campaign_infos(admin: pb_grpc.AdminServiceStub, ids: list[str]) -> list[pb.CampaignInfo]:
    """Each campaign's figures, read with GetCampaign, many calls in flight at once."""
    infos = []
    for start in range(0, len(ids), 64):
        futures = [admin.GetCampaign.future(pb.GetCampaignRequest(campaign_id=cid), timeout=10)
                   for cid in ids[start:start + 64]]
        for future in futures:
            try:
                infos.append(future.result().campaign)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    raise  # NOT_FOUND: deleted since the list was read
    return infos


def _campaign_table(infos: list[pb.CampaignInfo]) -> str:
    """One row per campaign."""
    if not infos:
        return "no campaigns"
    now = int(time.time() * 1000)
    n = cli_output.number
    return cli_output.table(
        ["CAMPAIGN", "STATUS", "INVENTORY", "GRANTED", "REMAINING", "SHARDS", "SOLD OUT AT"],
        [(i.campaign.campaign_id, _status(i, now), n(i.campaign.inventory), n(i.granted), n(i.remaining),
          i.campaign.shards, cli_output.when(i.sold_out_at_ms)) for i in infos],
        right=(2, 3, 4, 5))


def _campaign_rows(infos: list[pb.CampaignInfo]) -> list[dict[str, Any]]:
    """`campaign list --json`: one flat object per campaign, with every column of the table and more."""
    now = int(time.time() * 1000)
    return [{"campaign_id": i.campaign.campaign_id, "name": i.campaign.name, "status": _status(i, now),
             "inventory": i.campaign.inventory, "granted": i.granted, "remaining": i.remaining,
             "held_for_rounds": i.held_for_rounds, "shards": i.campaign.shards, "shard_epoch": i.shard_epoch,
             "paused": i.paused, "archived": i.archived, "resharding": i.resharding,
             "starts_at_ms": i.campaign.starts_at_ms,
             "ends_at_ms": i.campaign.ends_at_ms, "sold_out_at_ms": i.sold_out_at_ms,
             "created_at_ms": i.created_at_ms} for i in infos]


def _reshard_text(reply: pb.ReshardResponse) -> str:
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


def run_campaign(args: argparse.Namespace) -> int:
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
        info = admin.CreateCampaign(pb.CreateCampaignRequest(campaign=campaign), timeout=10).campaign
        _emit(args, _info_json(info), lambda: _campaign_text(info))
    elif args.action == "list":
        listed = admin.ListCampaigns(pb.ListCampaignsRequest(include_archived=args.archived), timeout=10)
        infos = _campaign_infos(admin, list(listed.campaign_ids))
        _emit(args, {"campaign_ids": list(listed.campaign_ids), "campaigns": _campaign_rows(infos)},
              lambda: _campaign_table(infos))
    elif args.action == "recycle":
        with cli_output.Progress() as progress:
            recycled = progress.wait(admin.RecycleExpired.future(
                pb.RecycleExpiredRequest(campaign_id=args.campaign_id), timeout=300),
                f"recycling the expired vouchers of {args.campaign_id}")
        _emit(args, {"campaign_id": args.campaign_id, "recycled": recycled.recycled},
              lambda: cli_output.block([("campaign", args.campaign_id),
                                        ("recycled", cli_output.number(recycled.recycled))]))
    elif args.action == "reshard":
        with cli_output.Progress() as progress:
            done = progress.wait(admin.Reshard.future(
                pb.ReshardRequest(campaign_id=args.campaign_id, shards=args.shards), timeout=args.timeout),
                f"resharding {args.campaign_id} to {args.shards} shards")
        _emit(args, done, lambda: _reshard_text(done))
    else:
        call, request = {"show": (admin.GetCampaign, pb.GetCampaignRequest),
                         "pause": (admin.PauseCampaign, pb.PauseCampaignRequest),
                         "resume": (admin.ResumeCampaign, pb.ResumeCampaignRequest),
                         "archive": (admin.ArchiveCampaign, pb.ArchiveCampaignRequest),
                         "unarchive": (admin.UnarchiveCampaign, pb.UnarchiveCampaignRequest)}[args.action]
        info = call(request(campaign_id=args.campaign_id), timeout=10).campaign
        _emit(args, _info_json(info), lambda: _campaign_text(info))
    return 0


# ---------------------------------------------------------------- merchant


def add_merchant_arguments(parser: argparse.ArgumentParser, parents: Parents) -> None:
    merchant_actions = parser.add_subparsers(dest="action", required=True)
    register = merchant_actions.add_parser("register", parents=parents, help="let a merchant redeem")
    register.add_argument("campaign_id", help="the campaign")
    register.add_argument("merchant_id", help="the merchant's id: 1 to 128 of [A-Za-z0-9._:@+=-]")
    register.add_argument("--name", default="", help="a name for people")
    register.add_argument("--category", default="", help="must be the campaign's category, if it has one")
    register.add_argument("--region", default="",
                          help="must be one of the campaign's regions, if it lists any")
    merchant_actions.add_parser("list", parents=parents, help="a table of the campaign's merchants"
                                ).add_argument("campaign_id", help="the campaign")


def run_merchant(args: argparse.Namespace) -> int:
    admin = _admin(args)
    if args.action == "register":
        merchant = admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
            campaign_id=args.campaign_id, merchant_id=args.merchant_id, name=args.name,
            category=args.category, region=args.region)), timeout=10).merchant
        if args.output == "json":
            _print(merchant)
        else:
            print(cli_output.block([("registered", merchant.merchant_id), ("campaign", merchant.campaign_id),
                                    ("name", merchant.name), ("category", merchant.category),
                                    ("region", merchant.region)]))
    else:
        listed = admin.ListMerchants(pb.ListMerchantsRequest(campaign_id=args.campaign_id), timeout=10)
        if args.output == "json":
            _print(listed)
        elif not listed.merchants:
            print(f"no merchants registered for {args.campaign_id}")
        else:
            print(cli_output.table(["MERCHANT", "NAME", "CATEGORY", "REGION"],
                                   [(m.merchant_id, m.name, m.category, m.region) for m in listed.merchants]))
    return 0


# ---------------------------------------------------------------- eligibility


def add_eligibility_arguments(parser: argparse.ArgumentParser, parents: Parents) -> None:
    elig_actions = parser.add_subparsers(dest="action", required=True)
    load = elig_actions.add_parser("load", parents=parents,
                                   help="load users' eligibility from a CSV file (columns: "
                                        f"{','.join(eligibility.COLUMNS)})",
                                   description="Load users' eligibility for a campaign from a CSV file. The "
                                               "whole file is read and checked first\n(a bad line: exit 2, "
                                               "naming it), then sent in calls of 10,000 records.\n\n"
                                               + eligibility.COLUMNS_HELP)
    load.add_argument("campaign_id", help="the campaign")
    load.add_argument("file", help="the CSV file (columns above)")


ELIGIBILITY_BATCH = 10_000


def run_eligibility(args: argparse.Namespace) -> int:
    """Load a CSV of user_id,allowed,denied,region,tags(;-separated),remove in calls of 10,000."""
    try:
        with open(args.file, newline="", encoding="utf-8-sig") as handle:
            read = eligibility.read_csv(handle, args.file)
    except OSError as exc:
        raise cli_output.CliError("FILE", f"{exc.strerror or exc}: {args.file}",
                                  cli_output.EXIT_USAGE) from None
    except ValueError as exc:
        raise cli_output.CliError("BAD_INPUT", str(exc), cli_output.EXIT_USAGE) from None
    records = [pb.EligibilityRecord(user_id=r.user_id, allowed=r.allowed, denied=r.denied, region=r.region,
                                    tags=list(r.tags), remove=r.remove) for r in read]
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
        cli_output.print_json({"campaign_id": args.campaign_id, "records": len(records), "updated": updated})
    else:
        print(f"claimcore eligibility load: {updated} records of {args.campaign_id} updated")
    return 0
