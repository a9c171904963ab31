"""The streaming RPC (ClaimService.WatchCampaigns) passes the same door as the unary ones.

A real node with credentials (docs/security.md): no key or an unknown key is refused by the
the pipeline's auth layer before the watch handler runs (its own message, not the handler's); a known key
streams, as its caller for the whole stream (a channel watches only its campaigns); undecodable
request bytes are INVALID_ARGUMENT (the decoding layer), whoever sends them.
"""

from __future__ import annotations

import grpc
import pytest

from claimcore.security.access import Access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign
from support import keygen

WATCH = "/claimcore.v1.ClaimService/WatchCampaigns"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    (admin_key, admin_line), (bank_key, bank_line) = keygen("--admin"), keygen("--channel", "bank")
    path = tmp_path_factory.mktemp("creds") / "credentials.toml"
    path.write_text(f"[admin]\n{admin_line}\n\n[channels.bank]\n{bank_line}\n")
    return {"admin": admin_key, "bank": bank_key, "file": str(path)}


@pytest.fixture(scope="module")
def secured(redis_server, keys):  # type: ignore[no-untyped-def]
    node = LocalNode(redis_server.url, "--credentials", keys["file"]).start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def campaigns(secured, keys) -> dict[str, str]:  # type: ignore[no-untyped-def]
    admin = pb_grpc.AdminServiceStub(Access(api_key=keys["admin"]).channel(secured.address))
    return {"bank": create_campaign(admin, inventory=5).campaign.campaign_id,
            "alipay": create_campaign(admin, inventory=5, channels=["alipay"]).campaign.campaign_id}


def first_state(node: LocalNode, ids: list[str], metadata: tuple[tuple[str, str], ...]) -> pb.CampaignState:
    stream = pb_grpc.ClaimServiceStub(grpc.insecure_channel(node.address)).WatchCampaigns(
        pb.WatchCampaignsRequest(campaign_ids=ids), metadata=metadata, timeout=10)
    try:
        return next(stream).state
    finally:
        stream.cancel()


@pytest.mark.parametrize(("metadata", "details"), [
    ((), "no API key (metadata authorization: Bearer <key>)"),
    ((("authorization", "Bearer not-a-key"),), "unknown API key"),
    ((("authorization", "Basic Zm9vOmJhcg=="),), "no API key (metadata authorization: Bearer <key>)"),
])
def test_a_watch_without_a_known_key_is_refused_at_the_door(secured, campaigns, metadata, details):
    with pytest.raises(grpc.RpcError) as err:
        first_state(secured, [campaigns["bank"]], metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == details  # the interceptor's words: the handler never ran


def test_a_known_key_watches_as_its_caller_for_the_whole_stream(secured, campaigns, keys):
    bank = (("authorization", f"Bearer {keys['bank']}"),)
    assert first_state(secured, [campaigns["bank"]], bank).phase == pb.CAMPAIGN_PHASE_OPEN
    with pytest.raises(grpc.RpcError) as err:  # the caller reached the handler: its scope applies
        first_state(secured, [campaigns["bank"], campaigns["alipay"]], bank)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = (("authorization", f"Bearer {keys['admin']}"),)
    assert first_state(secured, [campaigns["alipay"]], admin).phase == pb.CAMPAIGN_PHASE_OPEN

    # Several states over one stream: the caller holds past the first write.
    stream = pb_grpc.ClaimServiceStub(grpc.insecure_channel(secured.address)).WatchCampaigns(
        pb.WatchCampaignsRequest(campaign_ids=[campaigns["bank"]]), metadata=bank, timeout=10)
    try:
        claims = pb_grpc.ClaimServiceStub(Access(api_key=keys["bank"]).channel(secured.address))
        first = next(stream).state
        for i in range(5):
            claims.Claim(pb.ClaimRequest(campaign_id=campaigns["bank"], user_id=f"u{i}", request_id=f"r{i}"),
                         timeout=10)
        later = next(m.state for m in stream if m.state.phase == pb.CAMPAIGN_PHASE_SOLD_OUT)
        assert later.sequence > first.sequence
    finally:
        stream.cancel()


@pytest.mark.parametrize("key", ["admin", "", "not-a-key"])
def test_undecodable_bytes_on_the_stream_are_invalid_argument(secured, keys, key):
    raw = grpc.insecure_channel(secured.address).unary_stream(WATCH)  # bytes in, bytes out
    metadata = (("authorization", f"Bearer {keys.get(key, key)}"),) if key else ()
    with pytest.raises(grpc.RpcError) as err:
        next(raw(b"\x0a\xff\xff\xff\xff\x0f", metadata=metadata, timeout=10))  # a field longer than the body
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "not a valid" in err.value.details()
