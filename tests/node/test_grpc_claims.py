"""Claims through real front nodes and a real redis-server.

The invariants of issue 3, each proved here end to end: never more grants
than inventory, no stranded stock across shards, at most per_user_limit per
user, idempotent by request_id (also across node restarts), and bad input
rejected without writing anything.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict

import grpc
import pytest

from claimcore._fast import shard_of
from claimcore.store.keyspace import shard_keys
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from conftest import LocalNode, create_campaign, new_campaign_id, redis_dump
from support import burst, check_burst

pytestmark = pytest.mark.twins


def claim(stub: pb_grpc.ClaimServiceStub, cid: str, user: str, rid: str | None = None,
          timeout: float = 10) -> pb.ClaimResponse:
    return stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid or f"r-{user}"),
                      timeout=timeout)


def test_200_concurrent_clients_grant_exactly_the_stock(admin, claims, node, redis_client):
    inventory, users = 300, 1000
    cid = create_campaign(admin, inventory=inventory, shards=8).campaign.campaign_id
    rng = random.Random(7)
    requests = [(f"u{i}", f"r{i}") for i in range(users)]
    requests += [(f"u{rng.randrange(users)}", f"again-{n}") for n in range(500)]  # double taps
    requests += [requests[rng.randrange(users)] for _ in range(300)]              # retries
    rng.shuffle(requests)
    results = asyncio.run(burst([node.address], cid, requests))
    assert len(results) == len(requests)
    holder = check_burst(results, inventory, users)

    info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
    assert info.granted == inventory and info.remaining == 0
    assert info.sold_out_at_ms > 0
    stored = {}
    for s in range(8):
        for user, raw in redis_client.hgetall(shard_keys(cid, s).users).items():
            stored[user] = raw.split("|")[1]
    assert stored == holder  # every acknowledged grant is in Redis, and nothing else is


def test_two_front_nodes_on_one_redis_never_oversell(admin, redis_server):
    inventory, users = 250, 800
    cid = create_campaign(admin, inventory=inventory, shards=4).campaign.campaign_id
    second = LocalNode(redis_server.url).start()
    try:
        third = LocalNode(redis_server.url).start()
        try:
            requests = [(f"u{i}", f"r{i}") for i in range(users)]
            requests += [(f"u{i}", f"tap-{i}") for i in range(0, users, 3)]
            random.Random(3).shuffle(requests)
            results = asyncio.run(burst([second.address, third.address], cid, requests))
        finally:
            third.stop()
    finally:
        second.stop()
    check_burst(results, inventory, users)
    info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
    assert info.granted == inventory


def test_no_stranded_stock_when_all_users_hash_to_one_shard(admin, claims):
    """Stock sits in 8 shards but every claimant lands on shard 0: borrowing must serve them."""
    cid = create_campaign(admin, inventory=80, shards=8).campaign.campaign_id
    users = [u for u in (f"user{i}" for i in range(5000)) if shard_of(u, 8) == 0][:120]
    assert len(users) == 120
    outcomes = Counter(short_name(pb.Outcome, claim(claims, cid, u).outcome) for u in users)
    assert outcomes == {"GRANTED": 80, "SOLD_OUT": 40}
    info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
    assert info.granted == 80 and info.remaining == 0
    assert [s.granted for s in info.shards] == [80, 0, 0, 0, 0, 0, 0, 0]


def test_per_user_limit_across_requests(admin, claims):
    cid = create_campaign(admin, inventory=50, shards=4, per_user_limit=2).campaign.campaign_id
    replies = [claim(claims, cid, "alice", f"a{i}") for i in range(5)]
    assert [r.outcome for r in replies] == [pb.OUTCOME_GRANTED] * 2 + [pb.OUTCOME_ALREADY_CLAIMED] * 3
    assert replies[2].voucher.voucher_id == replies[1].voucher.voucher_id
    held = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="alice"), timeout=5)
    assert sorted(v.voucher_id for v in held.vouchers) == sorted(
        r.voucher.voucher_id for r in replies[:2])


def test_idempotent_replay_survives_node_restart(admin, redis_server):
    cid = create_campaign(admin, inventory=5, shards=2, value_cents=6000).campaign.campaign_id
    first = LocalNode(redis_server.url).start()
    with grpc.insecure_channel(first.address) as ch:
        granted = claim(pb_grpc.ClaimServiceStub(ch), cid, "bob", "req-1")
    assert first.stop() == 0
    second = LocalNode(redis_server.url).start()
    try:
        with grpc.insecure_channel(second.address) as ch:
            stub = pb_grpc.ClaimServiceStub(ch)
            replay = claim(stub, cid, "bob", "req-1")
            other = claim(stub, cid, "carol", "req-1")  # another app's id that happens to match
            double = claim(stub, cid, "bob", "req-2")
    finally:
        second.stop()
    assert granted.outcome == replay.outcome == pb.OUTCOME_GRANTED
    assert replay.voucher == granted.voucher and granted.voucher.value_cents == 6000
    assert other.outcome == pb.OUTCOME_GRANTED and other.voucher.voucher_id != granted.voucher.voucher_id
    assert double.outcome == pb.OUTCOME_ALREADY_CLAIMED
    assert double.voucher.voucher_id == granted.voucher.voucher_id
    info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=5).campaign
    assert info.granted == 2


def test_sold_out_is_answered_without_redis(admin, claims, redis_client):
    cid = create_campaign(admin, inventory=3, shards=3).campaign.campaign_id
    grants = {u: claim(claims, cid, u) for u in ("a", "b", "c")}
    assert all(r.outcome == pb.OUTCOME_GRANTED for r in grants.values())
    assert claim(claims, cid, "d").outcome == pb.OUTCOME_SOLD_OUT
    time.sleep(0.5)  # the node loads its snapshot of the grants in the background

    def script_calls() -> int:
        stats = redis_client.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))

    before = script_calls()
    for i in range(100):
        assert claim(claims, cid, f"late{i}").outcome == pb.OUTCOME_SOLD_OUT
    replay = claim(claims, cid, "a")  # same request id as a's grant
    again = claim(claims, cid, "b", "other-request")
    assert script_calls() == before
    assert replay.outcome == pb.OUTCOME_GRANTED
    assert replay.voucher.voucher_id == grants["a"].voucher.voucher_id
    assert again.outcome == pb.OUTCOME_ALREADY_CLAIMED
    assert again.voucher.voucher_id == grants["b"].voucher.voucher_id


def test_sold_out_cache_reopens_when_stock_comes_back(admin, claims, redis_client):
    cid = create_campaign(admin, inventory=2, shards=2).campaign.campaign_id
    assert claim(claims, cid, "a").outcome == pb.OUTCOME_GRANTED
    assert claim(claims, cid, "b").outcome == pb.OUTCOME_GRANTED
    assert claim(claims, cid, "c").outcome == pb.OUTCOME_SOLD_OUT
    redis_client.hincrby(shard_keys(cid, 1).state, "stock", 1)  # a restock, as recycling will do
    deadline = time.monotonic() + 5
    outcome = pb.OUTCOME_SOLD_OUT
    while outcome == pb.OUTCOME_SOLD_OUT and time.monotonic() < deadline:
        time.sleep(0.2)
        outcome = claim(claims, cid, "c").outcome
    assert outcome == pb.OUTCOME_GRANTED
    assert claim(claims, cid, "d").outcome == pb.OUTCOME_SOLD_OUT


def test_pause_and_resume(admin, claims):
    cid = create_campaign(admin, inventory=10, shards=2).campaign.campaign_id
    granted = claim(claims, cid, "early")
    info = admin.PauseCampaign(pb.PauseCampaignRequest(campaign_id=cid), timeout=5).campaign
    assert info.paused
    assert claim(claims, cid, "x").outcome == pb.OUTCOME_PAUSED
    assert claim(claims, cid, "early").voucher == granted.voucher  # replays still answer
    assert not admin.ResumeCampaign(pb.ResumeCampaignRequest(campaign_id=cid), timeout=5).campaign.paused
    assert claim(claims, cid, "x").outcome == pb.OUTCOME_GRANTED


def test_not_started_and_ended(admin, claims):
    now = int(time.time() * 1000)
    future = create_campaign(admin, inventory=5, starts_at_ms=now + 3_600_000).campaign.campaign_id
    reply = claim(claims, future, "u1")
    assert reply.outcome == pb.OUTCOME_NOT_STARTED
    assert 3_500_000 < reply.retry_after_ms <= 3_600_000
    past = create_campaign(admin, inventory=5, starts_at_ms=now - 7_200_000,
                           ends_at_ms=now - 3_600_000).campaign.campaign_id
    assert claim(claims, past, "u1").outcome == pb.OUTCOME_ENDED
    info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=past), timeout=5).campaign
    assert info.granted == 0 and info.remaining == 5


def test_admission_sheds_beyond_the_rate(admin, claims):
    cid = create_campaign(admin, inventory=10_000, shards=1, admission_rate=20,
                          admission_burst=20).campaign.campaign_id
    replies = [claim(claims, cid, f"u{i}") for i in range(60)]
    outcomes = Counter(r.outcome for r in replies)
    assert outcomes[pb.OUTCOME_RATE_LIMITED] > 0
    assert outcomes[pb.OUTCOME_GRANTED] + outcomes[pb.OUTCOME_RATE_LIMITED] == 60
    limited = [r for r in replies if r.outcome == pb.OUTCOME_RATE_LIMITED]
    assert all(0 < r.retry_after_ms <= 1000 for r in limited)
    info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=5).campaign
    assert info.granted == outcomes[pb.OUTCOME_GRANTED]  # a limited claim wrote nothing


def test_claim_batch_keeps_order_and_mixes_outcomes(admin, claims):
    cid = create_campaign(admin, inventory=3, shards=2).campaign.campaign_id
    items = [pb.ClaimRequest(campaign_id=cid, user_id=f"u{i % 4}", request_id=f"b{i}")
             for i in range(8)]
    replies = claims.ClaimBatch(pb.ClaimBatchRequest(claims=items), timeout=10).replies
    assert len(replies) == 8
    by_user: dict[str, set[str]] = defaultdict(set)
    for item, reply in zip(items, replies, strict=True):
        assert reply.outcome in (pb.OUTCOME_GRANTED, pb.OUTCOME_ALREADY_CLAIMED, pb.OUTCOME_SOLD_OUT)
        if reply.HasField("voucher"):
            assert reply.voucher.user_id == item.user_id
            by_user[item.user_id].add(reply.voucher.voucher_id)
    assert all(len(v) == 1 for v in by_user.values())
    assert len(by_user) == 3
    again = claims.ClaimBatch(pb.ClaimBatchRequest(claims=items), timeout=10).replies
    for first, second in zip(replies, again, strict=True):
        if first.outcome == pb.OUTCOME_GRANTED:
            assert second.outcome == pb.OUTCOME_GRANTED and second.voucher == first.voucher


def test_get_claim_settles_by_request_or_user(admin, claims):
    cid = create_campaign(admin, inventory=5, shards=4).campaign.campaign_id
    granted = claim(claims, cid, "carol", "lost-reply")
    by_request = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, request_id="lost-reply",
                                                    user_id="carol"), timeout=5)
    assert by_request.found and list(by_request.vouchers) == [granted.voucher]
    by_user = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="carol"), timeout=5)
    assert list(by_user.vouchers) == [granted.voucher]
    wrong_user = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, request_id="lost-reply",
                                                    user_id="dave"), timeout=5)
    assert not wrong_user.found
    unknown = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, request_id="never",
                                                 user_id="carol"), timeout=5)
    assert not unknown.found and len(unknown.vouchers) == 0
    with pytest.raises(grpc.RpcError) as err:  # records live on the user's shard
        claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, request_id="lost-reply"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


BAD_CLAIMS = [
    dict(campaign_id="", user_id="u", request_id="r"),
    dict(campaign_id="{evil}", user_id="u", request_id="r"),
    dict(campaign_id="c" * 65, user_id="u", request_id="r"),
    dict(campaign_id="ok", user_id="", request_id="r"),
    dict(campaign_id="ok", user_id="a|b", request_id="r"),
    dict(campaign_id="ok", user_id="u" * 129, request_id="r"),
    dict(campaign_id="ok", user_id="u\x00", request_id="r"),
    dict(campaign_id="ok", user_id="ü", request_id="r"),
    dict(campaign_id="ok", user_id="u", request_id=""),
    dict(campaign_id="ok", user_id="u", request_id="r,s"),
    dict(campaign_id="ok", user_id="u", request_id="r", channel_id="bad channel"),
]


@pytest.mark.parametrize("fields", BAD_CLAIMS)
def test_bad_claim_is_invalid_argument_and_writes_nothing(admin, claims, redis_client, fields):
    cid = create_campaign(admin, inventory=5, shards=2).campaign.campaign_id
    fields = {k: (cid if v == "ok" else v) for k, v in fields.items()}
    before = redis_dump(redis_client, cid)
    with pytest.raises(grpc.RpcError) as err:
        claims.Claim(pb.ClaimRequest(**fields), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:  # one bad item spoils the whole batch, before any write
        good = pb.ClaimRequest(campaign_id=cid, user_id="fine", request_id="fine")
        claims.ClaimBatch(pb.ClaimBatchRequest(claims=[good, pb.ClaimRequest(**fields)]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "claims[1]" in err.value.details()
    assert redis_dump(redis_client, cid) == before


def test_oversized_and_empty_batches_are_rejected(admin, claims, redis_client):
    cid = create_campaign(admin, inventory=5000, shards=2).campaign.campaign_id
    before = redis_dump(redis_client, cid)
    for size in (0, 1001):
        items = [pb.ClaimRequest(campaign_id=cid, user_id=f"u{i}", request_id=f"r{i}") for i in range(size)]
        with pytest.raises(grpc.RpcError) as err:
            claims.ClaimBatch(pb.ClaimBatchRequest(claims=items), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert redis_dump(redis_client, cid) == before


def test_unknown_campaign_is_not_found(claims, admin):
    cid = new_campaign_id("missing")
    for call in (lambda: claim(claims, cid, "u"),
                 lambda: admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=5).campaign,
                 lambda: claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="u"), timeout=5)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("fields", [
    dict(inventory=0),
    dict(inventory=100_000_001),
    dict(inventory=10, shards=11),
    dict(inventory=10, shards=2000),
    dict(inventory=10, per_user_limit=-1),
    dict(inventory=10, starts_at_ms=2000, ends_at_ms=1000),
    dict(inventory=10, admission_rate=-5),
    dict(inventory=10, category="has space"),
    dict(inventory=10, campaign_id="bad:id"),
])
def test_bad_campaign_is_invalid_argument(admin, redis_client, fields):
    before = redis_dump(redis_client)
    with pytest.raises(grpc.RpcError) as err:
        create_campaign(admin, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert redis_dump(redis_client) == before


def test_create_campaign_is_idempotent_and_conflicts_are_refused(admin):
    cid = new_campaign_id()
    first = create_campaign(admin, campaign_id=cid, inventory=10, shards=2)
    again = create_campaign(admin, campaign_id=cid, inventory=10, shards=2)
    assert first.campaign == again.campaign
    with pytest.raises(grpc.RpcError) as err:
        create_campaign(admin, campaign_id=cid, inventory=11, shards=2)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert cid in admin.ListCampaigns(pb.ListCampaignsRequest(), timeout=5).campaign_ids
