"""Live resharding (issue 5): change a campaign's shard count while it is claimed.

Proved through real gRPC against real Redis (one server, and a three-master
cluster): during a burst, a reshard up and then down grants exactly the
inventory, nobody twice, keeps every idempotency record (a retry of a request
made before the reshard gets its original voucher), strands no stock, and a
node on the old map is fenced out by the epoch checked in the scripts.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.harness.embedded_redis import EmbeddedCluster, EmbeddedRedis
from claimcore.store import reshard as rs
from claimcore.store import scripts
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import campaign_key, shard_keys
from claimcore.store.replies import ClaimItem, Code, ShardMoving, StaleMap
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign, new_campaign_id, redis_dump
from support import check_burst, run

T0 = 1_795_000_000_000


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def two_nodes(redis_server: EmbeddedRedis, node: LocalNode) -> Iterator[list[LocalNode]]:
    other = LocalNode(redis_server.url).start()
    yield [node, other]
    other.stop()


@pytest.fixture(scope="module")
def cluster_nodes() -> Iterator[list[LocalNode]]:
    with EmbeddedCluster(masters=3) as cluster:
        nodes = [LocalNode("", "--redis-cluster", cluster.addresses).start() for _ in range(2)]
        yield nodes
        for n in nodes:
            n.stop()


def users_on(shard: int, shards: int, n: int, prefix: str) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        if shard_of(f"{prefix}{i}", shards) == shard:
            out.append(f"{prefix}{i}")
        i += 1
    return out


# ------------------------------------------------------------------ the burst


async def burst_with_reshards(addresses: list[str], cid: str, requests: list[tuple[str, str]],
                              reshards: list[tuple[int, int]], clients: int = 150) -> dict[str, Any]:
    """Claims from `clients` concurrent callers; after reshards[i][0] replies, reshard to reshards[i][1].

    A caller retries UNAVAILABLE with the same request_id, as the API asks. Returns
    every final reply, each claim's latency, and each reshard's reply with how many
    claims were answered while it ran.
    """
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [pb_grpc.ClaimServiceStub(ch) for ch in channels]
    admin = pb_grpc.AdminServiceStub(channels[0])
    queue = list(reversed(requests))
    results: list[tuple[str, str, pb.ClaimResponse]] = []
    latencies: list[float] = []
    unavailable = 0
    done: list[dict[str, Any]] = []
    triggers = [asyncio.Event() for _ in reshards]

    async def client(n: int) -> None:
        nonlocal unavailable
        stub = stubs[n % len(stubs)]
        while queue:
            user, rid = queue.pop()
            started = time.monotonic()
            for _ in range(20):
                try:
                    reply = await stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid),
                                             timeout=30)
                    break
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                    unavailable += 1
                    await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"{user}/{rid} stayed UNAVAILABLE")
            latencies.append(time.monotonic() - started)
            results.append((user, rid, reply))
            for (after, _), event in zip(reshards, triggers, strict=True):
                if len(results) >= after:
                    event.set()

    async def operator() -> None:
        for (_, shards), event in zip(reshards, triggers, strict=True):
            await event.wait()
            before = len(results)
            reply = await admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=shards), timeout=120)
            done.append({"reply": reply, "claims_meanwhile": len(results) - before})

    try:
        await asyncio.gather(operator(), *(client(n) for n in range(clients)))
    finally:
        for ch in channels:
            await ch.close()
    return {"results": results, "latencies": latencies, "reshards": done, "unavailable": unavailable}


def check_after_reshards(addresses: list[str], cid: str, requests: list[tuple[str, str]],
                         out: dict[str, Any], inventory: int, users: int, final_shards: int) -> None:
    holder = check_burst(out["results"], inventory, users)
    first_voucher = {(u, r): rep.voucher.voucher_id
                     for u, r, rep in out["results"] if rep.outcome == pb.OUTCOME_GRANTED}
    with grpc.insecure_channel(addresses[-1]) as ch:
        claims, admin = pb_grpc.ClaimServiceStub(ch), pb_grpc.AdminServiceStub(ch)
        info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
        # every request made before or during the reshards gets its original outcome again
        for (user, rid), voucher in first_voucher.items():
            again = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid), timeout=10)
            assert (again.outcome, again.voucher.voucher_id) == (pb.OUTCOME_GRANTED, voucher), (user, rid)
        for user, voucher in random.Random(3).sample(sorted(holder.items()), 200):
            found = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id=user), timeout=10)
            assert [v.voucher_id for v in found.vouchers] == [voucher]
    assert info.granted == inventory and info.remaining == 0
    assert info.campaign.shards == final_shards and info.shard_epoch == len(out["reshards"])
    assert not info.resharding
    assert all(s.remaining == 0 for s in info.shards if s.retired)  # no stranded stock
    assert sum(s.granted for s in info.shards) == inventory


@pytest.mark.parametrize("where", ["one_redis", "cluster"])
def test_reshard_up_then_down_mid_burst_keeps_every_invariant(where, request):
    nodes = request.getfixturevalue("two_nodes" if where == "one_redis" else "cluster_nodes")
    addresses = [n.address for n in nodes]
    inventory, users = 1500, 2400
    with grpc.insecure_channel(addresses[0]) as ch:
        info = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=inventory, shards=4)
    cid = info.campaign.campaign_id
    rng = random.Random(11)
    requests = [(f"u{i}", f"r{i}") for i in range(users)]
    requests += [(f"u{rng.randrange(users)}", f"tap-{n}") for n in range(500)]   # double taps
    rng.shuffle(requests)
    requests += [requests[rng.randrange(len(requests))] for _ in range(300)]    # late retries
    out = asyncio.run(burst_with_reshards(addresses, cid, requests, [(400, 16), (1300, 5)]))

    check_after_reshards(addresses, cid, requests, out, inventory, users, final_shards=5)
    up, down = (r["reply"] for r in out["reshards"])
    assert (up.from_shards, up.to_shards, down.from_shards, down.to_shards) == (4, 16, 16, 5)
    assert up.moved_users > 0 and down.moved_users > 0 and up.moved_stock > 0
    print(f"\n[{where}] longest claim {max(out['latencies']) * 1000:.0f} ms; "
          f"reshard up: frozen {up.frozen_ms} ms, took {up.took_ms} ms, "
          f"{out['reshards'][0]['claims_meanwhile']} claims answered meanwhile, "
          f"{up.moved_users} users moved; "
          f"down: frozen {down.frozen_ms} ms, took {down.took_ms} ms, "
          f"{out['reshards'][1]['claims_meanwhile']} claims meanwhile, {down.moved_users} users moved; "
          f"{out['unavailable']} UNAVAILABLE retried")


# ------------------------------------------------------------------ the fence, step by step


def test_fenced_shards_refuse_the_old_map_while_stayers_keep_claiming(redis_server):
    cid = new_campaign_id("fence")
    cfg = CampaignConfig(campaign_id=cid, inventory=100, shards=2)
    stayer = next(u for u in (f"s{i}" for i in range(1000)) if shard_of(u, 2) == shard_of(u, 4) == 0)
    mover = next(u for u in (f"m{i}" for i in range(1000)) if shard_of(u, 2) == 0 and shard_of(u, 4) >= 2)

    async def fn(inv: RedisInventory, client: Any) -> dict[str, Any]:
        await inv.create_campaign(cfg)
        out: dict[str, Any] = {}
        _, (out["mover_before"],) = await inv.claim(cid, 0, T0, [ClaimItem(mover, "m1", "app")])
        # steps 1-2 of a reshard to 4 shards, by hand
        verdict = await scripts.BEGIN_RESHARD(client, [campaign_key(cid)], [4])
        new = cfg.with_map(4, 1, 4)
        await rs._fence(inv, new, cfg, paused=False)
        out["verdict"] = verdict
        out["old_claim"] = await _error(inv.claim(cid, 0, T0, [ClaimItem(stayer, "x", "")], epoch=0))
        out["old_lookup"] = await _error(inv.lookup(cid, 0, mover, "m1", epoch=0))
        out["old_lend"] = await scripts.LEND(client, [shard_keys(cid, 1).state, shard_keys(cid, 1).leases],
                                             [5, "L-old", 0, T0, 0])
        _, (out["stayer_now"],) = await inv.claim(cid, 0, T0, [ClaimItem(stayer, "s1", "")], epoch=1)
        target = shard_of(mover, 4)
        out["mover_frozen"] = await _error(inv.claim(cid, target, T0, [ClaimItem(mover, "m1", "")], epoch=1))
        out["lookup_frozen"] = await _error(inv.lookup(cid, target, mover, "m1", epoch=1))
        # steps 3-4: the mover's records move, then its shard opens
        out["moved"] = await rs._move_records(inv, new)
        await rs._unfreeze(inv, new)
        _, (out["mover_replay"],) = await inv.claim(cid, target, T0 + 5, [ClaimItem(mover, "m1", "app")],
                                                    epoch=1)
        _, (out["mover_again"],) = await inv.claim(cid, target, T0 + 5, [ClaimItem(mover, "m2", "")], epoch=1)
        out["old_shard_has_mover"] = await client.hexists(shard_keys(cid, 0).users, mover)
        out["lookup_new"] = await inv.lookup(cid, target, mover, "", epoch=1)
        return out

    out = run(redis_server, fn)
    assert out["verdict"] == ["started", 2, 4, 1, 4]
    assert isinstance(out["old_claim"], StaleMap) and out["old_claim"].epoch == 1
    assert isinstance(out["old_lookup"], StaleMap)
    assert out["old_lend"] == [0, 50, 1]                       # nothing moved by the old map
    assert out["stayer_now"].code == Code.GRANTED               # stayers keep claiming
    assert isinstance(out["mover_frozen"], ShardMoving) and isinstance(out["lookup_frozen"], ShardMoving)
    assert out["moved"] == (1, 1)
    first = out["mover_before"]
    assert out["mover_replay"] == (Code.REPLAY, first.voucher_id, first.granted_at_ms)
    assert out["mover_again"].code == Code.ALREADY_CLAIMED      # the per-user limit moved too
    assert out["old_shard_has_mover"] is False
    assert [r.voucher_id for r in out["lookup_new"]] == [first.voucher_id]


async def _error(call: Any) -> BaseException | None:
    try:
        await call
    except Exception as exc:  # noqa: BLE001 - the test looks at which
        return exc
    return None


def test_shrink_then_grow_keeps_voucher_ids_unique_and_stock_conserved(redis_server):
    cid = new_campaign_id("cycle")
    cfg = CampaignConfig(campaign_id=cid, inventory=60, shards=4)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        vouchers: list[str] = []

        async def grant(prefix: str, n: int) -> None:
            config = (await inv.load_campaign(cid)).config
            for i in range(n):
                user = f"{prefix}{i}"
                _, (r,) = await inv.claim(cid, shard_of(user, config.shards), T0,
                                          [ClaimItem(user, "r", "")], epoch=config.epoch)
                if r.code == Code.EMPTY:
                    assert await inv.borrow(config, shard_of(user, config.shards), 1)
                    _, (r,) = await inv.claim(cid, shard_of(user, config.shards), T0,
                                              [ClaimItem(user, "r", "")], epoch=config.epoch)
                assert r.code == Code.GRANTED, r
                vouchers.append(r.voucher_id)

        await grant("a", 12)
        down = await rs.reshard(inv, cid, 2)
        mid = await inv.figures((await inv.load_campaign(cid)).config)
        await grant("b", 12)
        up = await rs.reshard(inv, cid, 4)
        await grant("c", 12)
        status = await inv.load_campaign(cid)
        return down, mid, up, vouchers, await inv.figures(status.config), status

    down, mid, up, vouchers, final, status = run(redis_server, fn)
    assert (down.from_shards, down.to_shards, up.to_shards, up.epoch) == (4, 2, 4, 2)
    assert mid.remaining[2:] == [0, 0] and sum(mid.remaining) == 48  # retired shards drained
    assert len(set(vouchers)) == 36                                 # shards 2, 3 came back: seq went on
    assert sum(final.remaining) + final.in_leases + sum(final.granted) == 60
    assert status.config.shards == 4 and status.config.shard_slots == 4 and not status.resharding


# ------------------------------------------------------------------ operators' mistakes


def test_unfinished_reshard_is_finished_by_running_it_again(redis_server, admin, claims):
    info = create_campaign(admin, inventory=300, shards=3)
    cid = info.campaign.campaign_id
    granted = {u: claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=u, request_id="r"), timeout=10)
               for u in (f"u{i}" for i in range(100))}

    async def half(inv: RedisInventory, client: Any) -> None:  # a reshard that died after fencing
        await scripts.BEGIN_RESHARD(client, [campaign_key(cid)], [7])
        status = await inv.load_campaign(cid)
        await rs._fence(inv, status.config, status.config.with_map(3, 0, 3), paused=False)

    run(redis_server, half)
    mid = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
    with pytest.raises(grpc.RpcError) as other:
        admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=5), timeout=30)
    done = admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=7), timeout=30)
    replays = {u: claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=u, request_id="r"), timeout=10)
               for u in granted}
    assert mid.resharding and mid.campaign.shards == 7
    assert other.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "--shards 7" in other.value.details()
    assert done.resumed and done.to_shards == 7 and done.moved_users > 0 and not done.campaign.resharding
    assert {u: r.voucher.voucher_id for u, r in replays.items()} == {
        u: r.voucher.voucher_id for u, r in granted.items()}
    assert done.campaign.granted == 100 and done.campaign.remaining == 200


@pytest.mark.parametrize(("campaign_id", "shards", "code"), [
    ("", 4, grpc.StatusCode.INVALID_ARGUMENT),
    ("bad{id}", 4, grpc.StatusCode.INVALID_ARGUMENT),
    (None, 0, grpc.StatusCode.INVALID_ARGUMENT),
    (None, 1025, grpc.StatusCode.INVALID_ARGUMENT),
    (None, 51, grpc.StatusCode.INVALID_ARGUMENT),   # more shards than inventory
    ("no-such-campaign", 4, grpc.StatusCode.NOT_FOUND),
])
def test_bad_reshard_requests_change_nothing(admin, redis_client, campaign_id, shards, code):
    cid = create_campaign(admin, inventory=50, shards=2).campaign.campaign_id
    before = redis_dump(redis_client, cid)
    with pytest.raises(grpc.RpcError) as err:
        admin.Reshard(pb.ReshardRequest(campaign_id=cid if campaign_id is None else campaign_id,
                                        shards=shards), timeout=10)
    assert err.value.code() == code
    assert redis_dump(redis_client, cid) == before


def test_same_count_is_a_no_op(admin, redis_client):
    cid = create_campaign(admin, inventory=50, shards=2).campaign.campaign_id
    before = redis_dump(redis_client, cid)
    done = admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=2), timeout=10)
    assert (done.from_shards, done.to_shards, done.shard_epoch, done.moved_users) == (2, 2, 0, 0)
    assert redis_dump(redis_client, cid) == before


def test_cli_reshard(node, admin):
    cid = create_campaign(admin, inventory=40, shards=2).campaign.campaign_id
    cli = [sys.executable, "-m", "claimcore", "campaign", "--target", node.address, "reshard"]
    ok = subprocess.run([*cli, cid, "--shards", "6", "--json"], capture_output=True, text=True, timeout=60)
    bad = subprocess.run([*cli, cid, "--shards", "0"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    reply = json.loads(ok.stdout)
    assert reply["to_shards"] == 6 and reply["campaign"]["campaign"]["shards"] == 6
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "shards" in bad.stderr
