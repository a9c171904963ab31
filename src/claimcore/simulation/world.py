"""The processes of one run: Redis (plain or cluster), front nodes, and the faults done to them."""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis

from claimcore.harness.embedded_redis import EmbeddedCluster, EmbeddedRedis
from claimcore.harness.local_node import LocalNode
from claimcore.store.inventory import RETURNING
from claimcore.store.keyspace import campaign_key, shard_keys
from claimcore.v1 import claims_pb2_grpc as pb_grpc

# Clock offsets (ms) that made defects: a node 1 ms behind redeems what a sweeper marked expired,
# one 300 ms ahead sweeps early and holds with deadlines the others read differently.
CLOCK_OFFSETS = (300, -1, 1, 0)
# Sweep periods (s): one node sweeps often (its sweeps race redemptions at the edge of validity),
# the others seldom or never, so expired vouchers wait unswept and a reshard meets them.
SWEEP_PERIODS = (0.5, 3.0, 0.0, 5.0)


@dataclass
class NodeSlot:
    """One front node and the stubs the driver calls it through."""

    index: int
    node: LocalNode
    clock_offset_ms: int
    recycle_every_s: float
    channel: Any = None
    claims: Any = None
    admin: Any = None
    redeem: Any = None
    kills: int = 0

    def connect(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.node.address)
        self.claims = pb_grpc.ClaimServiceStub(self.channel)
        self.admin = pb_grpc.AdminServiceStub(self.channel)
        self.redeem = pb_grpc.RedeemServiceStub(self.channel)

    def describe(self) -> str:
        return (
            f"node {self.index} ({self.node.address}, clock {self.clock_offset_ms:+d} ms, "
            f"sweeps every {self.recycle_every_s or 'never'} s)"
        )


@dataclass
class World:
    cluster: bool
    nodes: list[NodeSlot] = field(default_factory=list)
    server: EmbeddedRedis | None = None
    redis_cluster: EmbeddedCluster | None = None

    @classmethod
    def start(cls, rng: random.Random, cluster: bool, node_count: int = 3) -> World:
        world = cls(cluster)
        try:
            if cluster:
                world.redis_cluster = EmbeddedCluster(masters=3).start()
                target = ("", "--redis-cluster", world.redis_cluster.addresses)
            else:
                world.server = EmbeddedRedis().start()
                target = (world.server.url,)
            offsets = list(CLOCK_OFFSETS)
            rng.shuffle(offsets)
            offsets = [300, -1, *[o for o in offsets if o not in (300, -1)]]  # always both edges
            periods = list(SWEEP_PERIODS)
            rng.shuffle(periods)
            for i in range(node_count):
                offset, period = offsets[i % len(offsets)], periods[i % len(periods)]
                node = LocalNode(
                    *target,
                    "--recycle-every-s",
                    str(period),
                    env={"CLAIMCORE_TEST_CLOCK_OFFSET_MS": str(offset)},
                )
                world.nodes.append(NodeSlot(i, node, offset, period))
            for slot in world.nodes:
                slot.node.start()
        except BaseException:
            world.stop()
            raise
        return world

    async def connect(self) -> None:
        for slot in self.nodes:
            slot.connect()

    # ------------------------------------------------------------ Redis, as the checker reads it

    def redis_client(self) -> Any:
        """A sync client of the whole keyspace (plain, or cluster-aware)."""
        if self.redis_cluster is not None:
            first = self.redis_cluster.nodes[0]
            return redis.RedisCluster(
                host="127.0.0.1", port=first.port, decode_responses=True, socket_timeout=10
            )
        assert self.server is not None
        return redis.Redis(port=self.server.port, decode_responses=True, socket_timeout=10)

    def claimable(self, campaign_id: str) -> int:
        """Stock on the campaign's shards, with recycled stock whose return delay is over by Redis's
        clock: what a claim could be granted now (a light read of each shard's state)."""
        for _ in range(4):  # the run's own CLIENT KILLs cut this reader's connections too
            try:
                return self._claimable(campaign_id)
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                time.sleep(0.05)
        return self._claimable(campaign_id)

    def _claimable(self, campaign_id: str) -> int:
        client = self.redis_client()
        try:
            meta = client.hmget(campaign_key(campaign_id), "slots", "shards")
            slots = int(meta[0] or meta[1] or 0)
            seconds, micros = client.time()
            redis_now = int(seconds) * 1000 + int(micros) // 1000
            total = 0
            for s in range(slots):
                stock, returning, due, newer, newer_due = client.hmget(
                    shard_keys(campaign_id, s).state, "stock", *RETURNING)
                # recycled stock waits in two parts, each with its own due time (lua/_returning.lua)
                older = int(returning or 0) - int(newer or 0)
                total += int(stock or 0) + (older if int(due or 0) <= redis_now else 0) + (
                    int(newer or 0) if int(newer_due or 0) <= redis_now else 0)
            return total
        finally:
            client.close()

    def redis_ports(self) -> list[int]:
        if self.redis_cluster is not None:
            return [n.port for n in self.redis_cluster.live()]
        assert self.server is not None
        return [self.server.port]

    def drop_connections(self) -> int:
        """CLIENT KILL TYPE normal on every Redis: the nodes' connections break mid-call and their
        clients resend (redis-py's one retry, cluster_calls' resend). Returns connections killed."""
        killed = 0
        for port in self.redis_ports():
            client = redis.Redis(port=port, socket_timeout=5)
            try:
                killed += int(client.execute_command("CLIENT", "KILL", "TYPE", "normal"))
            except redis.RedisError:
                pass
            finally:
                client.close()
        return killed

    # ------------------------------------------------------------ nodes

    def kill(self, index: int) -> None:
        """kill -9: no grace, calls in flight are cut."""
        slot = self.nodes[index]
        slot.node.stop(signal.SIGKILL)
        slot.kills += 1

    def restart(self, index: int) -> None:
        slot = self.nodes[index]
        if not slot.node.alive():
            slot.node.start()

    def alive(self, index: int) -> bool:
        return self.nodes[index].node.alive()

    async def close_channels(self) -> None:
        for slot in self.nodes:
            if slot.channel is not None:
                with contextlib.suppress(Exception):
                    await slot.channel.close()

    def stop(self) -> None:
        for slot in self.nodes:
            with contextlib.suppress(Exception):
                slot.node.stop()
        if self.server is not None:
            self.server.cleanup()
        if self.redis_cluster is not None:
            self.redis_cluster.cleanup()
