"""Redis Cluster faults during a burst (issue 5): failover, kill -9, NOSCRIPT, live resharding.

Every test drives a real `claimcore serve --redis-cluster` node through real
gRPC with concurrent clients that retry UNAVAILABLE with the same request_id,
injects the fault mid-burst, and then checks, against the replies and against
Redis itself:

- exactly the inventory is granted, and no user holds two vouchers;
- every GRANTED reply any client saw is in Redis, with the same voucher, and
  every retry of a request got the same voucher back;
- conservation: sum of shard stock + stock in leases + granted == inventory.

The node logs its redirection and retry counters (claimcore.store.cluster_calls);
each test prints them.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import redis
from redis.crc import key_slot

from claimcore.harness.embedded_redis import EmbeddedCluster
from claimcore.store.keyspace import shard_keys
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from conftest import LocalNode, create_campaign, new_campaign_id

INVENTORY, USERS, SHARDS = 2000, 3000, 4
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class BurstLog:
    final: dict[tuple[str, str], pb.ClaimResponse] = field(default_factory=dict)
    granted_seen: list[tuple[str, str, str]] = field(default_factory=list)  # every GRANTED reply
    retried: Counter[str] = field(default_factory=Counter)                  # status code -> retries


def requests_for(seed: int) -> list[tuple[str, str]]:
    """USERS distinct users, plus double taps (new request ids) and plain retries (same ids)."""
    rng = random.Random(seed)
    requests = [(f"u{i}", f"r{i}") for i in range(USERS)]
    requests += [(f"u{rng.randrange(USERS)}", f"tap-{n}") for n in range(400)]
    requests += [requests[rng.randrange(USERS)] for _ in range(400)]
    rng.shuffle(requests)
    return requests


async def resilient_burst(address: str, cid: str, requests: list[tuple[str, str]],
                          fault: Callable[[], None], fault_after: int,
                          clients: int = 64, pace_s: float = 0.0) -> BurstLog:
    """Concurrent clients that retry UNAVAILABLE/DEADLINE_EXCEEDED with the same request_id
    (for up to 60 s each); `fault` runs in a thread once `fault_after` requests have an
    answer, while the burst goes on."""
    log = BurstLog()
    queue = list(reversed(requests))
    fault_started = asyncio.Event()
    answered = 0

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ClaimServiceStub(channel)

        async def client() -> None:
            nonlocal answered
            while queue:
                user, rid = queue.pop()
                deadline = time.monotonic() + 60
                while True:
                    try:
                        reply = await stub.Claim(
                            pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid), timeout=5)
                        break
                    except grpc.aio.AioRpcError as err:
                        if err.code() not in RETRYABLE or time.monotonic() > deadline:
                            raise
                        log.retried[err.code().name] += 1
                        await asyncio.sleep(0.05 + random.random() * 0.1)
                if reply.outcome == pb.OUTCOME_GRANTED:
                    log.granted_seen.append((user, rid, reply.voucher.voucher_id))
                log.final[(user, rid)] = reply
                answered += 1
                if answered >= fault_after:
                    fault_started.set()
                if pace_s:
                    await asyncio.sleep(pace_s)

        async def injector() -> None:
            await fault_started.wait()
            await asyncio.to_thread(fault)

        await asyncio.gather(injector(), *(client() for _ in range(clients)))
    return log


def check_invariants(cluster: EmbeddedCluster, node: LocalNode, cid: str, log: BurstLog) -> None:
    outcomes = Counter(short_name(pb.Outcome, r.outcome) for r in log.final.values())
    assert set(outcomes) <= {"GRANTED", "ALREADY_CLAIMED", "SOLD_OUT"}, outcomes
    # No user twice, no voucher twice, one voucher per request however often it was retried.
    holder: dict[str, str] = {}
    owner: dict[str, str] = {}
    by_request: dict[tuple[str, str], str] = {}
    for user, rid, vid in log.granted_seen:
        assert by_request.setdefault((user, rid), vid) == vid, f"{user}/{rid} got two vouchers"
    for (user, _), reply in log.final.items():
        if reply.outcome in (pb.OUTCOME_GRANTED, pb.OUTCOME_ALREADY_CLAIMED):
            vid = reply.voucher.voucher_id
            assert holder.setdefault(user, vid) == vid, f"{user} got two vouchers"
            assert owner.setdefault(vid, user) == user, f"voucher {vid} given to two users"
    assert len(holder) == INVENTORY

    # Against Redis itself: every grant a client saw is stored; conservation holds.
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.masters()[0].port, decode_responses=True)
    try:
        stock = granted = in_leases = 0
        stored: dict[tuple[str, str], str] = {}
        for s in range(SHARDS):
            keys = shard_keys(cid, s)
            state = client.hgetall(keys.state)
            stock += int(state["stock"])
            granted += int(state["granted"])
            for fld, raw in client.hgetall(keys.reqs).items():
                user, rid = fld.split("|", 1)
                stored[(user, rid)] = raw.split("|")[0]
            for lease_id, raw in client.hgetall(keys.leases).items():
                dest, amount = int(raw.split("|")[0]), int(raw.split("|")[1])
                if not client.sismember(shard_keys(cid, dest).credited, lease_id):
                    in_leases += amount
    finally:
        client.close()
    assert granted == INVENTORY == len(stored)
    assert stock + in_leases + granted == INVENTORY
    assert len(set(stored.values())) == len(stored)
    for user, rid, vid in log.granted_seen:
        assert stored.get((user, rid)) == vid, f"GRANTED {vid} to {user}/{rid} is not in Redis"
    assert {user for user, _ in stored} == set(holder)
    with grpc.insecure_channel(node.address) as ch:
        info = pb_grpc.AdminServiceStub(ch).GetCampaign(pb.GetCampaignRequest(campaign_id=cid),
                                                        timeout=10).campaign
    assert info.granted == INVENTORY and info.remaining == 0


def node_counters(node: LocalNode) -> Counter[str]:
    """The last `cluster retries so far:` line the node logged (claimcore.store.cluster_calls)."""
    time.sleep(1.2)  # the node logs at most once a second
    lines = re.findall(r"cluster retries so far: (.*)", node.log_tail(200_000))
    if not lines:
        return Counter()
    return Counter({k: int(v) for k, v in (pair.split("=") for pair in lines[-1].split())})


def report(name: str, log: BurstLog, before: Counter[str], after: Counter[str]) -> None:
    delta = {k: after[k] - before[k] for k in after if after[k] - before[k]}
    print(f"\n{name}: client retries {dict(log.retried)}; node cluster counters {delta}")


def new_campaign(node: LocalNode, campaign_id: str | None = None) -> str:
    with grpc.insecure_channel(node.address) as ch:
        return create_campaign(pb_grpc.AdminServiceStub(ch), campaign_id=campaign_id or new_campaign_id(),
                               inventory=INVENTORY, shards=SHARDS).campaign.campaign_id


def busiest_master(cluster: EmbeddedCluster, cid: str):  # noqa: ANN201
    """The master holding most of the campaign's shards."""
    owners = Counter(cluster.master_of(shard_keys(cid, s).state).port for s in range(SHARDS))
    port = owners.most_common(1)[0][0]
    return next(n for n in cluster.nodes if n.port == port)


def test_manual_failover_mid_burst_keeps_every_grant(cluster, plain_node):
    """(a) CLUSTER FAILOVER of the master holding the campaign's shards: MOVED, then NOSCRIPT
    on the promoted replica, handled without a wrong answer."""
    cid = new_campaign(plain_node)
    master = busiest_master(cluster, cid)
    replica = cluster.replicas_of(master)[0]
    before = node_counters(plain_node)
    log = asyncio.run(resilient_burst(plain_node.address, cid, requests_for(1),
                                      lambda: cluster.failover(replica), fault_after=300))
    assert cluster.master_of(shard_keys(cid, 0).state) is not None
    assert replica in cluster.masters() and master not in cluster.masters()
    after = node_counters(plain_node)
    report("manual failover", log, before, after)
    check_invariants(cluster, plain_node, cid, log)
    assert after["moved"] > before["moved"]        # the old master redirected to the new one
    assert after["noscript"] > before["noscript"]  # the promoted replica had no script cache


def test_master_killed_mid_burst_with_replica_acks_loses_no_grant(cluster, acked_node):
    """(b) kill -9 of a master, automatic failover: with --replica-acks 1 no GRANTED reply is
    lost, nobody is granted twice, never more than the inventory. The killed master is
    started again (it rejoins as a replica), so that WAIT can be satisfied once more."""
    cid = new_campaign(acked_node)
    master = busiest_master(cluster, cid)

    def kill_and_restart() -> None:
        cluster.kill_master(master)
        cluster.restart(master)

    before = node_counters(acked_node)
    log = asyncio.run(resilient_burst(acked_node.address, cid, requests_for(2), kill_and_restart,
                                      fault_after=300))
    assert master not in cluster.masters()
    after = node_counters(acked_node)
    report("kill -9 of a master, --replica-acks 1", log, before, after)
    check_invariants(cluster, acked_node, cid, log)
    assert log.retried["UNAVAILABLE"] > 0                       # the fault was felt by clients
    assert after["node_failures"] > before["node_failures"]


def test_script_cache_flushed_on_every_master_mid_burst(cluster, plain_node):
    """(c) SCRIPT FLUSH on every node mid-burst: each master answers NOSCRIPT once per flush
    of the node, which loads the script in the same pipeline and sends the calls again."""
    cid = new_campaign(plain_node)

    def flush_all() -> None:
        for node in cluster.live():
            client = cluster.client(node)
            try:
                client.script_flush()
            finally:
                client.close()

    before = node_counters(plain_node)
    log = asyncio.run(resilient_burst(plain_node.address, cid, requests_for(3), flush_all,
                                      fault_after=300))
    after = node_counters(plain_node)
    report("SCRIPT FLUSH on every master", log, before, after)
    check_invariants(cluster, plain_node, cid, log)
    assert after["noscript"] > before["noscript"]
    assert not log.retried  # NOSCRIPT never reaches a client


def early_moved_campaign(cluster: EmbeddedCluster) -> tuple[str, list[int]]:
    """A campaign id with a shard in the first 600 slots of its master's range, and its shards
    there: a rebalance onto a fourth master moves each source's lowest slots first (redis-cli's
    reshard table), so these move while the burst is still granting. (CRC16 is linear, so the
    slots of "C:0".."C:3" keep a fixed XOR pattern: at most 2 of 4 can fall in the ~1/4 of each
    range that moves, and only one in its first 600 slots.)"""
    client = cluster.client(cluster.live()[0])
    try:
        starts = [int(entry[0]) for entry in client.execute_command("CLUSTER", "SLOTS")]
    finally:
        client.close()
    rng = random.Random(11)
    while True:
        cid = f"rb-{rng.getrandbits(40):010x}"
        early = [s for s in range(SHARDS)
                 if any(0 <= key_slot(f"{cid}:{s}".encode()) - start < 600 for start in starts)]
        if early:
            return cid, early


def test_rebalance_onto_a_new_master_mid_burst(cluster, plain_node):
    """(d) Add a fourth master and run `redis-cli --cluster rebalance --cluster-use-empty-masters`
    during a burst: the campaign's slots migrate and every invariant holds.
    The clients are paced so that granting lasts as long as the migration."""
    cid, early = early_moved_campaign(cluster)
    new_campaign(plain_node, cid)
    homes_before = {s: cluster.master_of(shard_keys(cid, s).state).port for s in range(SHARDS)}
    new_master = cluster.add_master()
    result: list[subprocess.CompletedProcess[str]] = []

    def rebalance() -> None:
        result.append(subprocess.run(
            ["redis-cli", "--cluster", "rebalance", f"127.0.0.1:{cluster.masters()[0].port}",
             "--cluster-use-empty-masters"], capture_output=True, text=True, timeout=120))

    before = node_counters(plain_node)
    log = asyncio.run(resilient_burst(plain_node.address, cid, requests_for(4), rebalance,
                                      fault_after=1, clients=32, pace_s=0.1))
    assert result[0].returncode == 0, result[0].stdout[-2000:] + result[0].stderr[-2000:]
    cluster.wait_ok()
    homes_after = {s: cluster.master_of(shard_keys(cid, s).state).port for s in range(SHARDS)}
    assert {homes_after[s] for s in early} == {new_master.port} != {homes_before[s] for s in early}
    after = node_counters(plain_node)
    report("rebalance onto a fourth master", log, before, after)
    check_invariants(cluster, plain_node, cid, log)
    # How many MOVED/ASK/TRYAGAIN the node met depends on how the burst and the migration
    # interleave (CI once saw none: the burst was done first), so they are reported, not
    # asserted; the next test drives each of those paths deterministically.


def test_slot_migrated_by_hand_mid_burst_goes_through_tryagain_ask_and_moved(cluster, plain_node):
    """(e) One shard's slot migrated step by step while it is claimed, holding each stage:
    keys split between the masters (TRYAGAIN), all keys on the target while the slot is still
    the source's (ASK), then the slot handed over (MOVED). Every invariant holds."""
    cid = new_campaign(plain_node)
    keys = shard_keys(cid, 0)
    slot = key_slot(keys.state.encode())
    source = cluster.master_of(keys.state)
    target = next(m for m in cluster.masters() if m is not source)

    def node_id(node) -> str:  # noqa: ANN001
        client = cluster.client(node)
        try:
            return str(client.execute_command("CLUSTER", "MYID"))
        finally:
            client.close()

    def migrate(names: list[str]) -> None:
        client = cluster.client(source)
        try:
            present = []
            for k in names:
                try:
                    if client.exists(k):
                        present.append(k)
                except redis.exceptions.AskError:  # gone to the target already
                    pass
            if present:
                client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *present)
        finally:
            client.close()

    def move_slot_in_stages() -> None:
        src, dst = cluster.client(source), cluster.client(target)
        try:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
            migrate([keys.users])          # split: claim.lua's keys on two masters -> TRYAGAIN
            time.sleep(0.3)
            migrate(list(keys))            # all on the target, slot still the source's -> ASK
            time.sleep(0.6)
            for node in cluster.masters():  # the hand-over -> MOVED
                client = cluster.client(node)
                try:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
                finally:
                    client.close()
        finally:
            src.close()
            dst.close()

    before = node_counters(plain_node)
    log = asyncio.run(resilient_burst(plain_node.address, cid, requests_for(5), move_slot_in_stages,
                                      fault_after=200, clients=32, pace_s=0.05))
    cluster.wait_ok()
    assert cluster.master_of(keys.state) is target
    after = node_counters(plain_node)
    report("slot migrated by hand", log, before, after)
    check_invariants(cluster, plain_node, cid, log)
    for kind in ("tryagain", "ask", "moved"):
        assert after[kind] > before[kind], kind
