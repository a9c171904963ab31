"""Every error status carries machine-readable details (issue 16, docs/errors.md).

Read from plain grpc clients (generated stubs or raw method calls, not claimcore's client library),
the way a client in another language reads them: the `grpc-status-details-bin` trailer is a
google.rpc.Status with the call's code and message, holding an ErrorInfo (a stable reason, domain
claimcore.dev, metadata such as campaign_id), a BadRequest naming the field for INVALID_ARGUMENT,
and a RetryInfo where waiting is the cure. Through real nodes on a real redis-server, plus a real
grpc.aio server that ends calls through node/errors.py with each kind of error the node maps.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import redis.exceptions
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from claimcore import validation as v
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.lifecycle.snregistry import SnHoldLost
from claimcore.node import errors
from claimcore.node.batcher import Overloaded
from claimcore.node.error_details import status_details
from claimcore.security.auth import PermissionDenied
from claimcore.store.campaign_cache import CampaignNotFound
from claimcore.store.cluster_calls import ReplicaAckTimeout
from claimcore.store.replies import BorrowContention, ShardMissing, ShardMoving, StaleMap
from claimcore.store.reshard import ReshardBusy, ReshardRefused
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign, new_campaign_id
from support import keygen

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
C = grpc.StatusCode


def details(err: grpc.RpcError) -> dict[str, Any]:
    """The rich status of a failed call, read with grpcio-status (which checks that its code and
    message are the call's), as a dict: reason, domain, metadata, violations, retry_ms."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"{err.code()} {err.details()!r} carries no grpc-status-details-bin"
    return unpacked(status)


def unpacked(status: status_pb2.Status) -> dict[str, Any]:
    found: dict[str, Any] = {"violations": None, "retry_ms": None}
    kinds = [d.TypeName() for d in status.details]
    assert len(kinds) == len(set(kinds)), kinds  # one of each kind at most
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            found.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            found["violations"] = [(f.field, f.description) for f in bad.field_violations]
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            found["retry_ms"] = retry.retry_delay.seconds * 1000 + retry.retry_delay.nanos // 1_000_000
        else:
            raise AssertionError(f"unexpected detail {packed.type_url}")
    assert "reason" in found, "no ErrorInfo"
    assert found["domain"] == "claimcore.dev"
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", found["reason"]), found["reason"]
    return found


def failed(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=10, **kwargs)
    return err.value


def claim_request(cid: str, user: str = "u1", rid: str = "r1") -> pb.ClaimRequest:
    return pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid)


# ------------------------------------------------------------------ INVALID_ARGUMENT


def test_a_bad_user_id_on_claim_names_the_field(admin, claims):
    cid = create_campaign(admin, inventory=5).campaign.campaign_id
    err = failed(claims.Claim, claim_request(cid, user="no spaces please"))
    assert err.code() == C.INVALID_ARGUMENT
    got = details(err)
    assert got["reason"] == "INVALID_FIELD"
    assert got["violations"] == [("user_id", err.details())]
    assert got["metadata"] == {"campaign_id": cid}
    assert got["retry_ms"] is None  # the same request fails the same way: no retry advice


def test_a_bad_campaign_id_is_named_and_not_echoed_in_the_metadata(claims):
    err = failed(claims.Claim, claim_request("bad campaign " + "x" * 500))
    got = details(err)
    assert err.code() == C.INVALID_ARGUMENT and got["reason"] == "INVALID_FIELD"
    assert [f for f, _ in got["violations"]] == ["campaign_id"]
    assert got["metadata"] == {}  # unchecked input is not repeated back


def test_a_bad_id_inside_claim_batch_names_its_item_and_field(admin, claims):
    cid = create_campaign(admin, inventory=5).campaign.campaign_id
    batch = [claim_request(cid, f"u{i}", f"r{i}") for i in range(4)]
    batch[2].request_id = "bad/request"
    err = failed(claims.ClaimBatch, pb.ClaimBatchRequest(claims=batch))
    assert err.code() == C.INVALID_ARGUMENT
    got = details(err)
    assert got["reason"] == "INVALID_FIELD"
    assert got["violations"] == [("claims[2].request_id", err.details())]
    assert got["metadata"] == {"campaign_id": cid}


def test_an_empty_claim_batch_names_the_claims_field(claims):
    err = failed(claims.ClaimBatch, pb.ClaimBatchRequest(claims=[]))
    got = details(err)
    assert err.code() == C.INVALID_ARGUMENT and got["violations"] == [("claims", err.details())]


@pytest.mark.parametrize("method", ["/claimcore.v1.ClaimService/Claim",
                                    "/claimcore.v1.ClaimService/ClaimBatch",
                                    "/claimcore.v1.AdminService/GetCampaign"])
def test_undecodable_bytes_are_a_malformed_request(channel, method):
    """The pipeline's decoding layer (Claim, admin RPCs) and ClaimBatch's own decoder alike."""
    err = failed(channel.unary_unary(method), b"\x0a\xff\xff\xff\xff\x0f")  # a field past the end
    assert err.code() == C.INVALID_ARGUMENT
    got = details(err)
    assert got["reason"] == "MALFORMED_REQUEST"
    assert got["violations"] == [("", err.details())]  # "": the request as a whole


@pytest.mark.parametrize(("request_", "field"), [
    (pb.CreateCampaignRequest(campaign=pb.Campaign(campaign_id="fine", inventory=0)), "inventory"),
    (pb.CreateCampaignRequest(), "campaign"),  # "campaign is required": the field read off the message
    (pb.CreateCampaignRequest(campaign=pb.Campaign(campaign_id="fine", inventory=5, shards=2,
                                                   rounds=[pb.Round(release_at_ms=0, amount=1)])),
     "rounds[0].release_at_ms"),
])
def test_a_bad_field_on_an_admin_rpc_names_it(admin, request_, field):
    err = failed(admin.CreateCampaign, request_)
    assert err.code() == C.INVALID_ARGUMENT
    got = details(err)
    assert got["reason"] == "INVALID_FIELD" and got["violations"] == [(field, err.details())]


def test_a_bad_id_on_a_stream_names_it(claims):
    stream = claims.WatchCampaigns(pb.WatchCampaignsRequest(campaign_ids=["ok", "not ok"]), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == C.INVALID_ARGUMENT
    assert details(err.value)["violations"] == [("campaign_ids[1]", err.value.details())]


# ------------------------------------------------------------------ NOT_FOUND, and no details on success


def test_an_unknown_campaign_is_campaign_not_found_with_its_id(claims, admin):
    cid = new_campaign_id("missing")
    for call, request in ((claims.Claim, claim_request(cid)),
                          (admin.GetCampaign, pb.GetCampaignRequest(campaign_id=cid))):
        err = failed(call, request)
        assert err.code() == C.NOT_FOUND
        got = details(err)
        assert got["reason"] == "CAMPAIGN_NOT_FOUND" and got["metadata"] == {"campaign_id": cid}
        assert got["violations"] is None and got["retry_ms"] is None


def test_a_successful_call_carries_no_details(admin, claims):
    cid = create_campaign(admin, inventory=1).campaign.campaign_id
    for user in ("a", "b"):  # granted, then sold out: both OK statuses
        _, call = claims.Claim.with_call(claim_request(cid, user, user), timeout=10)
        assert call.code() == C.OK
        assert errors.DETAILS_KEY not in dict(call.trailing_metadata() or ())


# ------------------------------------------------------------------ read as a non-Python client would


def test_the_raw_trailer_parses_with_only_the_google_rpc_protos(admin, channel):
    """What a client in another language does: take the trailer's bytes, parse a google.rpc.Status,
    unpack each Any by its type URL. Nothing of grpcio-status, nor of claimcore."""
    cid = create_campaign(admin, inventory=5).campaign.campaign_id
    claim = channel.unary_unary("/claimcore.v1.ClaimService/Claim")  # bytes in, bytes out
    raw_request = pb.ClaimRequest(campaign_id=cid, user_id="bad user", request_id="r").SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        claim(raw_request, timeout=10)
    err = caught.value
    trailer = [value for key, value in err.trailing_metadata() if key == "grpc-status-details-bin"]
    assert len(trailer) == 1 and isinstance(trailer[0], bytes)
    status = status_pb2.Status.FromString(trailer[0])
    assert status.code == 3 == err.code().value[0]  # INVALID_ARGUMENT's number
    assert status.message == err.details()
    by_type = {}
    for packed in status.details:
        assert isinstance(packed, any_pb2.Any)
        by_type[packed.type_url] = packed
    assert set(by_type) == {"type.googleapis.com/google.rpc.ErrorInfo",
                            "type.googleapis.com/google.rpc.BadRequest"}
    info = error_details_pb2.ErrorInfo()
    assert by_type["type.googleapis.com/google.rpc.ErrorInfo"].Unpack(info)
    assert (info.reason, info.domain) == ("INVALID_FIELD", "claimcore.dev")
    assert dict(info.metadata) == {"campaign_id": cid}
    bad = error_details_pb2.BadRequest()
    assert by_type["type.googleapis.com/google.rpc.BadRequest"].Unpack(bad)
    assert [(f.field, f.description) for f in bad.field_violations] == [("user_id", status.message)]


# ------------------------------------------------------------------ RESOURCE_EXHAUSTED, UNAVAILABLE


@pytest.fixture
def own_redis():
    server = EmbeddedRedis().start()
    yield server
    server.cleanup()


def test_an_overloaded_node_says_when_to_retry(own_redis):
    """Redis paused: claims pile up past --max-queued, and the shed ones say NODE_OVERLOADED with a
    RetryInfo (and the campaign), as plain RESOURCE_EXHAUSTED statuses."""
    node = LocalNode(own_redis.url, "--max-queued", "20").start()
    direct = redis.Redis(port=own_redis.port)
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=500, shards=2).campaign.campaign_id
            direct.execute_command("CLIENT", "PAUSE", 1200, "WRITE")
            calls = [claims.Claim.future(claim_request(cid, f"u{i}", "r"), timeout=10) for i in range(200)]
            shed = []
            for call in calls:
                try:
                    call.result()
                except grpc.RpcError as err:
                    shed.append(err)
            assert shed
            for err in shed:
                assert err.code() == C.RESOURCE_EXHAUSTED
                got = details(err)
                assert got["reason"] == "NODE_OVERLOADED" and got["metadata"] == {"campaign_id": cid}
                assert got["retry_ms"] == errors.REASONS["NODE_OVERLOADED"][1] > 0
                assert got["violations"] is None
    finally:
        direct.close()
        node.stop()


def test_redis_down_is_unavailable_with_a_retry_delay(own_redis):
    node = LocalNode(own_redis.url).start()
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=10, shards=2).campaign.campaign_id
            own_redis.kill()
            err = failed(claims.Claim, claim_request(cid, "b", "rb"))
            assert err.code() == C.UNAVAILABLE
            got = details(err)
            assert got["reason"] == "REDIS_UNAVAILABLE" and got["metadata"] == {"campaign_id": cid}
            assert got["retry_ms"] == errors.REASONS["REDIS_UNAVAILABLE"][1] > 0
    finally:
        node.stop()


# ------------------------------------------------------------------ UNAUTHENTICATED, PERMISSION_DENIED


@pytest.fixture(scope="module")
def secured(redis_server, tmp_path_factory):  # type: ignore[no-untyped-def]
    (admin_key, admin_line), (bank_key, bank_line) = keygen("--admin"), keygen("--channel", "bank")
    path = tmp_path_factory.mktemp("creds") / "credentials.toml"
    path.write_text(f"[admin]\n{admin_line}\n\n[channels.bank]\n{bank_line}\n")
    node = LocalNode(redis_server.url, "--credentials", str(path)).start()
    yield node, {"admin": admin_key, "bank": bank_key}
    node.stop()


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


@pytest.mark.parametrize(("metadata", "reason"), [
    ((), "API_KEY_MISSING"),
    ((("authorization", "Bearer not-a-key"),), "API_KEY_UNKNOWN"),
])
def test_a_missing_or_unknown_key_is_unauthenticated_with_its_reason(secured, metadata, reason):
    node, _ = secured
    with grpc.insecure_channel(node.address) as ch:
        err = failed(pb_grpc.ClaimServiceStub(ch).Claim, claim_request("any"), metadata=metadata)
    assert err.code() == C.UNAUTHENTICATED
    got = details(err)
    assert got["reason"] == reason and got["violations"] is None and got["retry_ms"] is None


def test_a_channel_is_refused_admin_calls_and_other_channels_with_reasons(secured):
    node, keys = secured
    with grpc.insecure_channel(node.address) as ch:
        admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
        err = failed(admin.ListCampaigns, pb.ListCampaignsRequest(), metadata=bearer(keys["bank"]))
        assert err.code() == C.PERMISSION_DENIED and details(err)["reason"] == "ADMIN_REQUIRED"

        cid = admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
            campaign_id=new_campaign_id(), inventory=5, channels=["alipay"])), timeout=10,
            metadata=bearer(keys["admin"])).campaign.campaign.campaign_id
        err = failed(claims.Claim, claim_request(cid), metadata=bearer(keys["bank"]))
        got = details(err)
        assert err.code() == C.PERMISSION_DENIED
        assert got["reason"] == "CAMPAIGN_CLOSED_TO_CHANNEL" and got["metadata"] == {"campaign_id": cid}

        open_cid = admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
            campaign_id=new_campaign_id(), inventory=5)), timeout=10,
            metadata=bearer(keys["admin"])).campaign.campaign.campaign_id
        request = claim_request(open_cid)
        request.channel_id = "alipay"  # acting as another channel
        err = failed(claims.Claim, request, metadata=bearer(keys["bank"]))
        assert err.code() == C.PERMISSION_DENIED and details(err)["reason"] == "CHANNEL_NOT_YOURS"

        batch = pb.ClaimBatchRequest(claims=[claim_request(open_cid, "x", "y"), request])
        err = failed(claims.ClaimBatch, batch, metadata=bearer(keys["bank"]))
        assert err.code() == C.PERMISSION_DENIED and err.details().startswith("claims[1]: ")
        assert details(err)["reason"] == "CHANNEL_NOT_YOURS"  # kept through the batch's wording


# ------------------------------------------------------------------ every kind the map knows


KINDS: list[tuple[Exception, str]] = [
    (v.InvalidInput("user_id 'x y' must match ...", "user_id"), "INVALID_FIELD"),
    (v.MalformedRequest("request is not a valid ClaimBatchRequest: truncated varint"), "MALFORMED_REQUEST"),
    (PermissionDenied("campaign c1 is not open to channel 'bank'", "CAMPAIGN_CLOSED_TO_CHANNEL"),
     "CAMPAIGN_CLOSED_TO_CHANNEL"),
    (PermissionDenied("not yours"), "PERMISSION_DENIED"),
    (CampaignNotFound("c1"), "CAMPAIGN_NOT_FOUND"),
    (ReshardBusy("c1 is being resharded by another call"), "RESHARD_BUSY"),
    (ReshardRefused("finish the reshard to 4 first"), "RESHARD_UNFINISHED"),
    (Overloaded("20 claims queued on this node"), "NODE_OVERLOADED"),
    (SnHoldLost("sn holds expired"), "SN_HOLD_LOST"),
    (BorrowContention("stock kept moving"), "BORROW_CONTENTION"),
    (StaleMap("c1", 3), "STALE_SHARD_MAP"),
    (ShardMoving("c1", 3), "SHARD_MOVING"),
    (ShardMissing("c1 shard 2"), "CAMPAIGN_INCOMPLETE"),
    (ReplicaAckTimeout("0 of 1 replicas acknowledged"), "REPLICA_ACK_TIMEOUT"),
    (redis.exceptions.ConnectionError("connection refused"), "REDIS_UNAVAILABLE"),
    (redis.exceptions.TimeoutError("timed out"), "REDIS_UNAVAILABLE"),
    (redis.exceptions.ResponseError("OOM command not allowed"), "REDIS_REFUSED"),
    (RuntimeError("a bug"), "INTERNAL"),
]


def test_every_kind_of_error_reaches_a_plain_client_with_its_details():
    """A real grpc.aio server whose one method ends each call through errors.abort_for with the
    exception the request names; a plain client reads each status and its details."""
    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await errors.abort_for(context, KINDS[int(request)][0], campaign="c1")

    handler = grpc.method_handlers_generic_handler(
        "t.Errors", {"Fail": grpc.unary_unary_rpc_method_handler(fail)})

    async def scenario() -> list[tuple[grpc.StatusCode, str, status_pb2.Status | None]]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            seen = []
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = ch.unary_unary("/t.Errors/Fail")
                for i in range(len(KINDS)):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await call(str(i).encode(), timeout=10)
                    trailer = dict(err.value.trailing_metadata() or ()).get(errors.DETAILS_KEY)
                    seen.append((err.value.code(), err.value.details() or "",
                                 None if trailer is None else status_pb2.Status.FromString(trailer)))
            return seen
        finally:
            await server.stop(None)

    seen = asyncio.run(scenario())
    for (exc, reason), (code, message, status) in zip(KINDS, seen, strict=True):
        assert status is not None, (reason, code, message)
        assert (status.code, status.message) == (code.value[0], message)
        got = unpacked(status)
        assert got["reason"] == reason
        assert code == errors.REASONS[reason][0]
        assert (got["retry_ms"] or 0) == errors.REASONS[reason][1]
        assert (got["violations"] is not None) == (code == C.INVALID_ARGUMENT)
        expected = {"campaign_id": "c1"}
        if isinstance(exc, (StaleMap, ShardMoving)):
            expected["epoch"] = "3"
        assert got["metadata"] == expected, reason
    assert {reason for _, reason in KINDS} | {
        "API_KEY_MISSING", "API_KEY_UNKNOWN", "ADMIN_REQUIRED", "CHANNEL_NOT_YOURS",
        "VOUCHER_OF_ANOTHER_CHANNEL", "ORDER_OF_ANOTHER_CHANNEL", "CAMPAIGN_EXISTS", "CAMPAIGN_ARCHIVED",
        "CAMPAIGN_OPEN"} == set(errors.REASONS)


def test_the_kept_details_differ_by_campaign_and_reason():
    """The details kept per (reason, metadata) are never another error's."""
    one = errors.error_for(Overloaded("1 queued"), "c1")
    two = errors.error_for(Overloaded("2 queued"), "c2")
    busy = errors.error_for(ReshardBusy("busy"), "c1")
    assert one is not None and two is not None and busy is not None
    statuses = [status_pb2.Status.FromString(status_details(e)) for e in (one, two, busy)]
    got = [unpacked(s) for s in statuses]
    assert [s.message for s in statuses] == ["node overloaded, retry later: 1 queued",
                                            "node overloaded, retry later: 2 queued", "busy"]
    assert [g["metadata"]["campaign_id"] for g in got] == ["c1", "c2", "c1"]
    assert [g["reason"] for g in got] == ["NODE_OVERLOADED", "NODE_OVERLOADED", "RESHARD_BUSY"]


def test_docs_list_every_reason():
    text = DOCS.read_text()
    for reason, (code, _) in errors.REASONS.items():
        assert re.search(rf"\| `{code.name}` \|[^\n]*`{reason}`", text), f"docs/errors.md misses {reason}"


def test_admin_refusals_carry_details(admin):
    cid = create_campaign(admin, inventory=5).campaign.campaign_id
    other = pb.CreateCampaignRequest(campaign=pb.Campaign(campaign_id=cid, inventory=6))
    err = failed(admin.CreateCampaign, other)
    assert err.code() == C.ALREADY_EXISTS
    assert details(err)["reason"] == "CAMPAIGN_EXISTS"
    err = failed(admin.ArchiveCampaign, pb.ArchiveCampaignRequest(campaign_id=cid))
    assert err.code() == C.FAILED_PRECONDITION
    assert details(err)["reason"] == "CAMPAIGN_OPEN"
