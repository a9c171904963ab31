"""Shared fixtures: a real redis-server and real front nodes, on free ports.

Nothing here imitates Redis or gRPC: `redis_server` is a redis-server child
process, `node` is `python -m claimcore serve` in a child process (LocalNode).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from claimcore.harness.embedded_redis import EmbeddedCluster, EmbeddedRedis
from claimcore.harness.local_node import LocalNode, health_status  # noqa: F401 - tests import health_status from here
from claimcore.store.keyspace import CAMPAIGN_INDEX
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def node(redis_server: EmbeddedRedis) -> Iterator[LocalNode]:
    """One front node shared by the tests that only need one.

    It never recycles by itself: a sweep at a random moment raced tests that recycle on
    request (test_cli_recycle once found nothing left to recycle). tests/lifecycle/test_recycling.py
    runs a node of its own to test the sweeper."""
    node = LocalNode(redis_server.url, "--recycle-every-s", "0").start()
    yield node
    node.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """For running the CLI: the environment without CLAIMCORE_* settings and with an empty config home,
    so that nothing leaks in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMCORE_")}
    (tmp_path / "home").mkdir()
    clean.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"))
    return clean


@pytest.fixture
def channel(node: LocalNode) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.address) as ch:
        yield ch


@pytest.fixture
def claims(channel: grpc.Channel) -> pb_grpc.ClaimServiceStub:
    return pb_grpc.ClaimServiceStub(channel)


@pytest.fixture
def admin(channel: grpc.Channel) -> pb_grpc.AdminServiceStub:
    return pb_grpc.AdminServiceStub(channel)


# Failover tests (tests/store/test_cluster_faults.py, tests/chaos/test_failover.py): a cluster of their
# module's own, 3 masters with a replica each and a fast failover, and a node on it without and with
# replica acknowledgements. Modules that need another cluster define their own `cluster`.
@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(masters=3, replicas=1, node_timeout_ms=700) as c:
        yield c


@pytest.fixture(scope="module")
def plain_node(cluster: EmbeddedCluster) -> Iterator[LocalNode]:
    node = LocalNode("", "--redis-cluster", cluster.addresses).start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def acked_node(cluster: EmbeddedCluster) -> Iterator[LocalNode]:
    node = LocalNode("", "--redis-cluster", cluster.addresses,
                     "--replica-acks", "1", "--replica-timeout-ms", "300").start()
    yield node
    node.stop()


def new_campaign_id(prefix: str = "t") -> str:
    """Tests share one Redis: every campaign gets a fresh id."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_campaign(admin: pb_grpc.AdminServiceStub, **fields: object) -> pb.CampaignInfo:
    fields.setdefault("campaign_id", new_campaign_id())
    return admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(**fields)), timeout=10).campaign


CAMPAIGN_KEY = re.compile(r"cc:\{([^}:]+)(?::\d+)?\}:(\w+)")
GLOBAL_SUFFIXES = {"sns", "orders"}  # cc:{sn:b}:sns and cc:{stack:b}:orders are not a campaign's


def redis_dump(client: redis.Redis, *watched: str) -> dict[str, object]:
    """Every key with its type and content: to prove a call changed nothing.

    Left out: the keys of registered campaigns other than `watched`. The shared
    node's background work (the recycling sweep, the round keeper) may write to
    those at any moment, which says nothing of the call under test. Keys of an
    unregistered campaign, the campaign index and the shared registries stay in.
    """
    registered = client.smembers(CAMPAIGN_INDEX) - set(watched)
    out: dict[str, object] = {}
    for key in client.scan_iter(count=1000):
        match = CAMPAIGN_KEY.fullmatch(key)
        if match and match.group(2) not in GLOBAL_SUFFIXES and match.group(1) in registered:
            continue
        kind = client.type(key)
        if kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "set":
            out[key] = sorted(client.smembers(key))
        elif kind == "string":
            out[key] = client.get(key)
        elif kind == "stream":
            out[key] = (kind, client.xlen(key))
        else:
            out[key] = kind
    return out
