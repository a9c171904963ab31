"""Recycling (issue 6): stock of expired unused vouchers and of vouchers given up comes back,
once each, with a ledger record; sold-out nodes reopen. Real gRPC, real redis-server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import grpc
import pytest

from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign
from support import export_all


@pytest.fixture
def redeem(channel) -> pb_grpc.RedeemServiceStub:
    return pb_grpc.RedeemServiceStub(channel)


def campaign(admin, **fields) -> str:
    cid = create_campaign(admin, shards=2, **fields).campaign.campaign_id
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1")), timeout=10)
    return cid


def claim(claims, cid: str, user: str, rid: str = "r") -> pb.ClaimResponse:
    return claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid), timeout=10)


def use(redeem, cid: str, user: str, voucher: str, order: str = "o") -> pb.RedeemResponse:
    return redeem.Redeem(pb.RedeemRequest(campaign_id=cid, user_id=user, voucher_ids=[voucher],
                                          merchant_id="m1", order_id=order, order_amount_cents=100),
                         timeout=10)


def give_up(redeem, cid: str, user: str, voucher: str) -> pb.ReleaseResponse:
    return redeem.Release(pb.ReleaseRequest(campaign_id=cid, user_id=user, voucher_id=voucher), timeout=10)


def remaining(admin, cid: str) -> int:
    return admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign.remaining


def reconciled(admin, cid: str) -> dict[str, int]:
    reply = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30)
    assert reply.ok, [(f.name, f.from_ledger, f.live) for f in reply.figures if not f.ok]
    return {f.name: f.live for f in reply.figures}


def test_a_voucher_given_up_goes_back_once_and_reopens_a_sold_out_campaign(admin, claims, redeem):
    cid = campaign(admin, inventory=3)
    vouchers = {u: claim(claims, cid, u).voucher.voucher_id for u in ("a", "b", "c")}
    # the node holds a sold-out snapshot now
    assert claim(claims, cid, "late").outcome == pb.OUTCOME_SOLD_OUT
    assert use(redeem, cid, "b", vouchers["b"]).outcome == pb.REDEEM_OUTCOME_REDEEMED
    first = give_up(redeem, cid, "a", vouchers["a"])
    again = give_up(redeem, cid, "a", vouchers["a"])
    used = give_up(redeem, cid, "b", vouchers["b"])
    not_hers = give_up(redeem, cid, "c", vouchers["a"])
    # A second give-up (a resend) answers alike; the stock still comes back once.
    assert first.released and again.released and not used.released and not not_hers.released
    assert remaining(admin, cid) == 1
    # given up: unusable
    assert use(redeem, cid, "a", vouchers["a"], "o2").outcome == pb.REDEEM_OUTCOME_ALREADY_REDEEMED
    assert claim(claims, cid, "a", "r2").outcome == pb.OUTCOME_ALREADY_CLAIMED  # the limit still counts it
    deadline = time.monotonic() + 5
    while (late := claim(claims, cid, "late")).outcome == pb.OUTCOME_SOLD_OUT and time.monotonic() < deadline:
        time.sleep(0.1)  # the sold-out snapshot is checked against Redis every second
    assert late.outcome == pb.OUTCOME_GRANTED
    figures = reconciled(admin, cid)
    assert figures["vouchers recycled (expired or released)"] == 1 and figures["granted"] == 4


def test_stock_keeps_coming_back_while_vouchers_keep_being_given_up(admin, claims, redeem):
    """Recycled stock waits 2 s (RETURN_DELAY_MS); a voucher given up every 0.4 s must not keep
    pushing back the stock that came back before it (it waits in two parts: lua/_returning.lua)."""
    cid = campaign(admin, inventory=12)
    vouchers = {f"u{i}": claim(claims, cid, f"u{i}").voucher.voucher_id for i in range(12)}
    first_back = time.monotonic()
    granted_at, user, i = None, 0, 0
    while time.monotonic() - first_back < 6 and granted_at is None:
        if i < 12:  # one more voucher given up every 0.4 s, all along
            assert give_up(redeem, cid, f"u{i}", vouchers[f"u{i}"]).released
            i += 1
        if claim(claims, cid, f"late{user}").outcome == pb.OUTCOME_GRANTED:
            granted_at = time.monotonic() - first_back
        user += 1
        time.sleep(0.4)
    assert granted_at is not None and i < 12, "the first voucher given up never came back while others were"
    assert granted_at >= 1.9  # not before its 2 s delay (by Redis's clock; the node's may differ a little)


def granted_when_back(claims, cid: str, users: list[str], wait_s: float = 8.0) -> int:
    """Claim for each user in turn until one is not granted once recycled stock is claimable (it
    waits inventory.RETURN_DELAY_MS, then the nodes' sold-out snapshots reopen); how many got one."""
    granted, deadline = 0, time.monotonic() + wait_s
    for user in users:
        while (outcome := claim(claims, cid, user).outcome) == pb.OUTCOME_SOLD_OUT and granted == 0 \
                and time.monotonic() < deadline:
            time.sleep(0.1)  # nothing claimable yet: the recycled stock is still on its way back
        if outcome != pb.OUTCOME_GRANTED:
            break
        granted += 1
    return granted


def test_expired_unused_vouchers_are_recycled_once_each(admin, claims, redeem):
    cid = campaign(admin, inventory=4, valid_for_ms=800)
    vouchers = {u: claim(claims, cid, u).voucher.voucher_id for u in ("a", "b", "c", "d")}
    assert use(redeem, cid, "a", vouchers["a"]).outcome == pb.REDEEM_OUTCOME_REDEEMED
    too_early = admin.RecycleExpired(pb.RecycleExpiredRequest(campaign_id=cid), timeout=30).recycled
    time.sleep(0.9)
    swept = admin.RecycleExpired(pb.RecycleExpiredRequest(campaign_id=cid), timeout=30).recycled
    swept_again = admin.RecycleExpired(pb.RecycleExpiredRequest(campaign_id=cid), timeout=30).recycled
    late = use(redeem, cid, "b", vouchers["b"], "o2")
    assert (too_early, swept, swept_again) == (0, 3, 0)
    assert late.outcome == pb.REDEEM_OUTCOME_EXPIRED
    assert granted_when_back(claims, cid, [f"n{i}" for i in range(4)]) == 3  # and the fourth SOLD_OUT
    events, _ = export_all(admin, cid)
    assert sorted(e.voucher_id for e in events if e.kind == "expire") == sorted(vouchers[u] for u in "bcd")
    assert reconciled(admin, cid)["vouchers recycled (expired or released)"] == 3


def test_expiry_racing_redemptions_never_both(node, admin, claims):
    cid = campaign(admin, inventory=60, valid_for_ms=400)
    vouchers = {f"u{i}": claim(claims, cid, f"u{i}").voucher.voucher_id for i in range(60)}

    async def race() -> list:
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub, admin_aio = pb_grpc.RedeemServiceStub(ch), pb_grpc.AdminServiceStub(ch)
            await asyncio.sleep(0.35)  # around the expiry: some redeem in time, some not
            calls = [stub.Redeem(pb.RedeemRequest(
                campaign_id=cid, user_id=u, voucher_ids=[v], merchant_id="m1", order_id="o",
                order_amount_cents=100), timeout=10) for u, v in vouchers.items()]
            calls += [admin_aio.RecycleExpired(pb.RecycleExpiredRequest(campaign_id=cid), timeout=30)
                      for _ in range(5)]
            return await asyncio.gather(*calls)

    replies = asyncio.run(race())
    time.sleep(0.1)
    final = admin.RecycleExpired(pb.RecycleExpiredRequest(campaign_id=cid), timeout=30).recycled
    redeemed = sum(1 for r in replies
                   if isinstance(r, pb.RedeemResponse) and r.outcome == pb.REDEEM_OUTCOME_REDEEMED)
    swept = sum(r.recycled for r in replies if isinstance(r, pb.RecycleExpiredResponse)) + final
    expired = sum(1 for r in replies
                  if isinstance(r, pb.RedeemResponse) and r.outcome == pb.REDEEM_OUTCOME_EXPIRED)
    # A redemption that finds its voucher expired records that (and recycles it) itself.
    recycled = reconciled(admin, cid)["vouchers recycled (expired or released)"]
    assert swept <= recycled <= swept + expired
    assert redeemed + recycled == 60  # every voucher either used in time or recycled, never both
    figures = reconciled(admin, cid)
    assert figures["vouchers recycled (expired or released)"] == recycled
    assert figures["vouchers redeemed (not reversed)"] == redeemed


def test_nodes_recycle_by_themselves(redis_server):
    node = LocalNode(redis_server.url, "--recycle-every-s", "0.3").start()
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=5, shards=1, valid_for_ms=300).campaign.campaign_id
            for u in ("a", "b"):
                claim(claims, cid, u)
            before = remaining(admin, cid)
            deadline = time.monotonic() + 10
            while remaining(admin, cid) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            after = remaining(admin, cid)
    finally:
        node.stop()
    assert (before, after) == (3, 5)


def test_cli_recycle(node, admin, claims):
    cid = campaign(admin, inventory=5, valid_for_ms=1)
    claim(claims, cid, "a")
    time.sleep(0.01)
    cli = [sys.executable, "-m", "claimcore", "campaign", "--target", node.address, "recycle", cid, "--json"]
    run = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"campaign_id": cid, "recycled": 1}  # a number (docs/cli.md, "JSON")
