"""Anti-scalper limits through a real node (docs/abuse-limits.md): per-user, per-device and per-IP
rates, the deny list, per-channel quotas, and the keys taken from the request or its metadata."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign, redis_dump

pytestmark = pytest.mark.twins


@pytest.fixture(scope="module")
def limited(redis_server, tmp_path_factory):  # type: ignore[no-untyped-def]
    deny = tmp_path_factory.mktemp("deny") / "deny.txt"
    deny.write_text("# scalpers seen at the last launch\nuser:bot-1\ndevice:emulator-7\nip:10.0.0.0/8\n"
                    "ip:2001:db8::1\n")
    # Slow refills (a token every 10 to 100 s), so a test's few claims never see one come back.
    node = LocalNode(redis_server.url, "--user-rate", "0.1", "--user-burst", "2",
                     "--device-rate", "0.05", "--device-burst", "3", "--ip-rate", "0.01", "--ip-burst", "4",
                     "--deny-file", str(deny), "--channel-quota", "busy=0.1:2").start()
    yield node
    node.stop()


@pytest.fixture
def stubs(limited):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(limited.address) as ch:
        yield pb_grpc.ClaimServiceStub(ch), pb_grpc.AdminServiceStub(ch)


def claim(claims, cid, user, n, metadata=(), **fields):  # type: ignore[no-untyped-def]
    return claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=f"{user}-{n}", **fields),
                        metadata=metadata, timeout=5)


def test_a_user_past_their_rate_is_rate_limited_and_others_are_not(stubs):
    claims, admin = stubs
    cid = create_campaign(admin, inventory=100, shards=2, per_user_limit=10).campaign.campaign_id
    replies = [claim(claims, cid, "u-fast", n) for n in range(3)]
    assert [r.outcome for r in replies] == [pb.OUTCOME_GRANTED, pb.OUTCOME_GRANTED, pb.OUTCOME_RATE_LIMITED]
    assert replies[2].detail == "user rate" and 1_000 <= replies[2].retry_after_ms <= 10_000
    assert claim(claims, cid, "u-calm", 0).outcome == pb.OUTCOME_GRANTED


def test_device_and_ip_come_from_the_request_or_the_metadata(stubs):
    claims, admin = stubs
    cid = create_campaign(admin, inventory=100, shards=2).campaign.campaign_id
    by_field = [claim(claims, cid, f"d{n}", 0, device_id="phone-42").outcome for n in range(3)]
    by_meta = claim(claims, cid, "d3", 0, metadata=(("x-device-id", "phone-42"),))
    assert by_field == [pb.OUTCOME_GRANTED] * 3 and by_meta.outcome == pb.OUTCOME_RATE_LIMITED
    assert by_meta.detail == "device rate"
    # one IPv6 /64 is one subscriber: its addresses share a bucket
    ips = [f"2001:db8:aa:bb::{n}" for n in range(1, 6)]
    outcomes = [claim(claims, cid, f"i{n}", 0, client_ip=ip).outcome for n, ip in enumerate(ips[:4])]
    fifth = claim(claims, cid, "i5", 0, metadata=(("x-client-ip", ips[4]),))
    assert outcomes == [pb.OUTCOME_GRANTED] * 4
    assert (fifth.outcome, fifth.detail) == (pb.OUTCOME_RATE_LIMITED, "ip rate")


@pytest.mark.parametrize("fields, metadata, reason", [
    ({"user_id": "bot-1"}, (), "user denied"),
    ({"device_id": "emulator-7"}, (), "device denied"),
    ({}, (("x-device-id", "emulator-7"),), "device denied"),
    ({"client_ip": "10.20.30.40"}, (), "ip denied"),
    ({"client_ip": "2001:db8::1"}, (), "ip denied"),
])
def test_the_deny_list_answers_not_eligible_and_writes_nothing(stubs, redis_client, fields, metadata, reason):
    claims, admin = stubs
    cid = create_campaign(admin, inventory=10, shards=1).campaign.campaign_id
    before = redis_dump(redis_client, cid)
    request = {"user_id": "someone", **fields}
    reply = claim(claims, cid, request.pop("user_id"), 0, metadata=metadata, **request)
    assert (reply.outcome, reply.detail) == (pb.OUTCOME_NOT_ELIGIBLE, reason)
    assert reply.not_eligible_reason == pb.NOT_ELIGIBLE_REASON_BLOCKED
    assert redis_dump(redis_client, cid) == before


def test_a_channel_at_its_quota_does_not_starve_the_others(stubs):
    claims, admin = stubs
    cid = create_campaign(admin, inventory=100, shards=2).campaign.campaign_id
    busy = [claim(claims, cid, f"b{n}", 0, channel_id="busy") for n in range(4)]
    assert [r.outcome for r in busy] == [pb.OUTCOME_GRANTED] * 2 + [pb.OUTCOME_RATE_LIMITED] * 2
    assert busy[2].detail == "channel quota"
    assert all(claim(claims, cid, f"c{n}", 0, channel_id="calm").outcome == pb.OUTCOME_GRANTED
               for n in range(4))


def test_a_scalper_device_is_held_back_while_honest_users_all_get_through(stubs):
    claims, admin = stubs
    cid = create_campaign(admin, inventory=1000, shards=4).campaign.campaign_id
    scalper = [claim(claims, cid, f"sock-{n}", 0, device_id="farm-1").outcome for n in range(100)]
    honest = [claim(claims, cid, f"citizen-{n}", 0, device_id=f"own-{n}").outcome for n in range(50)]
    assert scalper.count(pb.OUTCOME_GRANTED) == 3 and scalper.count(pb.OUTCOME_RATE_LIMITED) == 97
    assert honest == [pb.OUTCOME_GRANTED] * 50


@pytest.mark.parametrize("fields, metadata", [
    ({"client_ip": "300.1.2.3"}, ()),
    ({"client_ip": "10.0.0.1:8080"}, ()),
    ({"device_id": "has space"}, ()),
    ({}, (("x-client-ip", "not-an-ip"),)),
    ({}, (("x-device-id", "x" * 129),)),
])
def test_bad_device_or_ip_is_invalid_argument(stubs, redis_client, fields, metadata):
    claims, admin = stubs
    cid = create_campaign(admin, inventory=10, shards=1).campaign.campaign_id
    before = redis_dump(redis_client, cid)
    with pytest.raises(grpc.RpcError) as err:
        claim(claims, cid, "u", 0, metadata=metadata, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert redis_dump(redis_client, cid) == before


def test_a_bad_deny_file_stops_the_node_with_the_line(tmp_path):
    deny = tmp_path / "deny.txt"
    deny.write_text("user:ok\nphone:123\n")
    done = subprocess.run([sys.executable, "-m", "claimcore", "serve", "--plaintext", "--no-auth",
                           "--port", "0",
                           "--redis", "redis://127.0.0.1:1", "--deny-file", str(deny)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and f"{deny}:2:" in done.stderr


def test_a_user_rate_alone_is_enforced(redis_server):
    node = LocalNode(redis_server.url, "--user-rate", "0.1", "--user-burst", "1").start()
    try:
        with grpc.insecure_channel(node.address) as ch:
            claims, admin = pb_grpc.ClaimServiceStub(ch), pb_grpc.AdminServiceStub(ch)
            cid = create_campaign(admin, inventory=10, shards=1, per_user_limit=5).campaign.campaign_id
            outcomes = [claim(claims, cid, "solo", n).outcome for n in range(2)]
            assert outcomes == [pb.OUTCOME_GRANTED, pb.OUTCOME_RATE_LIMITED]
    finally:
        node.stop()
