"""The ledger (issue 6): every grant logged by the script that made it; export and reconcile.

Through real gRPC and a real redis-server: an export paged while claims are
still being granted hands over each grant exactly once, a cursor file makes
the CLI export resumable, and reconcile finds no difference after a burst and
a reshard, but does find a counter that was tampered with.
"""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
import threading

import grpc
import pytest

from claimcore._fast import shard_of
from claimcore.lifecycle.ledger import event_position
from claimcore.store.keyspace import shard_keys
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import create_campaign
from support import burst, export_all


def test_export_paged_during_a_burst_hands_over_each_grant_once(node, admin, redis_client):
    inventory, users = 600, 900
    cid = create_campaign(admin, inventory=inventory, shards=4).campaign.campaign_id
    requests = [(f"u{i}", f"r{i}") for i in range(users)] + [(f"u{i}", f"r{i}") for i in range(0, users, 3)]
    results: list = []
    done = threading.Event()

    def claim_in_background() -> None:
        results.extend(asyncio.run(burst([node.address], cid, requests, clients=64)))
        done.set()

    thread = threading.Thread(target=claim_in_background)
    thread.start()
    exported: list[pb.Event] = []
    cursor, pages = "", 0
    while not done.is_set() or pages == 0:
        page, cursor = export_all(admin, cid, cursor, limit=2)  # tiny pages: many cursors
        exported += page
        pages += 1
    thread.join()
    rest, cursor = export_all(admin, cid, cursor)
    exported += rest
    again, _ = export_all(admin, cid, cursor)

    ids = [e.event_id for e in exported]
    assert len(ids) == len(set(ids)) == inventory and again == []
    granted = {(u, r): rep.voucher for u, r, rep in results if rep.outcome == pb.OUTCOME_GRANTED}
    assert {(e.user_id, e.request_id): e.voucher_id for e in exported} == {
        k: vch.voucher_id for k, vch in granted.items()}
    assert all(e.kind == "grant" and e.at_ms == granted[(e.user_id, e.request_id)].granted_at_ms
               for e in exported)
    # each shard's log says exactly what its grant records say
    for shard in range(4):
        reqs = redis_client.hgetall(shard_keys(cid, shard).reqs)
        logged = {f"{e.user_id}|{e.request_id}": f"{e.voucher_id}|{e.at_ms}|{e.channel_id}"
                  for e in exported if e.shard == shard}
        assert logged == reqs


def test_cli_export_resumes_from_its_cursor_file(node, admin, claims, tmp_path):
    cid = create_campaign(admin, inventory=50, shards=2).campaign.campaign_id

    def claim(n: int, offset: int) -> None:
        for i in range(offset, offset + n):
            claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"u{i}", request_id="r", channel_id="app"),
                         timeout=10)

    def export(fmt: str, out, cursor_file) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "claimcore", "export", cid, "--target", node.address,
                               "--format", fmt, "--out", str(out), "--cursor-file", str(cursor_file),
                               "--page", "3"], capture_output=True, text=True, timeout=60)

    claim(10, 0)
    first = export("csv", tmp_path / "e.csv", tmp_path / "csv.cursor")
    claim(7, 10)
    second = export("csv", tmp_path / "e.csv", tmp_path / "csv.cursor")
    third = export("csv", tmp_path / "e.csv", tmp_path / "csv.cursor")  # nothing new
    jsonl = export("jsonl", tmp_path / "e.jsonl", tmp_path / "jsonl.cursor")
    assert first.returncode == second.returncode == third.returncode == jsonl.returncode == 0, first.stderr
    assert "10 events" in first.stderr and "7 events" in second.stderr and "0 events" in third.stderr
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert sorted(r["user_id"] for r in rows) == sorted(f"u{i}" for i in range(17))
    assert len({r["event_id"] for r in rows}) == 17 and {r["channel_id"] for r in rows} == {"app"}
    lines = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert {(x["event_id"], x["voucher_id"], x["at_ms"]) for x in lines} == {
        (r["event_id"], r["voucher_id"], int(r["at_ms"])) for r in rows}


def test_reconcile_agrees_after_a_burst_and_a_reshard_and_finds_tampering(node, admin, redis_client):
    inventory = 400
    cid = create_campaign(admin, inventory=inventory, shards=3).campaign.campaign_id
    requests = [(f"u{i}", f"r{i}") for i in range(500)]
    asyncio.run(burst([node.address], cid, requests[:200]))
    admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=8), timeout=60)
    asyncio.run(burst([node.address], cid, requests[200:]))
    clean = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=60)
    cli = [sys.executable, "-m", "claimcore", "reconcile", cid, "--target", node.address]
    clean_cli = subprocess.run(cli, capture_output=True, text=True, timeout=60)

    redis_client.hincrby(shard_keys(cid, 1).state, "granted", 1)  # a counter gone wrong
    dirty = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=60)
    dirty_cli = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    redis_client.hincrby(shard_keys(cid, 1).state, "granted", -1)

    assert clean.ok and clean.events == inventory and all(f.ok for f in clean.figures)
    assert clean_cli.returncode == 0 and "no difference" in clean_cli.stdout
    wrong = {f.name: (f.from_ledger, f.live) for f in dirty.figures if not f.ok}
    granted_1 = next(f.from_ledger for f in clean.figures if f.name == "granted on shard 1")
    assert wrong == {"granted on shard 1": (granted_1, granted_1 + 1), "granted": (inventory, inventory + 1)}
    assert dirty_cli.returncode == 1 and "DIFFERENT" in dirty_cli.stdout


@pytest.mark.parametrize(("cursor", "limit"),
                         [("garbage", 10), ("v1.bm90IGpzb24", 10), ("", 10_001), ("", -1)])
def test_bad_export_requests_are_refused(admin, cursor, limit):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
    with pytest.raises(grpc.RpcError) as err:
        admin.ExportEvents(pb.ExportEventsRequest(campaign_id=cid, cursor=cursor, limit=limit), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_export_names_a_bad_cursor(node, admin):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
    run = subprocess.run([sys.executable, "-m", "claimcore", "export", cid, "--target", node.address,
                          "--since", "nonsense"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "INVALID_ARGUMENT" in run.stderr and "cursor" in run.stderr


def test_reconcile_replays_each_voucher_in_time_order_across_a_shrink(node, admin, claims):
    """Defect 12: the users of shard 3 redeem there; a shrink moves them to a lower shard; one had
    reversed before and redeems again after, two reverse after. Reconcile agrees: each voucher's
    events count in the order they happened, not shard by shard (which got both kinds wrong)."""
    cid = create_campaign(admin, inventory=8, shards=4, value_cents=500).campaign.campaign_id
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1")), timeout=10)
    redeem = pb_grpc.RedeemServiceStub(grpc.insecure_channel(node.address))
    again, *later = [u for u in (f"u{i}" for i in range(200)) if shard_of(u, 4) == 3][:3]

    def use(user: str, order: str) -> pb.RedeemResponse:
        return redeem.Redeem(pb.RedeemRequest(campaign_id=cid, user_id=user, voucher_ids=[vouchers[user]],
                                              merchant_id="m1", order_id=order, order_amount_cents=100),
                             timeout=10)

    def reverse(user: str, order: str) -> pb.ReverseResponse:
        return redeem.Reverse(pb.ReverseRequest(campaign_id=cid, user_id=user, order_id=order), timeout=10)

    vouchers = {u: claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=u, request_id="r"),
                                timeout=10).voucher.voucher_id for u in (again, *later)}
    assert all(use(u, "o1").outcome == pb.REDEEM_OUTCOME_REDEEMED for u in vouchers)
    assert reverse(again, "o1").outcome == pb.REVERSE_OUTCOME_REVERSED
    shrunk = admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=2), timeout=60)
    assert shrunk.moved_users == 3
    assert use(again, "o2").outcome == pb.REDEEM_OUTCOME_REDEEMED  # its last event, on its new shard
    assert all(reverse(u, "o1").outcome == pb.REVERSE_OUTCOME_REVERSED for u in later)

    reply = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30)
    figures = {f.name: (f.from_ledger, f.live) for f in reply.figures}
    assert reply.ok, {name: pair for name, pair in figures.items() if pair[0] != pair[1]}
    assert figures["vouchers redeemed (not reversed)"] == (1, 1)
    assert reply.events == 3 + 3 + 1 + 1 + 2  # grants, redemptions, reversal, redemption, reversals


def _campaign_with_every_kind(node, admin, claims) -> tuple[str, int]:
    """Grants on 4 shards, claimed one after another; two redemptions (one with serial numbers),
    one reversal: (campaign id, events)."""
    cid = create_campaign(admin, inventory=40, shards=4, value_cents=500).campaign.campaign_id
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1")), timeout=10)
    redeem = pb_grpc.RedeemServiceStub(grpc.insecure_channel(node.address))
    vouchers = {f"u{i}": claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"u{i}", request_id="r"),
                                      timeout=10).voucher.voucher_id for i in range(24)}
    sns_of_u1 = [f"SN-{cid}", f"SN.{cid}"]  # serial numbers are subsidised once across campaigns
    for user, order, sns in (("u1", "o1", sns_of_u1), ("u2", "o2", [])):
        reply = redeem.Redeem(pb.RedeemRequest(campaign_id=cid, user_id=user, voucher_ids=[vouchers[user]],
                                               merchant_id="m1", order_id=order, order_amount_cents=900,
                                               sn_codes=sns), timeout=10)
        assert reply.outcome == pb.REDEEM_OUTCOME_REDEEMED
    assert redeem.Reverse(pb.ReverseRequest(campaign_id=cid, user_id="u2", order_id="o2"),
                          timeout=10).outcome == pb.REVERSE_OUTCOME_REVERSED
    return cid, 24 + 2 + 1


def test_export_in_time_order_merges_the_shards_and_keeps_each_event_once(node, admin, claims):
    cid, total = _campaign_with_every_kind(node, admin, claims)

    def pages(cursor: str, time_order: bool, limit: int, count: int) -> tuple[list[pb.Event], str]:
        events: list[pb.Event] = []
        for _ in range(count):
            reply = admin.ExportEvents(pb.ExportEventsRequest(campaign_id=cid, cursor=cursor, limit=limit,
                                                              time_order=time_order), timeout=10)
            events += reply.events
            cursor = reply.next_cursor
            if not reply.more:
                break
        return events, cursor

    by_shard, _ = pages("", False, 1000, 1)
    in_time, _ = pages("", True, 4, 100)  # small pages: the merge must continue across them
    # a cursor made shard by shard carries on in time order: the two together are each event once
    head, cursor = pages("", False, 5, 1)
    tail, _ = pages(cursor, True, 3, 100)

    ids = [e.event_id for e in by_shard]
    assert len(ids) == len(set(ids)) == total
    assert [e.event_id for e in in_time] == sorted(ids, key=event_position)
    assert [e.event_id for e in by_shard] != [e.event_id for e in in_time]  # the shards interleave
    assert sorted(e.event_id for e in head + tail) == sorted(ids)
    assert [e.kind for e in in_time][-3:] == ["redeem", "redeem", "reverse"]


def test_cli_export_writes_every_kind_with_one_type_per_field(node, admin, claims, tmp_path):
    cid, total = _campaign_with_every_kind(node, admin, claims)

    def export(fmt: str, *extra: str) -> str:
        run = subprocess.run([sys.executable, "-m", "claimcore", "export", cid, "--target", node.address,
                              "--format", fmt, "--page", "7", *extra],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout

    records = [json.loads(line) for line in export("jsonl", "--order", "time").splitlines()]
    assert len(records) == total
    types = {name: {type(r[name]) for r in records} for name in records[0]}
    assert all(len(kinds) == 1 for kinds in types.values()), types
    assert types["at_ms"] == {int} and types["returned"] == {bool} and types["sn_codes"] == {list}
    assert [r["at_ms"] for r in records] == sorted(r["at_ms"] for r in records)

    rows = {(r["kind"], r["user_id"]): r for r in csv.DictReader(export("csv").splitlines())}
    assert len(rows) == total  # one event per (kind, user)
    assert rows[("redeem", "u1")]["sn_codes"] == f"SN-{cid};SN.{cid}"
    assert rows[("redeem", "u2")]["sn_codes"] == ""
    assert rows[("reverse", "u2")]["returned"] == "true" and rows[("grant", "u3")]["returned"] == "false"
    assert rows[("grant", "u3")]["subsidy_cents"] == "0"
    assert not any(cell in ("False", "True", "[]") or cell.startswith("['")
                   for row in rows.values() for cell in row.values())


def test_cli_export_refuses_an_unknown_order_in_one_line(node, admin):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
    run = subprocess.run([sys.executable, "-m", "claimcore", "export", cid, "--target", node.address,
                          "--order", "chronological"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--order" in run.stderr and len(run.stderr.strip().splitlines()) <= 2
