"""The external verifier hook at redemption (issue 6): a real HTTP verifier, a real node.

The verifier is a small HTTP server in this process that approves, refuses,
answers too late, or answers nonsense, by user. Refusals and silences give
clear outcomes and write nothing; a replay of a recorded order is not asked again.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from claimcore.harness.embedded_redis import free_port
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign, redis_dump

SEEN: list[dict] = []


class Verifier(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        SEEN.append(request)
        user = request["user_id"]
        if user.startswith("slow"):
            time.sleep(1.0)
        if user.startswith("junk"):
            self.send_response(500)
            self.end_headers()
            return
        verdict = {"ok": not user.startswith("no"), "reason": "already subsidised this year"}
        body = json.dumps(verdict).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def verifier_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Verifier)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/verify"
    server.shutdown()


@pytest.fixture(scope="module")
def verified_node(redis_server, verifier_url):
    node = LocalNode(redis_server.url, "--verifier-url", verifier_url, "--verifier-timeout-ms", "300").start()
    yield node
    node.stop()


def setup(node: LocalNode, users: list[str]) -> tuple[str, dict[str, str]]:
    with grpc.insecure_channel(node.address) as ch:
        admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
        cid = create_campaign(admin, inventory=20, shards=2, category="3c").campaign.campaign_id
        admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
            campaign_id=cid, merchant_id="m1", category="3c")), timeout=10)
        vouchers = {u: claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=u, request_id="r"),
                                    timeout=10).voucher.voucher_id for u in users}
    return cid, vouchers


def redeem(node: LocalNode, cid: str, user: str, voucher: str, order: str = "o1") -> pb.RedeemResponse:
    with grpc.insecure_channel(node.address) as ch:
        return pb_grpc.RedeemServiceStub(ch).Redeem(pb.RedeemRequest(
            campaign_id=cid, user_id=user, voucher_ids=[voucher], merchant_id="m1", order_id=order,
            order_amount_cents=5000, sn_codes=["SN9"]), timeout=10)


def test_verdicts_and_silences(verified_node, redis_client):
    cid, vouchers = setup(verified_node, ["yes1", "no1", "slow1", "junk1"])
    SEEN.clear()
    approved = redeem(verified_node, cid, "yes1", vouchers["yes1"])
    asked = list(SEEN)
    replay = redeem(verified_node, cid, "yes1", vouchers["yes1"])
    before = redis_dump(redis_client, cid)
    refused = redeem(verified_node, cid, "no1", vouchers["no1"])
    slow = redeem(verified_node, cid, "slow1", vouchers["slow1"])
    junk = redeem(verified_node, cid, "junk1", vouchers["junk1"])
    after = redis_dump(redis_client, cid)
    assert approved.outcome == pb.REDEEM_OUTCOME_REDEEMED and replay.outcome == pb.REDEEM_OUTCOME_REDEEMED
    assert asked == [{"campaign_id": cid, "category": "3c", "user_id": "yes1",
                      "voucher_ids": [vouchers["yes1"]], "merchant_id": "m1", "order_id": "o1",
                      "order_amount_cents": 5000, "sn_codes": ["SN9"]}]
    assert sum(1 for r in SEEN if r["user_id"] == "yes1") == 1  # the replay was not asked again
    assert refused.outcome == pb.REDEEM_OUTCOME_NOT_VERIFIED
    assert refused.detail == "already subsidised this year"
    assert slow.outcome == junk.outcome == pb.REDEEM_OUTCOME_VERIFICATION_UNAVAILABLE
    assert "Timeout" in slow.detail and "500" in junk.detail
    assert after == before  # nothing was written for the three that were not verified


def test_a_verifier_that_is_down(redis_server):
    node = LocalNode(redis_server.url, "--verifier-url", f"http://127.0.0.1:{free_port()}/v").start()
    try:
        cid, vouchers = setup(node, ["u1"])
        reply = redeem(node, cid, "u1", vouchers["u1"])
    finally:
        node.stop()
    assert reply.outcome == pb.REDEEM_OUTCOME_VERIFICATION_UNAVAILABLE and "refused" in reply.detail.lower()


def test_serve_refuses_a_bad_verifier_url(redis_server):
    from claimcore.harness.local_node import NodeStartError

    with pytest.raises(NodeStartError, match="verifier-url"):
        LocalNode(redis_server.url, "--verifier-url", "ftp://x/y").start(timeout=10)
