"""The node's Redis clients: short timeouts, so a call fails fast and its caller retries.

Every claimcore call touches one hash slot (keyspace.py), so the same scripts run on one
Redis or, routed by their keys, on a Redis Cluster.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff


def redis_cluster_client(addresses: str, timeout_s: float = 2.0) -> aioredis.RedisCluster:
    """A Redis Cluster client: every claimcore call touches one slot, routed by its keys."""
    nodes = []
    for address in addresses.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--redis-cluster takes host:port,host:port,... not {addresses!r}")
        nodes.append(ClusterNode(host, int(port)))
    return aioredis.RedisCluster(
        startup_nodes=nodes, decode_responses=True, socket_timeout=timeout_s,
        socket_connect_timeout=min(1.0, timeout_s),
    )


def redis_client(url: str, timeout_s: float = 2.0, connections: int = 64) -> aioredis.Redis:
    """A pooled asyncio client with short timeouts: fail fast, let callers retry."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=connections, timeout=timeout_s, decode_responses=True,
        socket_timeout=timeout_s, socket_connect_timeout=min(1.0, timeout_s),
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
    )
    return aioredis.Redis(connection_pool=pool)
