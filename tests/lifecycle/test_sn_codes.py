"""SN codes subsidised once across all campaigns (issue 6), through real gRPC and Redis.

Two campaigns share the SN registry: an SN used on one campaign's order is
refused on the other's until that order is reversed; thirty orders racing
for one SN let exactly one through; a failed redemption leaves its SN free;
and holds left by a node that died mid-redemption are settled by the next
order from what the dead node's order record says.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from claimcore._fast import shard_of
from claimcore.lifecycle.snregistry import owner_of
from claimcore.store.keyspace import SN_BUCKETS, sn_key
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from conftest import create_campaign


@pytest.fixture
def redeem(channel) -> pb_grpc.RedeemServiceStub:
    return pb_grpc.RedeemServiceStub(channel)


def campaign_with_vouchers(admin, claims, users: list[str], **fields) -> tuple[str, dict[str, str]]:
    cid = create_campaign(admin, inventory=100, shards=2, value_cents=500, min_spend_cents=1000,
                          **fields).campaign.campaign_id
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1")), timeout=10)
    vouchers = {u: claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=u, request_id="r"), timeout=10)
                .voucher.voucher_id for u in users}
    return cid, vouchers


def use(redeem, cid, user, voucher, order, sns, amount=2000) -> pb.RedeemResponse:
    return redeem.Redeem(pb.RedeemRequest(
        campaign_id=cid, user_id=user, voucher_ids=[voucher], merchant_id="m1", order_id=order,
        order_amount_cents=amount, sn_codes=sns), timeout=10)


def sn_record(redis_client, sn: str) -> str | None:
    return redis_client.hget(sn_key(shard_of(sn, SN_BUCKETS)), sn)


def test_an_sn_is_subsidised_once_across_campaigns_until_its_order_is_reversed(admin, claims, redeem,
                                                                              redis_client):
    cid_a, va = campaign_with_vouchers(admin, claims, ["ann"])
    cid_b, vb = campaign_with_vouchers(admin, claims, ["ann", "bob"])
    first = use(redeem, cid_a, "ann", va["ann"], "o1", ["TV-001", "TV-002"])
    replay = use(redeem, cid_a, "ann", va["ann"], "o1", ["TV-001", "TV-002"])
    other_campaign = use(redeem, cid_b, "ann", vb["ann"], "o2", ["TV-002"])
    other_user = use(redeem, cid_b, "bob", vb["bob"], "o3", ["TV-001", "PHONE-9"])
    free_sn = use(redeem, cid_b, "ann", vb["ann"], "o4", ["TV-003"])
    recorded = sn_record(redis_client, "TV-001")
    redeem.Reverse(pb.ReverseRequest(campaign_id=cid_a, user_id="ann", order_id="o1"), timeout=10)
    after_reverse = use(redeem, cid_b, "bob", vb["bob"], "o5", ["TV-001", "PHONE-9"])

    assert (first.outcome, replay.outcome) == (pb.REDEEM_OUTCOME_REDEEMED, pb.REDEEM_OUTCOME_REDEEMED)
    assert other_campaign.outcome == pb.REDEEM_OUTCOME_SN_ALREADY_SUBSIDISED
    assert "TV-002" in other_campaign.detail
    assert other_user.outcome == pb.REDEEM_OUTCOME_SN_ALREADY_SUBSIDISED and "TV-001" in other_user.detail
    assert sn_record(redis_client, "PHONE-9") in (None, f"U|0||{owner_of(cid_b, 'bob', 'o5')}")
    assert free_sn.outcome == pb.REDEEM_OUTCOME_REDEEMED
    assert recorded == f"U|0||{owner_of(cid_a, 'ann', 'o1')}"
    assert after_reverse.outcome == pb.REDEEM_OUTCOME_REDEEMED
    assert sn_record(redis_client, "TV-001") == f"U|0||{owner_of(cid_b, 'bob', 'o5')}"


def test_thirty_orders_racing_for_one_sn_let_one_through(node, admin, claims):
    users = [f"u{i}" for i in range(30)]
    cid, vouchers = campaign_with_vouchers(admin, claims, users)

    async def race() -> list[pb.RedeemResponse]:
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.RedeemServiceStub(ch)
            return await asyncio.gather(*(stub.Redeem(pb.RedeemRequest(
                campaign_id=cid, user_id=u, voucher_ids=[vouchers[u]], merchant_id="m1", order_id=f"o-{u}",
                order_amount_cents=2000, sn_codes=["FRIDGE-1"]), timeout=10) for u in users))

    outcomes = sorted(short_name(pb.RedeemOutcome, r.outcome) for r in asyncio.run(race()))
    assert outcomes == ["REDEEMED"] + ["SN_ALREADY_SUBSIDISED"] * 29


def test_a_failed_redemption_leaves_its_sn_free(admin, claims, redeem, redis_client):
    cid, vouchers = campaign_with_vouchers(admin, claims, ["u1"])
    low = use(redeem, cid, "u1", vouchers["u1"], "o1", ["SN-LOW"], amount=10)
    assert low.outcome == pb.REDEEM_OUTCOME_BELOW_MINIMUM_SPEND and sn_record(redis_client, "SN-LOW") is None
    assert use(redeem, cid, "u1", vouchers["u1"], "o2", ["SN-LOW"]).outcome == pb.REDEEM_OUTCOME_REDEEMED


def test_holds_left_by_a_dead_node_are_settled_from_its_order(admin, claims, redeem, redis_client):
    cid, vouchers = campaign_with_vouchers(admin, claims, ["dead1", "dead2", "next1", "next2"])
    # dead1's node held SN-A, then died before redeeming: its order does not exist
    redis_client.hset(sn_key(shard_of("SN-A", SN_BUCKETS)), "SN-A",
                      f"H|1|dead|{owner_of(cid, 'dead1', 'o-dead')}")
    # dead2's node redeemed with SN-B, then died before committing the hold
    dead2 = use(redeem, cid, "dead2", vouchers["dead2"], "o-dead2", ["SN-B"])
    assert dead2.outcome == pb.REDEEM_OUTCOME_REDEEMED
    redis_client.hset(sn_key(shard_of("SN-B", SN_BUCKETS)), "SN-B",
                      f"H|1|dead|{owner_of(cid, 'dead2', 'o-dead2')}")

    takes_a = use(redeem, cid, "next1", vouchers["next1"], "o-a", ["SN-A"])
    takes_b = use(redeem, cid, "next2", vouchers["next2"], "o-b", ["SN-B"])
    assert takes_a.outcome == pb.REDEEM_OUTCOME_REDEEMED
    assert sn_record(redis_client, "SN-A") == f"U|0||{owner_of(cid, 'next1', 'o-a')}"
    assert takes_b.outcome == pb.REDEEM_OUTCOME_SN_ALREADY_SUBSIDISED
    assert sn_record(redis_client, "SN-B") == f"U|0||{owner_of(cid, 'dead2', 'o-dead2')}"
