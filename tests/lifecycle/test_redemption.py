"""Redemption and reversal (issue 6) through real gRPC and a real redis-server.

Every outcome of Redeem and Reverse, idempotency by order id, stacking,
validity, the races (one voucher redeemed by many orders at once, a reversal
racing redemptions), redemption while the grab still runs and across a
reshard, the ledger's events and a reconcile to zero difference.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import sys
import time
from enum import IntEnum
from importlib import resources

import grpc
import pytest

from claimcore.store.replies import RedeemCode, ReverseCode, StackCode
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name, short_names
from conftest import create_campaign, redis_dump
from support import export_all

VALUE, MIN_SPEND = 6_000, 120_000


@pytest.fixture
def redeem(channel) -> pb_grpc.RedeemServiceStub:
    return pb_grpc.RedeemServiceStub(channel)


def campaign(admin, **fields) -> str:
    fields = {"inventory": 100, "shards": 2, "per_user_limit": 2, "value_cents": VALUE,
              "min_spend_cents": MIN_SPEND, "category": "appliances", "regions": ["north"],
              "max_vouchers_per_order": 2, **fields}
    cid = create_campaign(admin, **fields).campaign.campaign_id
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1", name="Shop One", category="appliances", region="north")),
        timeout=10)
    return cid


def grant(claims, cid: str, user: str, rid: str = "r") -> str:
    reply = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid), timeout=10)
    assert reply.outcome == pb.OUTCOME_GRANTED
    return reply.voucher.voucher_id


def use(redeem, cid, user, vouchers, order, amount=300_000, merchant="m1", sns=()) -> pb.RedeemResponse:
    return redeem.Redeem(pb.RedeemRequest(
        campaign_id=cid, user_id=user, voucher_ids=vouchers, merchant_id=merchant, order_id=order,
        order_amount_cents=amount, sn_codes=sns), timeout=10)


def give_back(redeem, cid, user, order) -> pb.ReverseResponse:
    return redeem.Reverse(pb.ReverseRequest(campaign_id=cid, user_id=user, order_id=order), timeout=10)


def reconciled(admin, cid: str) -> pb.ReconcileResponse:
    reply = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30)
    assert reply.ok, [(f.name, f.from_ledger, f.live) for f in reply.figures if not f.ok]
    return reply


def test_every_outcome_of_redeem_and_reverse(admin, claims, redeem):
    cid = campaign(admin)
    v1, v2 = grant(claims, cid, "u1", "a"), grant(claims, cid, "u1", "b")
    other = grant(claims, cid, "u2")
    outcomes = {
        "unknown merchant": use(redeem, cid, "u1", [v1], "o0", merchant="m9"),
        "below minimum": use(redeem, cid, "u1", [v1, v2], "o0", amount=2 * MIN_SPEND - 1),
        "not owner": use(redeem, cid, "u1", [other], "o0"),
        "no such voucher": use(redeem, cid, "u1", [v1 + "9"], "o0"),
        "too many": use(redeem, cid, "u1", [v1, v2, other], "o0"),
    }
    done = use(redeem, cid, "u1", [v2, v1], "o1", sns=["SN-1", "SN-2"])
    replay = use(redeem, cid, "u1", [v1, v2], "o1", sns=["SN-1", "SN-2"])
    twice = use(redeem, cid, "u1", [v1], "o2")
    reused = use(redeem, cid, "u1", [v1], "o1")
    back = give_back(redeem, cid, "u1", "o1")
    back_again = give_back(redeem, cid, "u1", "o1")
    missing = give_back(redeem, cid, "u1", "nope")
    after_reverse = use(redeem, cid, "u1", [v1], "o3", amount=200_000)
    reused_reversed = use(redeem, cid, "u1", [v1, v2], "o1")

    assert {k: short_name(pb.RedeemOutcome, r.outcome) for k, r in outcomes.items()} == {
        "unknown merchant": "MERCHANT_NOT_ALLOWED", "below minimum": "BELOW_MINIMUM_SPEND",
        "not owner": "NOT_OWNER", "no such voucher": "NOT_OWNER", "too many": "NOT_STACKABLE"}
    assert list(outcomes["not owner"].voucher_ids) == [other] and other in outcomes["not owner"].detail
    assert (done.outcome, sorted(done.voucher_ids), done.subsidy_cents) == (
        pb.REDEEM_OUTCOME_REDEEMED, sorted([v1, v2]), 2 * VALUE)
    assert (replay.outcome, replay.subsidy_cents, replay.redeemed_at_ms) == (
        pb.REDEEM_OUTCOME_REDEEMED, done.subsidy_cents, done.redeemed_at_ms)
    assert (twice.outcome, list(twice.voucher_ids)) == (pb.REDEEM_OUTCOME_ALREADY_REDEEMED, [v1])
    assert reused.outcome == pb.REDEEM_OUTCOME_ORDER_ID_REUSED
    assert reused_reversed.outcome == pb.REDEEM_OUTCOME_ORDER_ID_REUSED
    assert (back.outcome, sorted(back.returned_voucher_ids), list(back.expired_voucher_ids)) == (
        pb.REVERSE_OUTCOME_REVERSED, sorted([v1, v2]), [])
    assert back_again == back and missing.outcome == pb.REVERSE_OUTCOME_ORDER_NOT_FOUND
    assert (after_reverse.outcome, after_reverse.subsidy_cents) == (pb.REDEEM_OUTCOME_REDEEMED, VALUE)

    events, _ = export_all(admin, cid)
    kinds = [(e.kind, e.order_id, e.voucher_id) for e in events if e.kind != "grant"]
    assert sorted(kinds) == sorted([("redeem", "o1", v1), ("redeem", "o1", v2), ("reverse", "o1", v1),
                                    ("reverse", "o1", v2), ("redeem", "o3", v1)])
    assert {e.merchant_id for e in events if e.kind == "redeem"} == {"m1"}
    sns = [list(e.sn_codes) for e in events if e.order_id == "o1" and e.kind == "redeem"]
    assert sns == [["SN-1", "SN-2"]] * 2
    figures = {f.name: f.live for f in reconciled(admin, cid).figures}
    assert figures["vouchers redeemed (not reversed)"] == 1
    assert figures["subsidy of redeemed vouchers, cents"] == VALUE


def test_validity_expired_vouchers_are_refused_and_not_given_back(admin, claims, redeem):
    cid = campaign(admin, valid_for_ms=1500)
    late = grant(claims, cid, "late")
    early = grant(claims, cid, "early")
    used = use(redeem, cid, "early", [early], "o1")
    time.sleep(1.6)
    too_late = use(redeem, cid, "late", [late], "o2")
    back = give_back(redeem, cid, "early", "o1")
    again = use(redeem, cid, "early", [early], "o3")
    assert used.outcome == pb.REDEEM_OUTCOME_REDEEMED
    assert (too_late.outcome, list(too_late.voucher_ids)) == (pb.REDEEM_OUTCOME_EXPIRED, [late])
    assert (list(back.returned_voucher_ids), list(back.expired_voucher_ids)) == ([], [early])
    assert again.outcome == pb.REDEEM_OUTCOME_EXPIRED
    reconciled(admin, cid)


def test_one_voucher_redeemed_by_many_orders_at_once_goes_to_one(node, admin, claims):
    cid = campaign(admin)
    voucher = grant(claims, cid, "u1")

    async def race() -> list[pb.RedeemResponse]:
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.RedeemServiceStub(ch)
            return await asyncio.gather(*(stub.Redeem(pb.RedeemRequest(
                campaign_id=cid, user_id="u1", voucher_ids=[voucher], merchant_id="m1", order_id=f"o{i}",
                order_amount_cents=MIN_SPEND), timeout=10) for i in range(60)))

    replies = asyncio.run(race())
    outcomes = sorted(short_name(pb.RedeemOutcome, r.outcome) for r in replies)
    assert outcomes == ["ALREADY_REDEEMED"] * 59 + ["REDEEMED"]
    reconciled(admin, cid)


def test_a_reversal_racing_redemptions_lets_exactly_one_in_after_it(node, admin, claims, redeem):
    cid = campaign(admin)
    voucher = grant(claims, cid, "u1")
    assert use(redeem, cid, "u1", [voucher], "first").outcome == pb.REDEEM_OUTCOME_REDEEMED

    async def race() -> list:
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.RedeemServiceStub(ch)
            calls = []
            for i in range(40):
                calls.append(stub.Redeem(pb.RedeemRequest(
                    campaign_id=cid, user_id="u1", voucher_ids=[voucher], merchant_id="m1", order_id=f"o{i}",
                    order_amount_cents=MIN_SPEND), timeout=10))
                if i == 20:
                    calls.append(stub.Reverse(
                        pb.ReverseRequest(campaign_id=cid, user_id="u1", order_id="first"), timeout=10))
            return await asyncio.gather(*calls)

    replies = asyncio.run(race())
    reverse = [r for r in replies if isinstance(r, pb.ReverseResponse)]
    redeems = [r for r in replies if isinstance(r, pb.RedeemResponse)]
    assert [r.outcome for r in reverse] == [pb.REVERSE_OUTCOME_REVERSED]
    # the one that came after the reversal
    assert sum(r.outcome == pb.REDEEM_OUTCOME_REDEEMED for r in redeems) == 1
    assert {r.outcome for r in redeems} == {pb.REDEEM_OUTCOME_REDEEMED, pb.REDEEM_OUTCOME_ALREADY_REDEEMED}
    reconciled(admin, cid)


def test_redeem_while_the_grab_runs_and_across_a_reshard(node, admin, claims, redeem):
    cid = campaign(admin, inventory=4000, shards=3, per_user_limit=1, max_vouchers_per_order=1)
    grabbers = 3000

    async def launch() -> tuple[list, int]:
        async with grpc.aio.insecure_channel(node.address) as ch:
            claim_stub, redeem_stub = pb_grpc.ClaimServiceStub(ch), pb_grpc.RedeemServiceStub(ch)
            queue = [f"g{i}" for i in range(grabbers)]
            answered = 0

            async def grabber() -> None:
                nonlocal answered
                while queue:
                    user = queue.pop()
                    await claim_stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r"),
                                           timeout=30)
                    answered += 1

            async def early_shopper(i: int) -> tuple[str, str, pb.RedeemResponse]:
                while answered < 200:  # the grab is under way
                    await asyncio.sleep(0.001)
                user = f"early{i}"
                got = await claim_stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r"),
                                             timeout=30)
                used = await redeem_stub.Redeem(pb.RedeemRequest(
                    campaign_id=cid, user_id=user, voucher_ids=[got.voucher.voucher_id], merchant_id="m1",
                    order_id=f"o{i}", order_amount_cents=MIN_SPEND), timeout=30)
                return user, got.voucher.voucher_id, used

            grab = asyncio.gather(*(grabber() for _ in range(32)))
            early = await asyncio.gather(*(early_shopper(i) for i in range(20)))
            still_grabbing = answered < grabbers
            await grab
            return early, still_grabbing

    early, still_grabbing = asyncio.run(launch())
    admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=9), timeout=60)
    replays = [use(redeem, cid, user, [voucher], f"o{i}") for i, (user, voucher, _) in enumerate(early)]
    reversals = [give_back(redeem, cid, user, f"o{i}") for i, (user, _, _) in enumerate(early[:5])]
    assert still_grabbing and all(r.outcome == pb.REDEEM_OUTCOME_REDEEMED for _, _, r in early)
    assert [(r.outcome, r.redeemed_at_ms) for r in replays] == [
        (pb.REDEEM_OUTCOME_REDEEMED, r.redeemed_at_ms) for _, _, r in early]
    assert all(r.outcome == pb.REVERSE_OUTCOME_REVERSED and len(r.returned_voucher_ids) == 1
               for r in reversals)
    figures = {f.name: f.live for f in reconciled(admin, cid).figures}
    assert figures["vouchers redeemed (not reversed)"] == 15 and figures["granted"] == grabbers + 20


@pytest.mark.parametrize(("change", "code"), [
    ({"voucher_ids": []}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"order_id": "bad order"}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"order_amount_cents": -1}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"sn_codes": ["has space"]}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"voucher_ids": ["a", "a"]}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"merchant_id": ""}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"campaign_id": "no-such-campaign"}, grpc.StatusCode.NOT_FOUND),
])
def test_bad_redeem_requests_change_nothing(admin, claims, redeem, redis_client, change, code):
    cid = campaign(admin)
    voucher = grant(claims, cid, "u1")
    request = {"campaign_id": cid, "user_id": "u1", "voucher_ids": [voucher], "merchant_id": "m1",
               "order_id": "o1", "order_amount_cents": MIN_SPEND, **change}
    before = redis_dump(redis_client, cid)
    with pytest.raises(grpc.RpcError) as err:
        redeem.Redeem(pb.RedeemRequest(**request), timeout=10)
    assert err.value.code() == code
    assert redis_dump(redis_client, cid) == before


def test_merchants_must_fit_the_campaign_and_the_cli_registers_them(node, admin):
    cid = campaign(admin)
    with pytest.raises(grpc.RpcError) as wrong_category:
        admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
            campaign_id=cid, merchant_id="m2", category="dining", region="north")), timeout=10)
    with pytest.raises(grpc.RpcError) as wrong_region:
        admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
            campaign_id=cid, merchant_id="m3", category="appliances", region="south")), timeout=10)
    cli = [sys.executable, "-m", "claimcore", "merchant", "--target", node.address]
    added = subprocess.run([*cli, "register", cid, "m4", "--name", "Four", "--category", "appliances",
                            "--region", "north"], capture_output=True, text=True, timeout=60)
    listed = subprocess.run([*cli, "list", cid, "--json"], capture_output=True, text=True, timeout=60)
    assert wrong_category.value.code() == wrong_region.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert added.returncode == 0, added.stderr
    assert [m["merchant_id"] for m in json.loads(listed.stdout)["merchants"]] == ["m1", "m4"]


def test_each_redemption_scripts_codes_are_its_headers() -> None:
    """RedeemCode, ReverseCode and StackCode name exactly the codes ("<n> <NAME>") of redeem.lua's,
    reverse.lua's and stack.lua's headers, and a code that is also an outcome of claims.proto has
    that outcome's number (the node passes it on as it is)."""
    scripts: tuple[tuple[str, type[IntEnum], dict[str, int]], ...] = (
        ("redeem", RedeemCode, dict(short_names(pb.RedeemOutcome).items())),
        ("reverse", ReverseCode, dict(short_names(pb.ReverseOutcome).items())),
        ("stack", StackCode, dict(short_names(pb.RedeemOutcome).items())))
    for name, codes, outcomes in scripts:
        text = resources.files("claimcore.store.lua").joinpath(f"{name}.lua").read_text()
        header = "\n".join(itertools.takewhile(lambda line: line.startswith(("#!", "--")), text.splitlines()))
        named = {code: int(n) for n, code in re.findall(r"\b(\d+) ([A-Z][A-Z_]+)\b", header)}
        assert {c.name: c.value for c in codes} == named, name
        assert all(outcomes[c.name] == c.value for c in codes if c.name in outcomes), name
