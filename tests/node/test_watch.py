"""WatchCampaigns and the client's CampaignWatch, through real nodes on a real redis-server.

A watcher sees a campaign go open -> sold out (also when the claims went to another node), leave
sold out when a released voucher's stock comes back before anyone can be granted it, pause and
resume, start and end, and a reshard's epoch; the watch moves to another node when its node
stops; 500 streams on one node all get one change; bad input is refused and changes nothing; on a
node with credentials only a known caller watches, a channel only the campaigns open to it;
ClaimClient(watch=True) answers new claims of a sold-out campaign itself, never one it already sent.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import redis

from claimcore.client import ClaimClient
from claimcore.client.watch import LOCAL_DETAIL, MARGIN_MS, MAX_AGE_MS, CampaignWatch, sold_out_until
from claimcore.clock import now_ms
from claimcore.security.access import Access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign, redis_dump
from support import keygen

OPEN, SOLD_OUT = pb.CAMPAIGN_PHASE_OPEN, pb.CAMPAIGN_PHASE_SOLD_OUT
LEFT_SOLD_OUT = (pb.CAMPAIGN_PHASE_STOCK_RETURNING, pb.CAMPAIGN_PHASE_OPEN)


@pytest.fixture(scope="module")
def other_node(redis_server) -> LocalNode:
    node = LocalNode(redis_server.url, "--recycle-every-s", "0").start()
    yield node
    node.stop()


async def claim(address: str, cid: str, user: str) -> pb.ClaimResponse:
    async with grpc.aio.insecure_channel(address) as ch:
        return await pb_grpc.ClaimServiceStub(ch).Claim(
            pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=f"r-{user}"), timeout=10)


async def take_all(address: str, cid: str, inventory: int) -> list[pb.ClaimResponse]:
    """Claims by inventory + 1 users: all the stock, and one SOLD_OUT."""
    replies = [await claim(address, cid, f"u{i}") for i in range(inventory + 1)]
    assert [r.outcome for r in replies].count(pb.OUTCOME_GRANTED) == inventory
    return replies


def test_a_watcher_sees_open_then_sold_out_when_the_claims_went_to_another_node(node, other_node, admin):
    cid = create_campaign(admin, inventory=5, shards=2).campaign.campaign_id

    async def main() -> None:
        async with CampaignWatch([other_node.address], [cid]) as watch:
            first = await watch.wait_for(cid)
            assert first.state.phase == OPEN and first.node == other_node.address
            assert watch.local_answer(cid) is None
            await take_all(node.address, cid, 5)  # the watched node sees none of these claims
            sold = await watch.wait_for(cid, SOLD_OUT)
            assert 0 < sold.state.sold_out_valid_for_ms <= 1500
            reply = watch.local_answer(cid)
            assert reply is not None and reply.outcome == pb.OUTCOME_SOLD_OUT and reply.detail == LOCAL_DETAIL
            assert watch.answered_locally == 1 and watch.untrusted == 0
            # Heartbeats: the sold-out state keeps being confirmed, each a new state.
            again = await watch.wait_for(cid, SOLD_OUT, min_epoch=0)
            while again.state.sequence == sold.state.sequence:
                await asyncio.sleep(0.05)
                again = watch.state(cid)
            assert again.state.phase == SOLD_OUT

    asyncio.run(main())


def test_a_release_leaves_sold_out_before_the_returned_stock_can_be_granted(node, admin, channel):
    """The exactness rule: no claim answered SOLD_OUT locally while a node would grant it."""
    cid = create_campaign(admin, inventory=3, shards=1).campaign.campaign_id
    redeem = pb_grpc.RedeemServiceStub(channel)

    async def main() -> None:
        async with CampaignWatch([node.address], [cid]) as watch:
            await watch.wait_for(cid, OPEN)
            granted = await take_all(node.address, cid, 3)
            await watch.wait_for(cid, SOLD_OUT)
            left_at: list[float] = []
            wrong: list[str] = []
            first_grant: list[float] = []

            async def follow() -> None:
                state = await watch.wait_for(cid, *LEFT_SOLD_OUT)
                left_at.append(state.received_at)

            async def keep_claiming() -> None:
                async with grpc.aio.insecure_channel(node.address) as ch:
                    stub = pb_grpc.ClaimServiceStub(ch)
                    for i in range(2000):
                        local = watch.local_answer(cid)  # what the client would have answered itself
                        reply = await stub.Claim(pb.ClaimRequest(
                            campaign_id=cid, user_id=f"late{i}", request_id=f"late{i}"), timeout=10)
                        if reply.outcome == pb.OUTCOME_GRANTED:
                            first_grant.append(time.monotonic())
                            if local is not None:
                                wrong.append(f"late{i} answered SOLD_OUT locally, granted by the node")
                            return
                        await asyncio.sleep(0.01)

            follower = asyncio.create_task(follow())
            before = watch.answered_locally
            released = redeem.Release(pb.ReleaseRequest(
                campaign_id=cid, user_id="u0", voucher_id=granted[0].voucher.voucher_id), timeout=10)
            assert released.released, released.detail
            await keep_claiming()
            await asyncio.wait_for(follower, 10)
            assert first_grant, "the released voucher's stock was never granted again"
            assert not wrong, wrong
            assert watch.answered_locally > before  # local answers were given while it was sold out
            assert left_at[0] < first_grant[0], "the pushed state left sold out only after a grant"
            assert watch.local_answer(cid) is None or watch.state(cid).state.phase == SOLD_OUT

    asyncio.run(main())


def test_pause_resume_and_a_reshard_are_pushed(node, admin):
    cid = create_campaign(admin, inventory=50, shards=2).campaign.campaign_id

    async def main() -> None:
        async with CampaignWatch([node.address], [cid]) as watch:
            assert (await watch.wait_for(cid, OPEN)).state.shard_epoch == 0
            admin.PauseCampaign(pb.PauseCampaignRequest(campaign_id=cid), timeout=10)
            await watch.wait_for(cid, pb.CAMPAIGN_PHASE_PAUSED)
            assert watch.local_answer(cid) is None  # only SOLD_OUT is answered locally
            admin.ResumeCampaign(pb.ResumeCampaignRequest(campaign_id=cid), timeout=10)
            await watch.wait_for(cid, OPEN)
            epoch = admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=4), timeout=30).shard_epoch
            assert epoch >= 1
            assert (await watch.wait_for(cid, OPEN, min_epoch=epoch)).state.shard_epoch == epoch

    asyncio.run(main())


def test_not_started_then_open_then_ended(node, admin):
    start = now_ms() + 1200
    cid = create_campaign(admin, inventory=10, starts_at_ms=start,
                          ends_at_ms=start + 1000).campaign.campaign_id

    async def main() -> None:
        async with CampaignWatch([node.address], [cid]) as watch:
            assert (await watch.wait_for(cid)).state.phase == pb.CAMPAIGN_PHASE_NOT_STARTED
            opened = await watch.wait_for(cid, OPEN)
            assert opened.state.observed_at_ms >= start
            ended = await watch.wait_for(cid, pb.CAMPAIGN_PHASE_ENDED)
            assert ended.state.observed_at_ms >= start + 1000

    asyncio.run(main())


def test_the_watch_moves_to_another_node_when_its_node_stops(redis_server, node, admin):
    cid = create_campaign(admin, inventory=4, shards=1).campaign.campaign_id
    doomed = LocalNode(redis_server.url, "--recycle-every-s", "0").start()

    async def main() -> None:
        try:
            async with CampaignWatch([doomed.address, node.address], [cid], backoff_s=0.01,
                                     first_node=0) as watch:
                await watch.wait_for(cid, OPEN)
                while watch.node != doomed.address:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(doomed.stop)  # a drain: the node ends its watch streams
                while watch.node != node.address:
                    await asyncio.sleep(0.01)
                assert watch.subscriptions >= 2
                await take_all(node.address, cid, 4)
                sold = await watch.wait_for(cid, SOLD_OUT)
                assert sold.node == node.address and watch.local_answer(cid) is not None
        finally:
            if doomed.alive():
                doomed.stop()

    asyncio.run(main())


def test_five_hundred_watchers_on_one_node_all_receive_one_change(node, admin):
    cid = create_campaign(admin, inventory=10, shards=1).campaign.campaign_id
    streams_n = 500

    async def main() -> None:
        channels = [grpc.aio.insecure_channel(node.address) for _ in range(5)]
        calls = [pb_grpc.ClaimServiceStub(channels[i % 5]).WatchCampaigns(
            pb.WatchCampaignsRequest(campaign_ids=[cid])) for i in range(streams_n)]
        try:
            firsts = await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), 30)
            assert {m.state.phase for m in firsts} == {OPEN}
            admin.PauseCampaign(pb.PauseCampaignRequest(campaign_id=cid), timeout=10)

            async def until_paused(call) -> pb.CampaignState:
                while (state := (await call.read()).state).phase != pb.CAMPAIGN_PHASE_PAUSED:
                    pass
                return state

            paused = await asyncio.wait_for(asyncio.gather(*(until_paused(c) for c in calls)), 30)
            assert len(paused) == streams_n
            assert len({s.sequence for s in paused}) == 1  # one state, computed once, sent to all
        finally:
            for c in calls:
                c.cancel()
            for ch in channels:
                await ch.close()

    asyncio.run(main())


@pytest.mark.parametrize(("ids", "code", "names"), [
    ([], grpc.StatusCode.INVALID_ARGUMENT, "campaign_ids"),
    (["KNOWN", "nx-unknown"], grpc.StatusCode.NOT_FOUND, "nx-unknown"),
    (["KNOWN"] * 101, grpc.StatusCode.INVALID_ARGUMENT, "campaign_ids"),
    (["KNOWN", "a{b}"], grpc.StatusCode.INVALID_ARGUMENT, "campaign_ids[1]"),
])
def test_bad_input_is_refused_and_changes_nothing(ids, code, names, admin, channel, redis_server):
    cid = create_campaign(admin, inventory=10).campaign.campaign_id
    ids = [cid if i == "KNOWN" else i for i in ids]
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        before = redis_dump(client, cid)
        with pytest.raises(grpc.RpcError) as err:
            next(pb_grpc.ClaimServiceStub(channel).WatchCampaigns(
                pb.WatchCampaignsRequest(campaign_ids=ids), timeout=10))
        assert err.value.code() == code
        assert names in err.value.details()
        assert redis_dump(client, cid) == before
    finally:
        client.close()


def test_on_a_node_with_credentials_a_channel_watches_only_its_campaigns(redis_server, tmp_path):
    (admin_key, admin_line), (bank_key, bank_line) = keygen("--admin"), keygen("--channel", "bank")
    creds = tmp_path / "credentials.toml"
    creds.write_text(f"[admin]\n{admin_line}\n\n[channels.bank]\n{bank_line}\n")
    secured = LocalNode(redis_server.url, "--credentials", str(creds)).start()
    try:
        admin = pb_grpc.AdminServiceStub(Access(api_key=admin_key).channel(secured.address))
        open_to_bank = create_campaign(admin, inventory=5).campaign.campaign_id
        not_bank = create_campaign(admin, inventory=5, channels=["alipay"]).campaign.campaign_id

        def watch(ids: list[str], key: str) -> pb.CampaignState:
            reach = Access(api_key=key)
            stream = pb_grpc.ClaimServiceStub(reach.channel(secured.address)).WatchCampaigns(
                pb.WatchCampaignsRequest(campaign_ids=ids), metadata=reach.metadata, timeout=10)
            try:
                return next(stream).state
            finally:
                stream.cancel()

        assert watch([open_to_bank], bank_key).phase == OPEN
        for ids, key, code in [([open_to_bank], "", grpc.StatusCode.UNAUTHENTICATED),
                               ([open_to_bank], "not-a-key", grpc.StatusCode.UNAUTHENTICATED),
                               ([open_to_bank, not_bank], bank_key, grpc.StatusCode.PERMISSION_DENIED)]:
            with pytest.raises(grpc.RpcError) as err:
                watch(ids, key)
            assert err.value.code() == code, err.value.details()

        async def through_the_client() -> int:
            async with CampaignWatch([secured.address], [open_to_bank],
                                     reach=Access(api_key=bank_key)) as client_watch:
                return (await client_watch.wait_for(open_to_bank)).state.phase

        assert asyncio.run(through_the_client()) == OPEN
    finally:
        secured.stop()


def test_a_watching_client_answers_new_claims_of_a_sold_out_campaign_itself(node, other_node, admin):
    cid = create_campaign(admin, inventory=4, shards=2).campaign.campaign_id

    async def main() -> None:
        async with ClaimClient([node.address, other_node.address], watch=True) as client:
            granted = [await client.claim(cid, f"u{i}", f"r{i}") for i in range(4)]
            assert [r.outcome for r in granted] == [pb.OUTCOME_GRANTED] * 4
            assert client.watch is not None
            await client.watch.wait_for(cid, SOLD_OUT)
            fresh = await client.claim(cid, "late-1")  # no request id: new by construction
            assert fresh.outcome == pb.OUTCOME_SOLD_OUT and fresh.detail == LOCAL_DETAIL
            named = await client.claim(cid, "late-2", "never-sent")
            assert named.detail == LOCAL_DETAIL
            replay = await client.claim(cid, "u0", "r0")  # sent before: a node answers, with the grant
            assert replay.outcome == pb.OUTCOME_GRANTED
            assert replay.voucher.voucher_id == granted[0].voucher.voucher_id
            holder = await client.claim(cid, "u1")  # holds a voucher; a new request: SOLD_OUT locally
            assert holder.outcome == pb.OUTCOME_SOLD_OUT and holder.detail == LOCAL_DETAIL
            assert client.answered_locally == 3

    asyncio.run(main())


def test_a_sold_out_state_is_trusted_only_while_fresh():
    """The client's rule (client/watch.py): its validity less MARGIN_MS from receipt; none for a
    state older than MAX_AGE_MS by the node's clock on arrival, or for another phase."""
    def state(**fields: int) -> pb.CampaignState:
        return pb.CampaignState(campaign_id="c", phase=SOLD_OUT, observed_at_ms=1_000_000,
                                sold_out_valid_for_ms=1400, **fields)

    assert sold_out_until(state(), 50.0, 1_000_010) == pytest.approx(50.0 + (1400 - MARGIN_MS) / 1000)
    assert sold_out_until(state(), 50.0, 1_000_000 + MAX_AGE_MS + 1) == 0.0
    assert sold_out_until(pb.CampaignState(phase=OPEN, observed_at_ms=1_000_000), 50.0, 1_000_000) == 0.0
    short = pb.CampaignState(phase=SOLD_OUT, observed_at_ms=1_000_000, sold_out_valid_for_ms=MARGIN_MS)
    assert sold_out_until(short, 50.0, 1_000_000) == 0.0
