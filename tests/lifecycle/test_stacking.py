"""Stacking vouchers of several campaigns on one order (issue 6): all or none, across hash slots.

Through real gRPC and a real redis-server: a stacked order redeems every part
or none; a campaign that is not stackable refuses; thirty orders racing for
the same pair of vouchers let one through; and parts left prepared by a dead
coordinator are settled from its decision, committed or aborted.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from claimcore._fast import shard_of
from claimcore.clock import now_ms
from claimcore.store import scripts
from claimcore.store.keyspace import SN_BUCKETS, shard_keys, stack_key
from claimcore.store.replies import StackCode
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from conftest import create_campaign
from support import run


@pytest.fixture
def redeem(channel) -> pb_grpc.RedeemServiceStub:
    return pb_grpc.RedeemServiceStub(channel)


def campaign(admin, value: int, stackable: bool = True) -> str:
    cid = create_campaign(admin, inventory=100, shards=2, value_cents=value, min_spend_cents=1000,
                          stackable=stackable).campaign.campaign_id
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1")), timeout=10)
    return cid


def grant(claims, cid: str, user: str) -> str:
    reply = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r"), timeout=10)
    return reply.voucher.voucher_id


def stacked(cid_a: str, va: str, cid_b: str, vb: str, user: str, order: str) -> pb.RedeemRequest:
    return pb.RedeemRequest(campaign_id=cid_a, user_id=user, voucher_ids=[va], merchant_id="m1",
                            order_id=order, order_amount_cents=5000,
                            stacked=[pb.StackedVouchers(campaign_id=cid_b, voucher_ids=[vb])])


def alone(cid: str, voucher: str, user: str, order: str) -> pb.RedeemRequest:
    return pb.RedeemRequest(campaign_id=cid, user_id=user, voucher_ids=[voucher], merchant_id="m1",
                            order_id=order, order_amount_cents=5000)


def test_a_stacked_order_redeems_every_part_or_none(admin, claims, redeem):
    a, b, loose = campaign(admin, 500), campaign(admin, 300), campaign(admin, 200, stackable=False)
    va, vb, vl = grant(claims, a, "u"), grant(claims, b, "u"), grant(claims, loose, "u")
    refused = redeem.Redeem(stacked(a, va, loose, vl, "u", "o0"), timeout=10)
    done = redeem.Redeem(stacked(a, va, b, vb, "u", "o1"), timeout=10)
    replay = redeem.Redeem(stacked(a, va, b, vb, "u", "o1"), timeout=10)
    again_a = redeem.Redeem(alone(a, va, "u", "o2"), timeout=10)
    again_b = redeem.Redeem(alone(b, vb, "u", "o3"), timeout=10)
    still_free = redeem.Redeem(alone(loose, vl, "u", "o4"), timeout=10)
    assert refused.outcome == pb.REDEEM_OUTCOME_NOT_STACKABLE and loose in refused.detail
    assert (done.outcome, done.subsidy_cents, sorted(done.voucher_ids)) == (
        pb.REDEEM_OUTCOME_REDEEMED, 800, sorted([va, vb]))
    assert (replay.outcome, replay.subsidy_cents) == (pb.REDEEM_OUTCOME_REDEEMED, 800)
    assert again_a.outcome == again_b.outcome == pb.REDEEM_OUTCOME_ALREADY_REDEEMED
    assert still_free.outcome == pb.REDEEM_OUTCOME_REDEEMED
    for cid, subsidy in ((a, 500), (b, 300)):
        reply = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30)
        figures = {f.name: f.live for f in reply.figures}
        assert reply.ok and figures["subsidy of redeemed vouchers, cents"] == subsidy


def test_one_part_refused_leaves_the_other_untouched(admin, claims, redeem):
    a, b = campaign(admin, 500), campaign(admin, 300)
    va, vb = grant(claims, a, "u"), grant(claims, b, "u")
    assert redeem.Redeem(alone(b, vb, "u", "elsewhere"), timeout=10).outcome == pb.REDEEM_OUTCOME_REDEEMED
    failed = redeem.Redeem(stacked(a, va, b, vb, "u", "o1"), timeout=10)
    a_alone = redeem.Redeem(alone(a, va, "u", "o2"), timeout=10)
    assert failed.outcome == pb.REDEEM_OUTCOME_ALREADY_REDEEMED
    assert b in failed.detail and list(failed.voucher_ids) == [vb]
    assert a_alone.outcome == pb.REDEEM_OUTCOME_REDEEMED


def test_thirty_stacked_orders_racing_for_one_pair_let_one_through(node, admin, claims):
    a, b = campaign(admin, 500), campaign(admin, 300)
    va, vb = grant(claims, a, "u"), grant(claims, b, "u")

    async def race() -> list[pb.RedeemResponse]:
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.RedeemServiceStub(ch)
            return await asyncio.gather(*(stub.Redeem(stacked(a, va, b, vb, "u", f"o{i}"), timeout=10)
                                          for i in range(30)))

    outcomes = sorted(short_name(pb.RedeemOutcome, r.outcome) for r in asyncio.run(race()))
    assert outcomes == ["ALREADY_REDEEMED"] * 29 + ["REDEEMED"]
    for cid in (a, b):
        assert admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30).ok


def test_parts_left_by_a_dead_coordinator_are_settled_from_its_decision(redis_server, admin, claims, redeem):
    a, b = campaign(admin, 500), campaign(admin, 300)
    va, vb = grant(claims, a, "decided"), grant(claims, b, "decided")
    wa, wb = grant(claims, a, "undecided"), grant(claims, b, "undecided")
    stale = now_ms() - 10_000  # both coordinators died long ago, after preparing

    async def prepare(inv, client) -> None:  # noqa: ANN001
        orders = (("decided", "od", ((a, va), (b, vb))), ("undecided", "ou", ((a, wa), (b, wb))))
        for user, order, parts in orders:
            for cid, voucher in parts:
                keys = list(shard_keys(cid, shard_of(user, 2)).redemption)
                reply = await scripts.STACK(client, keys, [
                    "prepare", 0, now_ms(), user, order, "i1", "m1", 5000, 1000, 500, 0, "", "", stale, 1000,
                    voucher])
                assert int(reply[0]) == StackCode.PREPARED
        key = "decided|od|i1"  # only the first coordinator got as far as its decision (of instance i1)
        await client.hset(stack_key(shard_of(key, SN_BUCKETS)), key, f"U|0||{key}")

    run(redis_server, prepare)
    cases = (("decided a", a, va, "decided"), ("decided b", b, vb, "decided"),
             ("undecided a", a, wa, "undecided"), ("undecided b", b, wb, "undecided"))
    met = {name: redeem.Redeem(alone(cid, v, user, "new"), timeout=10).outcome
           for name, cid, v, user in cases}
    assert met == {"decided a": pb.REDEEM_OUTCOME_ALREADY_REDEEMED,
                   "decided b": pb.REDEEM_OUTCOME_ALREADY_REDEEMED,
                   "undecided a": pb.REDEEM_OUTCOME_REDEEMED, "undecided b": pb.REDEEM_OUTCOME_REDEEMED}
    for cid in (a, b):
        reply = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30)
        assert reply.ok and {f.name: f.live for f in reply.figures}["vouchers redeemed (not reversed)"] == 2


def test_bad_stacked_requests(admin, claims, redeem):
    a = campaign(admin, 500)
    va = grant(claims, a, "u")
    with pytest.raises(grpc.RpcError) as twice:
        redeem.Redeem(stacked(a, va, a, va, "u", "o1"), timeout=10)
    with pytest.raises(grpc.RpcError) as unknown:
        redeem.Redeem(stacked(a, va, "no-such-campaign", "x-0-1", "u", "o1"), timeout=10)
    assert twice.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
