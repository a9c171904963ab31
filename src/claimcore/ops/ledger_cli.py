"""`claimcore export` and `claimcore reconcile`: the ledger for the central platform.

export writes a campaign's events (docs/ledger.md) as CSV or JSON lines,
page by page through AdminService.ExportEvents. With --cursor-file it
resumes from the saved cursor and saves the new one after every page, so
an export run every minute hands over each event once. If it is stopped
between writing a page and saving the cursor, that page comes again on the
next run: event_id is unique and stable, so the receiver can drop repeats.

reconcile asks a node to recompute the figures from the ledger and compare
them with the live counters; it prints them and exits 1 on any difference.
Failed calls exit as every command does (docs/cli.md): 1 refused, 3 no node.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import IO, Any

import grpc

from claimcore.ops import cli_output
from claimcore.ops.cli_output import CliError
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

COLUMNS = [f.name for f in pb.Event.DESCRIPTOR.fields]


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("campaign_id", help="the campaign")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--since", default="", metavar="CURSOR", help="continue after this cursor")
    start.add_argument("--cursor-file", metavar="PATH",
                       help="resume from the cursor saved here, and save the new one after each page")
    parser.add_argument("--format", choices=["csv", "jsonl"], default="jsonl",
                        help="CSV with a header line, or one JSON object per line")
    parser.add_argument("--out", metavar="PATH", help="append to this file (default: standard output)")
    parser.add_argument("--page", type=int, default=1000, help="ledger entries per call, 1..10000")
    parser.add_argument("--order", choices=["shard", "time"], default="shard",
                        help="shard by shard, or every shard's events merged into one time order "
                             "(the cursor works with either)")


def run_export(args: argparse.Namespace) -> int:
    cursor = args.since
    try:
        if args.cursor_file and Path(args.cursor_file).exists():
            cursor = Path(args.cursor_file).read_text().strip()
        out: IO[str] = open(args.out, "a", newline="") if args.out else sys.stdout  # noqa: SIM115
    except OSError as exc:
        raise CliError("FILE", f"{exc.strerror or exc}: {exc.filename}", cli_output.EXIT_USAGE) from None
    exported = pages = 0
    try:
        writer = csv.DictWriter(out, COLUMNS) if args.format == "csv" else None
        if writer is not None and (not args.out or out.tell() == 0):
            writer.writeheader()
        with cli_output.reach(args) as channel, cli_output.Progress() as progress:
            admin = pb_grpc.AdminServiceStub(channel)
            while True:
                reply = admin.ExportEvents(pb.ExportEventsRequest(
                    campaign_id=args.campaign_id, cursor=cursor, limit=args.page,
                    time_order=args.order == "time"), timeout=60)
                for event in reply.events:
                    row = cli_output.message_json(event)  # every field, numbers as numbers
                    if writer is not None:
                        writer.writerow(csv_row(row))
                    else:
                        out.write(json.dumps(row, separators=(",", ":")) + "\n")
                out.flush()
                exported += len(reply.events)
                pages += 1
                cursor = reply.next_cursor
                if args.cursor_file:
                    _save(Path(args.cursor_file), cursor)
                progress.update(f"export of {args.campaign_id}: {exported:,} events, {pages:,} pages")
                if not reply.more:
                    break
    except grpc.RpcError as err:
        raise cli_output.from_rpc(err, f" (after {exported} events)") from None
    except OSError as exc:
        raise CliError("FILE", f"{exc.strerror or exc}: {exc.filename or args.out or 'standard output'}",
                       cli_output.EXIT_USAGE) from None
    finally:
        if args.out:
            out.close()
    print(f"claimcore export: {exported} events; next cursor {cursor}", file=sys.stderr)
    return 0


# Serial numbers are [A-Za-z0-9._-] (claimcore.validation), so this separator needs no escaping.
CSV_LIST_SEPARATOR = ";"


def csv_row(row: dict[str, Any]) -> dict[str, str | int]:
    """An event's JSON fields as CSV cells: booleans as JSON writes them (true, false), lists joined
    by CSV_LIST_SEPARATOR (an empty one as an empty cell), never a Python repr."""
    out: dict[str, str | int] = {}
    for name, value in row.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list):
            out[name] = CSV_LIST_SEPARATOR.join(str(item) for item in value)
        else:
            out[name] = value
    return out


def _save(path: Path, cursor: str) -> None:
    """Write the cursor so that a crash leaves the old one or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(cursor + "\n")
    os.replace(tmp, path)


# The figures a node compares, by the name it sends (a sentence for people) -> the stable id --json keys
# them by. The per-shard figures ("granted on shard N") go in a list of their own.
CHECK_IDS = {
    "granted": "granted",
    "distinct vouchers": "distinct_vouchers",
    "grant records (user, request_id)": "grant_records",
    "users holding vouchers": "users_holding_vouchers",
    "vouchers held by users": "vouchers_held_by_users",
    "users over the per-user limit": "users_over_per_user_limit",
    "stock left (not counting rounds held back)": "stock_left",
    "vouchers recycled (expired or released)": "vouchers_recycled",
    "vouchers recycled more than once": "vouchers_recycled_twice",
    "recycled vouchers that were never granted": "recycled_never_granted",
    "vouchers redeemed (not reversed)": "vouchers_redeemed",
    "redeemed voucher records": "redeemed_voucher_records",
    "subsidy of redeemed vouchers, cents": "subsidy_cents",
    "redeemed vouchers that were never granted": "redeemed_never_granted",
    "vouchers in two unreversed orders": "vouchers_in_two_orders",
    "vouchers both redeemed and recycled": "redeemed_and_recycled",
}
SHARD_FIGURE = re.compile(r"granted on shard (\d+)")


def check_id(name: str) -> str:
    """The stable id of a figure (granted_on_shard_N for a shard's); one a newer node sends and this CLI
    does not know: its name, slugged."""
    return CHECK_IDS.get(name) or re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def reconcile_json(campaign_id: str, reply: pb.ReconcileResponse) -> dict[str, object]:
    """reconcile --json: the checks keyed by stable id, the per-shard grant counts as a list."""
    checks: dict[str, object] = {}
    shards: list[object] = []
    for f in reply.figures:
        figure = {"ok": f.ok, "from_ledger": f.from_ledger, "live": f.live, "label": f.name}
        shard = SHARD_FIGURE.fullmatch(f.name)
        if shard:
            shards.append({"shard": int(shard.group(1)), **figure})
        else:
            checks[check_id(f.name)] = figure
    differ = [check_id(f.name) for f in reply.figures if not f.ok]
    return {"campaign_id": campaign_id, "ok": reply.ok, "events": reply.events, "differences": differ,
            "checks": checks, "shards": shards}


def add_reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("campaign_id", help="the campaign")


def run_reconcile(args: argparse.Namespace) -> int:
    with cli_output.reach(args) as channel, cli_output.Progress() as progress:
        reply = progress.wait(pb_grpc.AdminServiceStub(channel).Reconcile.future(
            pb.ReconcileRequest(campaign_id=args.campaign_id), timeout=300),
            f"reconciling {args.campaign_id} against its ledger")
    if args.output == "json":
        cli_output.print_json(reconcile_json(args.campaign_id, reply))
    else:
        width = max((len(f.name) for f in reply.figures), default=6)
        print(f"{'figure':{width}}  {'ledger':>12}  {'live':>12}")
        for f in reply.figures:
            print(f"{f.name:{width}}  {f.from_ledger:12,}  {f.live:12,}  {'ok' if f.ok else 'DIFFERENT'}")
        print(f"{reply.events:,} events read; {'no difference' if reply.ok else 'DIFFERENCES FOUND'}")
    if reply.ok:
        return cli_output.EXIT_OK
    differ = [f.name for f in reply.figures if not f.ok]
    cli_output.report("reconcile", "DIFFERENCES", f"{len(differ)} figures of {args.campaign_id} differ from "
                      f"the ledger: {', '.join(differ)}", cli_output.EXIT_REFUSED)
    return cli_output.EXIT_REFUSED
