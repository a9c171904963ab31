"""The auto-batching client (claimcore.client: batching.py, sync.py), real nodes on a real redis-server.

Concurrent claim() calls go out in a few ClaimBatch calls (counted by the node's
own /metrics) and each caller gets its own reply; a node killed mid-run costs
nothing (retries keep their request ids; the history checker reads Redis's final
state); a lone claim leaves at once; bad input and a caller's deadline touch
that caller only; the sync client batches many threads' claims alike; and the
rest of the app-backend API (device and IP, metadata, redeem, reverse, release).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from claimcore.client import ClaimClient, ClaimOutcomeUnknown, SyncClaimClient
from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.harness.history import History, check_history
from claimcore.v1 import claims_pb2 as pb
from conftest import LocalNode, create_campaign
from support import check_burst

BANNED_DEVICE, BANNED_IP = "scalper-phone-1", "203.0.113.7"


@pytest.fixture(scope="module")
def metered(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """A node of this module's own: /metrics on, and a deny list naming a device and an IP."""
    deny = Path(tmp_path_factory.mktemp("deny")) / "deny.txt"
    deny.write_text(f"device:{BANNED_DEVICE}\nip:{BANNED_IP}\n")
    port = free_port()
    node = LocalNode(redis_server.url, "--recycle-every-s", "0", "--metrics-port", str(port),
                     "--deny-file", str(deny)).start()
    node.metrics_port = port  # type: ignore[attr-defined]  # read by calls_by_method
    yield node
    node.stop()


def calls_by_method(node: LocalNode) -> dict[str, float]:
    """The node's own count of Claim and ClaimBatch calls (claimcore_claim_seconds, by method)."""
    port = node.metrics_port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    return {s.labels["method"]: s.value for family in text_string_to_metric_families(text)
            if family.name == "claimcore_claim_seconds" for s in family.samples
            if s.name.endswith("_count")}


def test_a_thousand_concurrent_claims_go_out_in_a_few_batches(metered, admin, redis_client):
    inventory, users = 300, 1000
    cid = create_campaign(admin, inventory=inventory, shards=4).campaign.campaign_id
    history = History()
    before = calls_by_method(metered)

    async def main() -> list[tuple[str, str, pb.ClaimResponse]]:
        async with ClaimClient([metered.address]) as client:
            async def caller(i: int) -> tuple[str, str, pb.ClaimResponse]:
                user, rid = f"u{i}", f"r{i}"
                op = history.invoke(cid, user, rid)
                reply = await client.claim(cid, user, rid)
                history.replied(op, reply)
                return user, rid, reply

            answered = await asyncio.gather(*(caller(i) for i in range(users)))
            assert client.batching.claims == users and client.retries == 0
            return answered

    answered = asyncio.run(main())
    after = calls_by_method(metered)
    batches = after.get("ClaimBatch", 0) - before.get("ClaimBatch", 0)
    unary = after.get("Claim", 0) - before.get("Claim", 0)
    assert batches + unary <= users // 20, (batches, unary)  # 1,000 claims in at most 50 calls
    assert batches >= users // 100  # at most 100 claims a batch (the default max_batch)
    holder = check_burst(answered, inventory, users)  # nobody twice, no voucher twice, 300 holders
    for user, rid, reply in answered:  # each caller got its own reply, not a neighbour's
        if reply.outcome == pb.OUTCOME_GRANTED:
            assert (reply.voucher.user_id, reply.voucher.request_id) == (user, rid)
    assert sum(r.outcome == pb.OUTCOME_GRANTED for _, _, r in answered) == len(holder) == inventory
    report = check_history(history, redis_client, cid)
    assert report.ok and report.granted_final == inventory, report.summary()


def test_a_node_killed_mid_run_costs_nothing_and_grants_nothing_twice(redis_server, node, admin,
                                                                      redis_client):
    inventory, users = 300, 1000
    victim = LocalNode(redis_server.url, "--recycle-every-s", "0").start()
    cid = create_campaign(admin, inventory=inventory, shards=4).campaign.campaign_id
    history = History()

    async def main() -> tuple[list, list, int, int]:
        async with ClaimClient([victim.address, node.address], backoff_s=0.02) as client:
            answered: list[tuple[str, str, pb.ClaimResponse]] = []
            queue = [(f"u{i}", f"r{i}") for i in range(users)]

            async def caller() -> None:
                while queue:
                    user, rid = queue.pop()
                    op = history.invoke(cid, user, rid)
                    try:
                        reply = await client.claim(cid, user, rid)
                    except ClaimOutcomeUnknown:
                        history.failed(op, "UNKNOWN")
                        raise
                    history.replied(op, reply)
                    answered.append((user, rid, reply))
                    if len(answered) == 150 and victim.proc is not None:
                        victim.stop(signal.SIGKILL)

            await asyncio.gather(*(caller() for _ in range(200)))
            again = await asyncio.gather(*(client.claim(cid, u, r) for u, r, _ in answered))
            return answered, [(u, r, a) for (u, r, _), a in zip(answered, again, strict=True)], \
                client.retries, client.batching.failed

    answered, again, retries, failed = asyncio.run(main())
    assert victim.proc is None and retries > 0 and failed > 0  # a batch failed on the kill, and was retried
    assert len(answered) == users
    holder = check_burst(answered, inventory, users)
    first = {(u, r): rep.voucher.voucher_id for u, r, rep in answered}
    assert all(rep.voucher.voucher_id == first[(u, r)] for u, r, rep in again)  # same ids, same answers
    assert len(holder) == inventory
    report = check_history(history, redis_client, cid)
    assert report.ok and report.granted_final == inventory and report.duplicates == 0, report.summary()


def test_a_lone_claim_goes_out_at_once_and_a_same_moment_pair_together(node, admin):
    cid = create_campaign(admin, inventory=10, shards=1).campaign.campaign_id

    async def main() -> None:
        # A linger of a minute: a claim that waited for it would time the test out.
        async with ClaimClient([node.address], linger_s=60.0) as client:
            lone = await asyncio.wait_for(client.claim(cid, "lone", "r-lone"), 20)
            assert lone.outcome == pb.OUTCOME_GRANTED
            stats = client.batching
            assert (stats.alone, stats.batches, stats.sent_idle, stats.sent_lingered) == (1, 0, 1, 0)
            pair = await asyncio.wait_for(asyncio.gather(client.claim(cid, "p1"), client.claim(cid, "p2")),
                                          20)
            assert [r.voucher.user_id for r in pair] == ["p1", "p2"]
            assert (stats.alone, stats.batches, stats.largest, stats.sent_idle, stats.sent_lingered) == \
                (1, 1, 2, 2, 0)

    asyncio.run(main())


def test_bad_input_and_unknown_campaigns_fail_only_their_own_caller(node, admin):
    cid = create_campaign(admin, inventory=10, shards=2).campaign.campaign_id

    async def main() -> list:
        async with ClaimClient([node.address]) as client:
            calls = [client.claim(cid, f"g{i}", f"r{i}") for i in range(4)]
            calls += [client.claim(cid, ""), client.claim(cid, "u-ip", client_ip="not-an-ip"),
                      client.claim("no-such-campaign", "u-nf"), client.claim(cid, "g9", "r9")]
            results = await asyncio.gather(*calls, return_exceptions=True)
            # The unknown campaign refused its whole batch on the node; its neighbours went again alone.
            assert client.batching.refused == 1 and client.retries == 0
            for user in ("u-ip", "u-nf"):  # the refused claims wrote nothing
                assert not (await client.get_claim(cid, user)).found
            return results

    results = asyncio.run(main())
    granted = [results[i] for i in (0, 1, 2, 3, 7)]
    assert all(isinstance(r, pb.ClaimResponse) and r.outcome == pb.OUTCOME_GRANTED for r in granted), granted
    codes = [r.code() if isinstance(r, grpc.aio.AioRpcError) else r for r in results[4:7]]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT,
                     grpc.StatusCode.NOT_FOUND]
    assert "user_id" in results[4].details() and "client_ip" in results[5].details()


def test_a_callers_deadline_is_its_own_and_gives_its_request_id_back():
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    address = f"127.0.0.1:{silent.getsockname()[1]}"

    async def main() -> tuple[list, ClaimOutcomeUnknown, int]:
        async with ClaimClient([address], max_attempts=2, backoff_s=0.01) as client:
            short = [client.claim("c", f"u{i}", f"r{i}", timeout=0.3) for i in range(20)]
            results = await asyncio.gather(*short, return_exceptions=True)
            return results, results[7], client.batching.batches

    try:
        results, seventh, batches = asyncio.run(main())
    finally:
        silent.close()
    assert all(isinstance(r, ClaimOutcomeUnknown) for r in results)
    assert seventh.request_id == "r7" and seventh.last.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert batches >= 2  # the first attempts went together, and so did their retries


def test_the_sync_client_batches_fifty_threads(node, admin):
    inventory, threads, each = 300, 50, 10
    cid = create_campaign(admin, inventory=inventory, shards=4).campaign.campaign_id
    answered: list[tuple[str, str, pb.ClaimResponse]] = []
    lock = threading.Lock()

    with SyncClaimClient([node.address], linger_s=0.005) as client:
        def backend_thread(t: int) -> None:
            for k in range(each):
                user, rid = f"t{t}-{k}", f"r{t}-{k}"
                reply = client.claim(cid, user, rid)
                with lock:
                    answered.append((user, rid, reply))

        workers = [threading.Thread(target=backend_thread, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stats = client.batching
        with pytest.raises(grpc.RpcError) as bad:
            client.claim(cid, "")
        voucher = next(r.voucher for _, _, r in answered if r.outcome == pb.OUTCOME_GRANTED)
        released = client.release(cid, voucher.user_id, voucher.voucher_id)
    assert len(answered) == threads * each
    assert len(check_burst(answered, inventory, threads * each)) == inventory
    assert stats.claims == threads * each and stats.largest > 1 and stats.calls < stats.claims
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert released.released
    with pytest.raises(RuntimeError, match="closed"):
        client.claim(cid, "late")


def test_device_ip_and_metadata_reach_the_anti_scalper_limits(metered, admin):
    cid = create_campaign(admin, inventory=10, shards=1).campaign.campaign_id

    async def main() -> list[pb.ClaimResponse]:
        async with ClaimClient([metered.address], metadata=[("x-app", "bank-app")]) as client:
            return await asyncio.gather(
                client.claim(cid, "d1", device_id=BANNED_DEVICE),
                client.claim(cid, "d2", client_ip=BANNED_IP),
                client.claim(cid, "d3", metadata=[("x-device-id", BANNED_DEVICE)]),
                client.claim(cid, "d4", device_id="an-honest-phone", client_ip="198.51.100.1"),
            )

    replies = asyncio.run(main())
    assert [r.outcome for r in replies] == [pb.OUTCOME_NOT_ELIGIBLE] * 3 + [pb.OUTCOME_GRANTED]


def test_redeem_reverse_and_release_through_the_client(node, admin):
    cid = create_campaign(admin, inventory=10, shards=1, value_cents=500).campaign.campaign_id
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1", name="shop")), timeout=10)

    async def main() -> tuple:
        async with ClaimClient([node.address]) as client:
            a = (await client.claim(cid, "buyer")).voucher.voucher_id
            b = (await client.claim(cid, "quitter")).voucher.voucher_id
            redeemed = await client.redeem(cid, "buyer", [a], "m1", "order-1", 2000, sn_codes=["SN1"])
            replayed = await client.redeem(cid, "buyer", [a], "m1", "order-1", 2000, sn_codes=["SN1"])
            reversed_ = await client.reverse(cid, "buyer", "order-1")
            released = await client.release(cid, "quitter", b)
            again = await client.release(cid, "quitter", b)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await client.reverse(cid, "buyer", "")
            found = await client.release(cid, "buyer", b)  # not the buyer's: refused
            return redeemed, replayed, reversed_, released, again, bad.value.code(), found, a, client.retries

    redeemed, replayed, reversed_, released, again, bad, found, a, retries = asyncio.run(main())
    assert redeemed.outcome == pb.REDEEM_OUTCOME_REDEEMED and redeemed.subsidy_cents == 500
    assert replayed.outcome == pb.REDEEM_OUTCOME_REDEEMED
    assert replayed.redeemed_at_ms == redeemed.redeemed_at_ms
    assert reversed_.outcome == pb.REVERSE_OUTCOME_REVERSED and list(reversed_.returned_voucher_ids) == [a]
    assert released.released and again.released and not found.released
    assert bad == grpc.StatusCode.INVALID_ARGUMENT and retries == 0
