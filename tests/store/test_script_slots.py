"""Every script touches one cluster slot: a shard's keys share one hash tag, each script's header
declares KEYS of one shard (or of the campaign key), and the whole of RedisInventory runs on a
private single-node Redis Cluster, which refuses a script that strays into another slot.

Every test that writes to Redis uses its own campaign id; results are compared with exact values.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from lua_support import T0, config, get_request
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.store import scripts
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import CAMPAIGN_INDEX, campaign_key, shard_keys
from claimcore.store.replies import ClaimItem, ItemResult
from conftest import new_campaign_id
from support import users_on


def test_every_shard_lives_in_one_slot_and_shards_spread() -> None:
    cid = "slots-campaign-7"
    shards = 16
    campaign_slot = key_slot(campaign_key(cid).encode())
    assert campaign_slot == key_slot(cid.encode())
    shard_slots = []
    for s in range(shards):
        keys = shard_keys(cid, s)
        slots = {key_slot(k.encode()) for k in keys}
        assert slots == {key_slot(f"{cid}:{s}".encode())}, (s, keys)
        shard_slots.append(slots.pop())
    assert campaign_slot not in shard_slots
    assert len(set(shard_slots)) >= 12
    assert key_slot(CAMPAIGN_INDEX.encode()) not in {campaign_slot, *shard_slots}
    # the five keys of keyspace.py's header, in order
    suffixes = [k.rsplit(":", 1)[1] for k in shard_keys(cid, 3)]
    assert suffixes == ["state", "users", "reqs", "leases", "credited", "log", "redeem", "elig", "eligcalls"]


def test_script_headers_declare_single_slot_keys() -> None:
    """Each script names its KEYS in the header; all are keys of one shard (or the campaign key)."""
    expected = {
        "claim": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:log", "cc:{C:s}:elig"],
        "credit": ["cc:{C:s}:state", "cc:{C:s}:credited"],
        "lend": ["cc:{C:d}:state", "cc:{C:d}:leases"],
        "init_shard": ["cc:{C:s}:state"],
        "create_campaign": ["cc:{C}:campaign"],
        "fence": ["cc:{C:s}:state"],
        "adopt": ["cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:elig", "cc:{C:s}:state"],
        "export": ["cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:elig"],
        "forget": ["cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:elig"],
        "eligibility": ["cc:{C:s}:state", "cc:{C:s}:elig", "cc:{C:s}:eligcalls"],
        "holds": ["cc:{sn:b}:sns"],
        "stack": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:log"],
        "recycle": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:log"],
        "redeem": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:log"],
        "reverse": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:log"],
        "lookup": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem"],
        "lock": ["cc:{C}:reshard"],
        "begin_reshard": ["cc:{C}:campaign"],
        "archive": ["cc:{C}:campaign"],
    }
    for script in scripts.ALL:
        declared = [line.split()[2] for line in script.source.splitlines() if line.startswith("-- KEYS[")]
        assert declared == expected[script.name]
        assert len({k[k.index("{"):k.index("}") + 1] for k in declared}) == 1
        assert script.source.startswith("#!lua\n")  # shebang: Redis 7 refuses undeclared cross-slot keys


@pytest.fixture(scope="module")
def cluster_server() -> Iterator[EmbeddedRedis]:
    """A single-node Redis Cluster holding all 16384 slots: it refuses cross-slot scripts."""
    data = tempfile.mkdtemp(prefix="claimcore-cluster-")
    # the cluster bus port defaults to port + 10000, which may be taken or above 65535: pick it
    server = EmbeddedRedis(data_dir=data, extra_args=[
        "--cluster-enabled", "yes", "--cluster-config-file", f"{data}/nodes.conf",
        "--cluster-port", str(free_port())]).start()
    try:
        client = redis.Redis(port=server.port, decode_responses=True)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 15
        while client.cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "cluster did not become ok"
            time.sleep(0.05)
        client.close()
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def test_whole_inventory_runs_on_redis_cluster(cluster_server: EmbeddedRedis) -> None:
    """Every call of RedisInventory works on a cluster, so no script touches two slots."""
    cid = new_campaign_id("cluster")
    shards = 16
    cfg = config(cid, inventory=64, shards=shards)  # 4 per shard

    async def main() -> Any:
        plain = redis.asyncio.Redis(port=cluster_server.port, decode_responses=True)
        client = RedisCluster(host="127.0.0.1", port=cluster_server.port, decode_responses=True)
        try:
            # the control: this server does refuse a script that strays into another slot
            k0, k1 = shard_keys(cid, 0).state, shard_keys(cid, 1).state
            with pytest.raises(redis.ResponseError, match="same slot"):
                await plain.eval("#!lua\nreturn redis.call('EXISTS', ARGV[1])", 1, k0, k1)
            with pytest.raises(redis.ResponseError, match="slot"):
                await plain.eval("#!lua\nreturn 1", 2, k0, k1)

            inv = RedisInventory(client)
            assert await inv.create_campaign(cfg) is True
            assert await inv.create_campaign(cfg) is False
            granted = 0
            for s in range(shards):
                users = users_on(s, shards, 5, f"c{s}-")
                _, res = await inv.claim(cid, s, T0, [ClaimItem(u, f"q-{u}", "") for u in users])
                assert [r.code for r in res] == [1, 1, 1, 1, 4]
                granted += 4
            # all empty now: put a lease in flight by hand, then let borrow settle and move it
            await client.hset(shard_keys(cid, 5).state, "stock", 3)  # restock shard 5 (test only)
            taken, left, _ = await scripts.LEND(client, [shard_keys(cid, 5).state, shard_keys(cid, 5).leases],
                                                [3, "lease-x", 9, T0, 0])
            assert (taken, left) == (3, 0)
            mid = await inv.figures(cfg)
            moved = await inv.borrow(cfg, 0, 1)
            after_borrow = await inv.figures(cfg)
            _, res = await inv.claim(cid, 0, T0, [ClaimItem(users_on(0, shards, 6, "c0-")[5], "late", "")])
            await inv.set_paused(cfg, True)
            status = await inv.load_campaign(cid)
            user = users_on(3, shards, 1, "c3-")[0]
            return (mid, moved, after_borrow, res, status.paused, await inv.lookup(cid, 3, user),
                    await get_request(inv, cid, 3, user, f"q-{user}"), len(await inv.all_records(cfg, 3)),
                    await inv.settle_leases(cfg), await inv.figures(cfg), await inv.list_campaigns())
        finally:
            await client.aclose()
            await plain.aclose()

    (mid, moved, after_borrow, res, paused, user_records, found, n3, settled, final,
     listed) = asyncio.run(main())
    assert mid.in_leases == 3 and mid.remaining == [0] * shards
    # nothing to lend, so borrow settles the lease (3 into shard 9), then takes
    # max(1, min(64, 3 // 2)) = 1 from shard 9
    assert moved == 1
    assert after_borrow.in_leases == 0
    assert after_borrow.remaining == [1] + [0] * 8 + [2] + [0] * 6
    assert res == [ItemResult(1, f"{cid}-0-5", T0)]
    assert paused is True
    assert len(user_records) == 1 and found == user_records[0]
    assert n3 == 4
    assert settled == 0
    assert final.in_leases == 0 and sum(final.granted) == 65 and sum(final.remaining) == 2
    assert cid in listed
