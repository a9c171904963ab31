"""claimcore on a real Redis Cluster of three masters (issue 5, first part).

The same scripts run unchanged: every call touches the keys of one shard,
which share a hash tag, so a campaign's shards spread over the masters.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import grpc
import pytest
import redis

from claimcore.harness.embedded_redis import EmbeddedCluster
from claimcore.harness.local_node import NodeStartError
from claimcore.store.keyspace import shard_keys
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign
from support import burst, check_burst


@pytest.fixture(scope="module")
def cluster():
    with EmbeddedCluster(masters=3) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_node(cluster):
    node = LocalNode("", "--redis-cluster", cluster.addresses).start()
    yield node
    node.stop()


def owner_of(cluster: EmbeddedCluster, key: str) -> int:
    """Which master (index) owns a key's slot: the others answer MOVED."""
    for index, node in enumerate(cluster.nodes):
        direct = redis.Redis(port=node.port)
        try:
            direct.exists(key)
            return index
        except redis.ResponseError:
            continue
        finally:
            direct.close()
    raise AssertionError(f"no master owns the slot of {key}")


def test_200_concurrent_clients_on_a_cluster_grant_exactly_the_stock(cluster, cluster_node):
    inventory, users = 300, 900
    with grpc.insecure_channel(cluster_node.address) as ch:
        admin = pb_grpc.AdminServiceStub(ch)
        cid = create_campaign(admin, inventory=inventory, shards=8).campaign.campaign_id
        rng = random.Random(5)
        requests = [(f"u{i}", f"r{i}") for i in range(users)]
        requests += [(f"u{rng.randrange(users)}", f"tap-{n}") for n in range(300)]
        requests += [requests[rng.randrange(users)] for _ in range(200)]
        rng.shuffle(requests)
        results = asyncio.run(burst([cluster_node.address], cid, requests))
        check_burst(results, inventory, users)
        info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
    assert info.granted == inventory and info.remaining == 0
    # The shards really live on different masters, and each master holds its shards' keys.
    masters = Counter(owner_of(cluster, shard_keys(cid, s).state) for s in range(8))
    assert len(masters) >= 2
    for s in range(8):
        keys = shard_keys(cid, s)
        port = cluster.nodes[owner_of(cluster, keys.state)].port
        direct = redis.Redis(port=port, decode_responses=True)
        try:
            assert direct.exists(keys.state) == 1
        finally:
            direct.close()


def test_replay_and_sold_out_on_a_cluster(cluster, cluster_node):
    with grpc.insecure_channel(cluster_node.address) as ch:
        admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
        cid = create_campaign(admin, inventory=2, shards=2).campaign.campaign_id
        first = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="a", request_id="r"), timeout=10)
        second = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="b", request_id="r"), timeout=10)
        third = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="c", request_id="r"), timeout=10)
        replay = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="a", request_id="r"), timeout=10)
        settled = claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="b"), timeout=10)
    assert [first.outcome, second.outcome, third.outcome] == [pb.OUTCOME_GRANTED] * 2 + [pb.OUTCOME_SOLD_OUT]
    assert replay.voucher == first.voucher
    assert [v.voucher_id for v in settled.vouchers] == [second.voucher.voucher_id]


def test_script_cache_flushed_on_every_master_reloads(cluster, cluster_node):
    with grpc.insecure_channel(cluster_node.address) as ch:
        admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
        cid = create_campaign(admin, inventory=20, shards=4).campaign.campaign_id
        for node in cluster.nodes:
            redis.Redis(port=node.port).script_flush()
        outcomes = {claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"u{i}", request_id="r"),
                                 timeout=10).outcome for i in range(12)}
    assert outcomes == {pb.OUTCOME_GRANTED}


def test_serve_refuses_both_redis_and_cluster(cluster):
    node = LocalNode("redis://127.0.0.1:1/0", "--redis-cluster", cluster.addresses)
    with pytest.raises(NodeStartError, match="not both"):
        node.start(timeout=10)
