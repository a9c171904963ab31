"""eval_on_cluster on a real Redis Cluster (3 masters, 1 replica each): per-master pipelining,
NOSCRIPT, WAIT for replica acknowledgements, a dead master; and, through real nodes, the
pipelined path side by side with the old one-EVALSHA-per-call path.

The side-by-side figures in docs/cluster.md come from `CLAIMCORE_CLUSTER_BENCH_CLAIMS=20000
.venv/bin/pytest -q -s tests/store/test_cluster_calls.py -k side_by_side`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from types import SimpleNamespace

import grpc
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode

from claimcore.harness.embedded_redis import EmbeddedCluster
from claimcore.store.cluster_calls import STATS, ReplicaAckTimeout, eval_on_cluster
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign
from support import burst, check_burst


def script(source: str) -> SimpleNamespace:
    """A script as eval_on_cluster takes it: its source and SHA1 (like claimcore.store.scripts.LuaScript)."""
    return SimpleNamespace(source=source, sha=hashlib.sha1(source.encode()).hexdigest())


ECHO = script("return {KEYS[1], ARGV[1]}")
INCR = script("return redis.call('INCR', KEYS[1])")
READ = script("return redis.call('GET', KEYS[1])")


@pytest.fixture(scope="module")
def cluster():
    with EmbeddedCluster(masters=3, replicas=1) as c:
        yield c


def run(cluster: EmbeddedCluster, work):  # noqa: ANN001, ANN201
    """Run `work(client)` on a fresh asyncio RedisCluster client, as a node would."""
    async def main():  # noqa: ANN202
        nodes = [ClusterNode("127.0.0.1", n.port) for n in cluster.live()]
        client = aioredis.RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=2)
        try:
            return await work(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


def test_one_pipelined_write_per_master_and_replies_in_order(cluster):
    calls = [([f"k:{{t{i}}}"], [f"v{i}"]) for i in range(60)]
    masters = len(cluster.masters())

    async def work(client):  # noqa: ANN001, ANN202
        for node in cluster.live():  # a cold script cache: every master answers NOSCRIPT once
            direct = cluster.client(node)
            direct.script_flush()
            direct.close()
        first_trips, first_noscript = STATS["round_trips"], STATS["noscript"]
        first = await eval_on_cluster(client, ECHO, calls)
        cold = STATS["round_trips"] - first_trips, STATS["noscript"] - first_noscript
        before = STATS["round_trips"]
        second = await eval_on_cluster(client, ECHO, calls)
        return first, second, cold, STATS["round_trips"] - before

    first, second, (cold_trips, noscript), warm_trips = run(cluster, work)
    expected = [[keys[0], args[0]] for keys, args in calls]
    assert first == expected and second == expected
    assert warm_trips == masters                  # 60 calls, one write per master
    assert cold_trips == 2 * masters and noscript == 60  # NOSCRIPT: load and resend, once per master


def test_replica_ack_shortfall_fails_only_that_masters_calls_and_covers_replays(cluster):
    """WAIT 1 on a master whose replica is stopped: its calls answer ReplicaAckTimeout (the write
    stays applied), other masters' calls succeed; a read-only call there (a replay) is not
    acknowledged either; once the replica runs again, the same calls succeed."""
    key_there, key_elsewhere = "ack:{a}", "ack:{b}"
    master = cluster.master_of(key_there)
    if cluster.master_of(key_elsewhere) is master:
        key_elsewhere = "ack:{c}" if cluster.master_of("ack:{c}") is not master else "ack:{d}"
    assert cluster.master_of(key_elsewhere) is not master
    replica = cluster.replicas_of(master)[0]
    calls = [([key_there], []), ([key_elsewhere], [])]

    async def work(client):  # noqa: ANN001, ANN202
        await eval_on_cluster(client, INCR, calls, replica_acks=1, replica_timeout_ms=1000)
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            stalled = await eval_on_cluster(client, INCR, calls, replica_acks=1, replica_timeout_ms=200)
            replay = await eval_on_cluster(client, READ, calls[:1], replica_acks=1, replica_timeout_ms=200)
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
        healed = await eval_on_cluster(client, READ, calls, replica_acks=1, replica_timeout_ms=2000)
        return stalled, replay, healed

    stalled, replay, healed = run(cluster, work)
    assert isinstance(stalled[0], ReplicaAckTimeout) and stalled[1] == 2
    assert isinstance(replay[0], ReplicaAckTimeout)
    assert healed == ["2", "2"]  # the unacknowledged INCR was applied on the master all the same


def test_dead_master_fails_only_its_calls_then_its_replica_takes_over(cluster):
    """kill -9 of a master: its calls come back as ConnectionError after bounded retries (UNAVAILABLE
    at the node), the others succeed; once the replica is promoted, the same calls succeed (MOVED
    or a fresh slot map, then NOSCRIPT on the promoted replica)."""
    victim_key, other_key = "dead:{a}", "dead:{b}"
    victim = cluster.master_of(victim_key)
    if cluster.master_of(other_key) is victim:
        other_key = "dead:{c}" if cluster.master_of("dead:{c}") is not victim else "dead:{d}"
    calls = [([victim_key], ["x"]), ([other_key], ["y"])]

    async def work(client):  # noqa: ANN001, ANN202
        warm = await eval_on_cluster(client, ECHO, calls)
        replica = await asyncio.to_thread(cluster.kill_master, victim, 30.0, False)
        broken = await eval_on_cluster(client, ECHO, calls)
        await asyncio.to_thread(cluster.wait_promoted, [replica])
        healed = await eval_on_cluster(client, ECHO, calls)
        return warm, broken, healed

    try:
        warm, broken, healed = run(cluster, work)
    finally:
        cluster.restart(victim)
    assert warm == [[victim_key, "x"], [other_key, "y"]] == healed
    assert isinstance(broken[0], redis.ConnectionError) and broken[1] == [other_key, "y"]


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_totals(cluster: EmbeddedCluster) -> tuple[int, int, float]:
    """(read events, EVALSHA calls, CPU seconds) summed over the masters."""
    reads = evalsha = 0
    cpu = 0.0
    for node in cluster.masters():
        client = cluster.client(node)
        try:
            info = client.info("all")
        finally:
            client.close()
        reads += int(info["total_reads_processed"])
        evalsha += int(info.get("cmdstat_evalsha", {}).get("calls", 0))
        cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return reads, evalsha, cpu


def test_side_by_side_pipelined_against_one_evalsha_per_call(cluster, monkeypatch):
    """The same granting burst through two nodes on the same cluster: one pipelining per master,
    one sending one EVALSHA per call (CLAIMCORE_CLUSTER_PIPELINING=0). Proves both grant exactly
    the stock; the figures (printed) go to docs/cluster.md. The only assertion on them is
    structural: pipelining needs fewer Redis read events per EVALSHA."""
    claims = int(os.environ.get("CLAIMCORE_CLUSTER_BENCH_CLAIMS", "3000"))
    pipelined = LocalNode("", "--redis-cluster", cluster.addresses).start()
    monkeypatch.setenv("CLAIMCORE_CLUSTER_PIPELINING", "0")
    per_call = LocalNode("", "--redis-cluster", cluster.addresses).start()
    monkeypatch.delenv("CLAIMCORE_CLUSTER_PIPELINING")
    rows = {}
    try:
        for name, node in (("one EVALSHA per call", per_call), ("pipelined per master", pipelined)):
            with grpc.insecure_channel(node.address) as ch:
                cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=claims,
                                      shards=8).campaign.campaign_id
            requests = [(f"u{i}", f"r{i}") for i in range(claims)]
            reads0, evalsha0, redis_cpu0 = _redis_totals(cluster)
            node_cpu0, t0 = _cpu_s(node.proc.pid), time.perf_counter()
            results = asyncio.run(burst([node.address], cid, requests))
            wall = time.perf_counter() - t0
            node_cpu = _cpu_s(node.proc.pid) - node_cpu0
            reads1, evalsha1, redis_cpu1 = _redis_totals(cluster)
            check_burst(results, claims, claims)
            assert all(r.outcome == pb.OUTCOME_GRANTED for _, _, r in results)
            rows[name] = (claims / wall, evalsha1 - evalsha0, reads1 - reads0,
                          node_cpu / claims * 1e6, (redis_cpu1 - redis_cpu0) / claims * 1e6)
    finally:
        pipelined.stop()
        per_call.stop()
    print(f"\n{claims} granting claims, unary, 200 clients, 8 shards, 3 masters (+1 replica each):")
    print(f"{'':22} {'claims/s':>9} {'EVALSHA':>8} {'Redis reads':>12} {'node us/claim':>14} "
          f"{'Redis us/claim':>15}")
    for name, (rate, evalsha, reads, node_us, redis_us) in rows.items():
        print(f"{name:22} {rate:9.0f} {evalsha:8d} {reads:12d} {node_us:14.0f} {redis_us:15.1f}")
    old, new = rows["one EVALSHA per call"], rows["pipelined per master"]
    assert new[2] / new[1] < old[2] / old[1]
