"""One person, one category, one subsidy (issue 6): across campaigns, atomically.

Through real gRPC and a real redis-server: a user granted a voucher of one
one_per_category campaign is NOT_ELIGIBLE in the others of its category;
a user's claims racing in two such campaigns through two nodes get one
voucher; holds left behind by a dead node are settled from the records.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from claimcore._fast import shard_of
from claimcore.lifecycle.categories import BUCKETS
from claimcore.store.keyspace import category_key
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from conftest import LocalNode, create_campaign, new_campaign_id


def claim(claims, cid: str, user: str, rid: str = "r") -> str:
    """The outcome's name; for NOT_ELIGIBLE, with its reason: "NOT_ELIGIBLE:ONE_PER_CATEGORY"."""
    reply = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid), timeout=10)
    name = short_name(pb.Outcome, reply.outcome)
    if reply.not_eligible_reason:
        name += ":" + short_name(pb.NotEligibleReason, reply.not_eligible_reason)
    return name


def campaigns(admin, category: str, n: int, **fields) -> list[str]:
    return [create_campaign(admin, inventory=500, shards=3, category=category, one_per_category=True,
                            **fields).campaign.campaign_id for _ in range(n)]


def test_one_voucher_per_category_across_campaigns(admin, claims):
    category = new_campaign_id("fridge")
    a, b = campaigns(admin, category, 2)
    loose = create_campaign(admin, inventory=50, shards=1, category=category).campaign.campaign_id
    other = campaigns(admin, new_campaign_id("phone"), 1)[0]
    got = {
        "ann in a": claim(claims, a, "ann"), "ann in b": claim(claims, b, "ann"),
        "bob in b": claim(claims, b, "bob"), "bob in a": claim(claims, a, "bob"),
        "ann again in a": claim(claims, a, "ann"),
        "ann in a campaign without the rule": claim(claims, loose, "ann"),
        "ann in another category": claim(claims, other, "ann"),
    }
    assert got == {
        "ann in a": "GRANTED", "ann in b": "NOT_ELIGIBLE:ONE_PER_CATEGORY", "bob in b": "GRANTED",
        "bob in a": "NOT_ELIGIBLE:ONE_PER_CATEGORY",
        "ann again in a": "GRANTED", "ann in a campaign without the rule": "GRANTED",
        "ann in another category": "GRANTED",
    }


def test_two_claims_of_one_user_racing_in_two_campaigns_get_one_voucher(redis_server, node, admin):
    a, b = campaigns(admin, new_campaign_id("tv"), 2)
    other = LocalNode(redis_server.url).start()
    users = [f"u{i}" for i in range(150)]

    async def race() -> list[tuple[str, str, int]]:
        async with (grpc.aio.insecure_channel(node.address) as c1,
                    grpc.aio.insecure_channel(other.address) as c2):
            s1, s2 = pb_grpc.ClaimServiceStub(c1), pb_grpc.ClaimServiceStub(c2)

            async def one(user: str, cid: str, stub) -> tuple[str, str, int]:  # noqa: ANN001
                reply = await stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r"),
                                         timeout=30)
                return user, cid, reply.outcome

            pairs = ((a, s1), (b, s2))
            return await asyncio.gather(*(one(u, cid, stub) for u in users for cid, stub in pairs))

    try:
        results = asyncio.run(race())
    finally:
        other.stop()
    by_user: dict[str, list[int]] = {}
    for user, _, outcome in results:
        by_user.setdefault(user, []).append(outcome)
    either = sorted([pb.OUTCOME_GRANTED, pb.OUTCOME_NOT_ELIGIBLE])
    assert all(sorted(o) == either for o in by_user.values()), by_user
    granted = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=a), timeout=10).campaign.granted + \
        admin.GetCampaign(pb.GetCampaignRequest(campaign_id=b), timeout=10).campaign.granted
    assert granted == len(users)


def test_holds_left_by_a_dead_node_are_settled_from_the_records(admin, claims, redis_client):
    category = new_campaign_id("oven")
    a, b = campaigns(admin, category, 2)

    def stale_hold(user: str, campaign_id: str) -> None:
        redis_client.hset(category_key(category, shard_of(user, BUCKETS)), user, f"H|1|dead|{campaign_id}")

    stale_hold("never", a)  # a's node held "never", then died before claiming
    assert claim(claims, a, "holder") == "GRANTED"
    stale_hold("holder", a)  # a's node granted "holder", then died before turning the hold into a use
    got = (claim(claims, b, "never"), claim(claims, b, "holder"))
    record = redis_client.hget(category_key(category, shard_of("holder", BUCKETS)), "holder")
    assert got == ("GRANTED", "NOT_ELIGIBLE:ONE_PER_CATEGORY") and record == f"U|0||{a}"


def test_one_per_category_needs_a_category(admin):
    with pytest.raises(grpc.RpcError) as err:
        create_campaign(admin, inventory=5, shards=1, one_per_category=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
