"""The front node when Redis fails or stalls, on SIGTERM, and its health and reflection."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign, health_status
from support import wait_for


@pytest.fixture
def own_redis():
    """A redis-server of this test alone, which it may kill.

    appendfsync always: with everysec, Redis may postpone the AOF write for
    up to 2 s while still replying, so a kill -9 can lose acknowledged
    grants (docs/architecture.md, "Durability").
    """
    server = EmbeddedRedis(appendfsync="always").start()
    yield server
    server.cleanup()



def test_redis_down_gives_unavailable_fast_then_recovers(own_redis):
    node = LocalNode(own_redis.url).start()
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=10, shards=2).campaign.campaign_id
            first = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="a", request_id="ra"), timeout=5)
            assert first.outcome == pb.OUTCOME_GRANTED

            own_redis.kill()
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="b", request_id="rb"), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 3.0  # fails fast, well inside the deadline
            assert wait_for(lambda: health_status(node.address)
                            == health_pb2.HealthCheckResponse.NOT_SERVING)

            own_redis.start()  # same port and data folder: the AOF brings the state back
            assert wait_for(lambda: health_status(node.address)
                            == health_pb2.HealthCheckResponse.SERVING)
            replay = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="a", request_id="ra"), timeout=5)
            assert replay.voucher == first.voucher  # the acknowledged grant survived the crash
            later = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="b", request_id="rb"), timeout=5)
            assert later.outcome == pb.OUTCOME_GRANTED  # no script cache needed re-loading by hand
    finally:
        node.stop()


def test_deadline_is_honoured_when_redis_stalls_and_retry_settles(own_redis):
    node = LocalNode(own_redis.url).start()
    direct = redis.Redis(port=own_redis.port)
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=10, shards=1).campaign.campaign_id
            request = pb.ClaimRequest(campaign_id=cid, user_id="slow", request_id="r-slow")
            direct.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                claims.Claim(request, timeout=0.3)
            elapsed = time.monotonic() - started
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert elapsed < 1.0
            time.sleep(1.6)  # the paused claim runs once Redis resumes: its outcome is unknown to the caller
            retry = claims.Claim(request, timeout=5)
            assert retry.outcome == pb.OUTCOME_GRANTED
            info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=5).campaign
            assert info.granted == 1  # the retry settled the same grant, not a second one
    finally:
        direct.close()
        node.stop()


def test_a_stalled_redis_makes_the_node_shed_at_once_and_write_nothing_for_the_shed(own_redis):
    """With Redis paused, claims pile up on the node: past --max-queued it answers RESOURCE_EXHAUSTED
    at once instead of queueing towards the deadline, and a shed claim was never sent to Redis."""
    node = LocalNode(own_redis.url, "--max-queued", "20").start()
    direct = redis.Redis(port=own_redis.port)
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=500, shards=2).campaign.campaign_id
            direct.execute_command("CLIENT", "PAUSE", 1200, "WRITE")  # within the node's 2 s Redis timeout
            calls = [claims.Claim.future(pb.ClaimRequest(campaign_id=cid, user_id=f"u{i}", request_id="r"),
                                         timeout=5) for i in range(200)]
            shed, answered = [], []
            for i, call in enumerate(calls):
                try:
                    answered.append((i, call.result().outcome))
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
                    shed.append(i)
            assert len(shed) >= 100 and all(outcome == pb.OUTCOME_GRANTED for _, outcome in answered)
            info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=5).campaign
            assert info.granted == len(answered)
            for i in shed[:20]:
                found = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id=f"u{i}"), timeout=5)
                assert not found.found
    finally:
        direct.close()
        node.stop()


def test_a_batch_that_does_not_fit_is_shed_whole(own_redis):
    """Past --max-queued a ClaimBatch is refused as a whole: none of its claims is queued, so none
    reaches Redis (a batch half queued would leave its caller not knowing which of them ran)."""
    node = LocalNode(own_redis.url, "--max-queued", "20").start()
    direct = redis.Redis(port=own_redis.port)
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=500, shards=2).campaign.campaign_id
            direct.execute_command("CLIENT", "PAUSE", 1200, "WRITE")
            # The first batch goes out to the paused Redis (one flush in flight at a time), the second
            # waits in the node's queue (15 of 20), the third does not fit.
            sent = []
            for n in range(2):
                batch = [pb.ClaimRequest(campaign_id=cid, user_id=f"a{n}-{i}", request_id="r")
                         for i in range(15)]
                sent.append(claims.ClaimBatch.future(pb.ClaimBatchRequest(claims=batch), timeout=5))
                time.sleep(0.2)
            with pytest.raises(grpc.RpcError) as err:
                claims.ClaimBatch(pb.ClaimBatchRequest(claims=[
                    pb.ClaimRequest(campaign_id=cid, user_id=f"b{i}", request_id="r") for i in range(10)]),
                    timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
            for call in sent:
                assert [r.outcome for r in call.result().replies] == [pb.OUTCOME_GRANTED] * 15
            info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=5).campaign
            assert info.granted == 30
            for i in range(10):
                found = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id=f"b{i}"), timeout=5)
                assert not found.found
    finally:
        direct.close()
        node.stop()


def test_sigterm_drains_in_flight_claims(own_redis):
    node = LocalNode(own_redis.url, "--grace", "5").start()
    direct = redis.Redis(port=own_redis.port)
    results: list[object] = []
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=10, shards=1).campaign.campaign_id
            direct.execute_command("CLIENT", "PAUSE", 1000, "WRITE")  # hold the claim in flight

            def in_flight() -> None:
                try:
                    results.append(claims.Claim(
                        pb.ClaimRequest(campaign_id=cid, user_id="u", request_id="r"), timeout=10))
                except grpc.RpcError as exc:
                    results.append(exc.code())

            caller = threading.Thread(target=in_flight)
            caller.start()
            time.sleep(0.3)
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
            assert wait_for(lambda: health_status(node.address) != health_pb2.HealthCheckResponse.SERVING, 3)
            caller.join(timeout=10)
        assert len(results) == 1 and isinstance(results[0], pb.ClaimResponse)
        assert results[0].outcome == pb.OUTCOME_GRANTED
        assert node.proc.wait(timeout=10) == 0  # drained and exited by itself
    finally:
        direct.close()
        node.stop()


def test_health_and_reflection_list_the_services(node):
    assert health_status(node.address) == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(node.address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"claimcore.v1.ClaimService", "claimcore.v1.AdminService", "grpc.health.v1.Health"} <= names


def test_serve_without_redis_starts_its_own():
    node = LocalNode("", "--ephemeral").start()  # --redis "": no URL, so it starts a throwaway redis-server
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=1).campaign.campaign_id
            reply = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="u", request_id="r"), timeout=5)
            assert reply.outcome == pb.OUTCOME_GRANTED
    finally:
        assert node.stop() == 0
