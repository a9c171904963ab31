"""Many front nodes on one Redis (issue 5): nodes hold nothing that matters.

A node killed with SIGKILL mid-burst loses nothing: its clients retry through
another node with the same request_id and get the outcomes already recorded,
never a second voucher. A campaign created through one node reaches the others
once their short negative cache expires (docs/architecture.md: 0.5 s); a pause
or a reshard reaches them at once.
"""

from __future__ import annotations

import asyncio
import signal
import time

import grpc

from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign, new_campaign_id

NEGATIVE_TTL_S = 0.5  # claimcore.store.campaign_cache.CampaignCache default


def test_node_killed_mid_burst_loses_nothing(redis_server, node):
    inventory, users = 200, 600
    victim = LocalNode(redis_server.url).start()
    with grpc.insecure_channel(node.address) as ch:
        admin = pb_grpc.AdminServiceStub(ch)
        cid = create_campaign(admin, inventory=inventory, shards=4).campaign.campaign_id

    requests = [(f"u{i}", f"r{i}") for i in range(users)]
    first: dict[tuple[str, str], pb.ClaimResponse] = {}

    async def through_victim() -> int:
        """Claim through the victim; kill it with SIGKILL after 150 replies."""
        failed = 0
        async with grpc.aio.insecure_channel(victim.address) as channel:
            stub = pb_grpc.ClaimServiceStub(channel)
            queue = list(requests)

            async def client() -> None:
                nonlocal failed
                while queue:
                    user, rid = queue.pop()
                    try:
                        first[(user, rid)] = await stub.Claim(
                            pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid), timeout=5)
                    except grpc.aio.AioRpcError:
                        failed += 1
                    if len(first) == 150 and victim.proc is not None:
                        victim.stop(signal.SIGKILL)

            await asyncio.gather(*(client() for _ in range(32)))
        return failed

    failed = asyncio.run(through_victim())
    assert victim.proc is None and 150 <= len(first) < users and failed > 0

    async def retry_all_through_survivor() -> dict[tuple[str, str], pb.ClaimResponse]:
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = pb_grpc.ClaimServiceStub(channel)
            replies = await asyncio.gather(*(
                stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=u, request_id=r), timeout=10)
                for u, r in requests))
        return dict(zip(requests, replies, strict=True))

    second = asyncio.run(retry_all_through_survivor())
    for key, before in first.items():
        if before.outcome == pb.OUTCOME_GRANTED:  # recorded before the kill: the retry gets it back
            assert second[key].outcome == pb.OUTCOME_GRANTED and second[key].voucher == before.voucher
    holders = {user: reply.voucher.voucher_id for (user, _), reply in second.items()
               if reply.outcome == pb.OUTCOME_GRANTED}
    assert len(holders) == inventory == len(set(holders.values()))
    assert {r.outcome for r in second.values()} == {pb.OUTCOME_GRANTED, pb.OUTCOME_SOLD_OUT}
    with grpc.insecure_channel(node.address) as ch:
        info = pb_grpc.AdminServiceStub(ch).GetCampaign(pb.GetCampaignRequest(campaign_id=cid),
                                                        timeout=5).campaign
    assert info.granted == inventory and info.remaining == 0


def test_campaign_created_through_one_node_reaches_another(redis_server, node):
    other = LocalNode(redis_server.url).start()
    cid = new_campaign_id()
    try:
        with grpc.insecure_channel(other.address) as ch:
            claims = pb_grpc.ClaimServiceStub(ch)
            request = pb.ClaimRequest(campaign_id=cid, user_id="early", request_id="r")
            try:  # `other` learns that the campaign does not exist (and caches that)
                claims.Claim(request, timeout=5)
                raise AssertionError("claim on a campaign not yet created")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND
            with grpc.insecure_channel(node.address) as ch_a:
                create_campaign(pb_grpc.AdminServiceStub(ch_a), campaign_id=cid, inventory=5)
            time.sleep(NEGATIVE_TTL_S + 0.1)
            assert claims.Claim(request, timeout=5).outcome == pb.OUTCOME_GRANTED
    finally:
        other.stop()


def test_pause_and_reshard_through_one_node_reach_another_at_once(redis_server, node):
    """Changes need no cache expiry: a pause is a flag claim.lua reads, a reshard an epoch
    the scripts check, so the other node's very next claim follows them."""
    other = LocalNode(redis_server.url).start()
    try:
        with grpc.insecure_channel(node.address) as ch_a, grpc.insecure_channel(other.address) as ch_b:
            admin_a, claims_b = pb_grpc.AdminServiceStub(ch_a), pb_grpc.ClaimServiceStub(ch_b)
            cid = create_campaign(admin_a, inventory=50, shards=2).campaign.campaign_id

            def claim_b(user: str) -> pb.ClaimResponse:
                request = pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r")
                return claims_b.Claim(request, timeout=5)

            first = claim_b("u0")  # `other` now caches the campaign, at 2 shards
            admin_a.PauseCampaign(pb.PauseCampaignRequest(campaign_id=cid), timeout=5)
            paused = claim_b("u1")
            admin_a.ResumeCampaign(pb.ResumeCampaignRequest(campaign_id=cid), timeout=5)
            admin_a.Reshard(pb.ReshardRequest(campaign_id=cid, shards=7), timeout=30)
            after = [claim_b(f"u{i}") for i in range(1, 20)]
            replay = claim_b("u0")
            info = admin_a.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=5).campaign
    finally:
        other.stop()
    assert (first.outcome, paused.outcome) == (pb.OUTCOME_GRANTED, pb.OUTCOME_PAUSED)
    assert {r.outcome for r in after} == {pb.OUTCOME_GRANTED}
    assert replay.voucher.voucher_id == first.voucher.voucher_id
    assert info.granted == 20 and info.campaign.shards == 7
    shards_used = {int(r.voucher.voucher_id.rsplit("-", 2)[1]) for r in after}
    assert max(shards_used) >= 2  # `other` routed by the new map, without a restart
