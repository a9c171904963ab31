"""The Python client (claimcore.client): balanced over nodes, retried with the same request_id.

Through real front nodes on a real redis-server: a node killed with SIGKILL
mid-burst costs the client's callers nothing (every claim gets its answer,
nobody gets two vouchers), and errors that retrying cannot fix are raised at once.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from claimcore.client import ClaimClient, ClaimOutcomeUnknown
from claimcore.harness.embedded_redis import free_port
from claimcore.v1 import claims_pb2 as pb
from conftest import LocalNode, create_campaign
from support import check_burst


def test_a_node_killed_mid_burst_costs_the_callers_nothing(redis_server, node, admin):
    inventory, users = 300, 500
    victim = LocalNode(redis_server.url).start()
    cid = create_campaign(admin, inventory=inventory, shards=4).campaign.campaign_id

    async def main() -> tuple[list, list, int]:
        async with ClaimClient([victim.address, node.address], backoff_s=0.02) as client:
            answered: list[tuple[str, str, pb.ClaimResponse]] = []
            queue = [(f"u{i}", f"r{i}") for i in range(users)]

            async def caller() -> None:
                while queue:
                    user, rid = queue.pop()
                    answered.append((user, rid, await client.claim(cid, user, rid)))
                    if len(answered) == 100 and victim.proc is not None:
                        victim.stop(signal.SIGKILL)

            await asyncio.gather(*(caller() for _ in range(32)))
            again = [(u, r, await client.claim(cid, u, r)) for u, r, _ in answered[:200]]
            return answered, again, client.retries

    answered, again, retries = asyncio.run(main())
    assert victim.proc is None and retries > 0  # the kill was felt, and absorbed
    holder = check_burst(answered, inventory, users)
    first = {(u, r): rep.voucher.voucher_id for u, r, rep in answered}
    assert all(rep.voucher.voucher_id == first[(u, r)] for u, r, rep in again)
    assert len(holder) == inventory


def test_errors_retrying_cannot_fix_are_raised_at_once(node, admin):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id

    async def main() -> tuple[grpc.StatusCode, grpc.StatusCode, int, pb.GetClaimResponse]:
        async with ClaimClient([node.address]) as client:
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await client.claim(cid, "bad user id")
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await client.claim("no-such-campaign", "u1")
            granted = await client.claim(cid, "u1", "r1")
            found = await client.get_claim(cid, "u1", "r1")
            assert found.vouchers[0].voucher_id == granted.voucher.voucher_id
            return bad.value.code(), missing.value.code(), client.retries, found

    bad, missing, retries, found = asyncio.run(main())
    assert (bad, missing, retries) == (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, 0)
    assert found.found


def test_no_node_answering_gives_the_request_id_to_settle_later():
    async def main() -> ClaimOutcomeUnknown:
        async with ClaimClient([f"127.0.0.1:{free_port()}"], deadline_s=0.5, max_attempts=3,
                               backoff_s=0.01) as client:
            with pytest.raises(ClaimOutcomeUnknown) as unknown:
                await client.claim("c", "u1", "req-42")
            assert client.retries == 2
            return unknown.value

    unknown = asyncio.run(main())
    assert unknown.request_id == "req-42"
    assert unknown.last.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_bad_client_settings_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        ClaimClient([])
    with pytest.raises(ValueError, match="max_attempts"):
        ClaimClient(["h:1"], max_attempts=0)

    async def batch_without_ids() -> None:
        async with ClaimClient(["127.0.0.1:1"]) as client:
            await client.claim_batch([pb.ClaimRequest(campaign_id="c", user_id="u")])

    with pytest.raises(ValueError, match="request_id"):
        asyncio.run(batch_without_ids())
