"""`claimcore export` and `claimcore reconcile`: the ledger for the central platform.

export writes a campaign's events (docs/ledger.md) as CSV or JSON lines,
page by page through AdminService.ExportEvents. With --cursor-file it
resumes from the saved cursor and saves the new one after every page, so
an export run every minute hands over each event once. If it is stopped
between writing a page and saving the cursor, that page comes again on the
next run: event_id is unique and stable, so the receiver can drop repeats.

reconcile asks a node to recompute the figures from the ledger and compare
them with the live counters; it prints them and exits 1 on any difference
(2 if the call itself fails).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import IO

import grpc
from google.protobuf import json_format

from claimcore import access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

COLUMNS = [f.name for f in pb.Event.DESCRIPTOR.fields]


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("campaign_id")
    parser.add_argument("--target", default="127.0.0.1:50051", help="a node's host:port")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--since", default="", metavar="CURSOR", help="continue after this cursor")
    start.add_argument("--cursor-file", metavar="PATH",
                       help="resume from the cursor saved here, and save the new one after each page")
    parser.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
    parser.add_argument("--out", metavar="PATH", help="append to this file (default: standard output)")
    parser.add_argument("--page", type=int, default=1000, help="ledger entries per call, 1..10000")


def run_export(args: argparse.Namespace) -> int:
    cursor = args.since
    if args.cursor_file and Path(args.cursor_file).exists():
        cursor = Path(args.cursor_file).read_text().strip()
    out: IO[str] = open(args.out, "a", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        writer = csv.DictWriter(out, COLUMNS) if args.format == "csv" else None
        if writer is not None and (not args.out or out.tell() == 0):
            writer.writeheader()
        with access.dial(args.target) as channel:
            admin = pb_grpc.AdminServiceStub(channel)
            exported = 0
            while True:
                reply = admin.ExportEvents(pb.ExportEventsRequest(
                    campaign_id=args.campaign_id, cursor=cursor, limit=args.page), timeout=60)
                for event in reply.events:
                    row = json_format.MessageToDict(event, preserving_proto_field_name=True,
                                                    always_print_fields_with_no_presence=True)
                    row["at_ms"], row["shard"] = event.at_ms, event.shard  # numbers, not strings
                    if writer is not None:
                        writer.writerow(row)
                    else:
                        out.write(json.dumps(row, separators=(",", ":")) + "\n")
                out.flush()
                exported += len(reply.events)
                cursor = reply.next_cursor
                if args.cursor_file:
                    _save(Path(args.cursor_file), cursor)
                if not reply.more:
                    break
    except grpc.RpcError as err:
        print(f"claimcore export: {err.code().name}: {err.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 2
    finally:
        if args.out:
            out.close()
    print(f"claimcore export: {exported} events; next cursor {cursor}", file=sys.stderr)
    return 0


def _save(path: Path, cursor: str) -> None:
    """Write the cursor so that a crash leaves the old one or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(cursor + "\n")
    os.replace(tmp, path)


def add_reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("campaign_id")
    parser.add_argument("--target", default="127.0.0.1:50051", help="a node's host:port")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")


def run_reconcile(args: argparse.Namespace) -> int:
    try:
        with access.dial(args.target) as channel:
            reply = pb_grpc.AdminServiceStub(channel).Reconcile(
                pb.GetCampaignRequest(campaign_id=args.campaign_id), timeout=300)
    except grpc.RpcError as err:
        print(f"claimcore reconcile: {err.code().name}: {err.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 2
    if args.json:
        print(json_format.MessageToJson(reply, preserving_proto_field_name=True))
    else:
        width = max(len(f.name) for f in reply.figures)
        print(f"{'figure':{width}}  {'ledger':>12}  {'live':>12}")
        for f in reply.figures:
            print(f"{f.name:{width}}  {f.from_ledger:12,}  {f.live:12,}  {'ok' if f.ok else 'DIFFERENT'}")
        print(f"{reply.events:,} events read; {'no difference' if reply.ok else 'DIFFERENCES FOUND'}")
    return 0 if reply.ok else 1

