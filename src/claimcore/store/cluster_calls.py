"""Script calls on a Redis Cluster: one pipelined write per master, masters in parallel.

redis-py refuses scripts in cluster pipelines, so this module does the routing
itself. Each call's slot comes from its first key (all keys of a call share one
slot); redis-py's slot map says which master owns it. Every master gets its
calls as one pipelined write on one connection (SCRIPT LOAD first if that node
lacks the script, ASKING before a call redirected there, WAIT last if replica
acknowledgements are on), and all masters are written to at once. One flush
therefore costs one round trip per master instead of one per call.

Each reply is judged on its own, and a call is sent again (the others keep
their replies) when its reply says:

- MOVED: the slot has a new owner (reshard or failover). The slot map is
  patched from the error and the call goes to the new owner.
- ASK: the slot is migrating and the keys are already on the target. The call
  is sent to the named node, preceded by ASKING on the same connection.
- TRYAGAIN: the keys are split between source and target mid-migration. Sent
  again after a short sleep, a bounded number of times; then the error is
  returned.
- NOSCRIPT: that node's script cache is empty (restart, promoted replica,
  SCRIPT FLUSH). The next write to it starts with SCRIPT LOAD.
- CLUSTERDOWN, or a broken connection to a node (it died, or failed over):
  the slot map is read again, and after a short sleep the calls are sent
  again, a bounded number of times; then the error is returned in their place.

Sending a call again is always safe for claimcore's scripts: claim.lua is
idempotent on (user, request_id), and the others are idempotent by their ids.

Replica acknowledgements (`require_replica_acks`): `WAIT n timeout` ends each
master's pipeline. If fewer than n replicas acknowledged, the writes of that
pipeline could still be lost if the master failed over now, so each of its
calls that succeeded is answered ReplicaAckTimeout instead: outcome unknown,
the grant stays on the master, and a retry with the same request_id replays
it (and waits again). On Redis 7.0.15 a WAIT after a read-only script (a
replay) waits for the master's current offset, so a replay is covered too
(tests/store/test_cluster_calls.py checks this).

Counters of every redirection and retry are in STATS; a node logs them (at
WARNING, at most once a second) whenever they change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class Script(Protocol):
    """What a call here needs of a script (scripts.LuaScript is one): its SHA and its source."""

    sha: str
    source: str


log = logging.getLogger(__name__)

ScriptCall = tuple[Sequence[str], Sequence[Any]]  # (keys, args), all keys in one slot

MAX_ROUNDS = 40           # rounds of re-sends per eval_on_cluster; each kind below is bounded too
MAX_TRYAGAIN = 30         # TRYAGAIN re-sends of one call ...
TRYAGAIN_SLEEP_S = 0.02   # ... this far apart: a slot's few keys migrate in milliseconds
MAX_NOSCRIPT = 2          # NOSCRIPT re-sends of one call (a second failover may empty a cache again)
MAX_NODE_FAILURES = 3     # broken connections / CLUSTERDOWN per call, then its error is returned
NODE_FAILURE_SLEEPS_S = (0.05, 0.15, 0.3)  # before each re-send after a node failure

#: Counters since the node started: calls, round_trips, moved, ask, tryagain, noscript,
#: node_failures (connection errors and CLUSTERDOWN), refreshes, ack_shortfalls.
STATS: Counter[str] = Counter()

_replica_acks: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
_log_pending = False


class ReplicaAckTimeout(RedisConnectionError):
    """Fewer replicas than required acknowledged the write in time: a failover now could lose it.

    The write stays applied on the master; the caller must treat the outcome as
    unknown and retry with the same request_id (a ConnectionError, so it maps to
    UNAVAILABLE wherever a broken connection does).
    """


def require_replica_acks(client: Any, replicas: int, timeout_ms: int) -> None:
    """From now on, every eval_on_cluster on `client` ends each master's pipeline with WAIT."""
    if replicas < 0 or timeout_ms < 0:
        raise ValueError("replica acks and their timeout must be >= 0")
    if replicas:
        _replica_acks[client] = (replicas, timeout_ms)
    else:
        _replica_acks.pop(client, None)


def pipelining_enabled() -> bool:
    """CLAIMCORE_CLUSTER_PIPELINING=0 selects one EVALSHA per call (kept to measure against)."""
    return os.environ.get("CLAIMCORE_CLUSTER_PIPELINING", "1") != "0"


async def eval_on_cluster(
    client: RedisCluster, script: Script, calls: list[ScriptCall], *,
    replica_acks: int | None = None, replica_timeout_ms: int | None = None,
) -> list[Any]:
    """One reply per call, in order; a call that failed has its exception in its place.

    replica_acks/replica_timeout_ms default to what require_replica_acks set for this client.
    """
    if not calls:
        return []
    if replica_acks is None:
        replica_acks, default_timeout = _replica_acks.get(client, (0, 0))
        replica_timeout_ms = default_timeout if replica_timeout_ms is None else replica_timeout_ms
    STATS["calls"] += len(calls)
    if not pipelining_enabled() and not replica_acks:
        STATS["round_trips"] += len(calls)
        return await asyncio.gather(
            *(client.evalsha(script.sha, len(keys), *keys, *args) for keys, args in calls),
            return_exceptions=True,
        )
    return await _Flush(client, script, calls, replica_acks, replica_timeout_ms or 0).run()


class _Flush:
    """One eval_on_cluster: rounds of per-node pipelines until every call has its final reply."""

    def __init__(self, client: RedisCluster, script: Script, calls: list[ScriptCall],
                 acks: int, timeout_ms: int) -> None:
        self.client = client
        self.script = script
        self.calls = calls
        self.acks = acks
        self.timeout_ms = timeout_ms
        self.replies: list[Any] = [None] * len(calls)
        self.slots = [client.keyslot(keys[0]) for keys, _ in calls]
        self.ask: dict[int, tuple[str, int]] = {}       # call -> node named by ASK
        self.tryagain = [0] * len(calls)
        self.failures = [0] * len(calls)
        self.noscript = [0] * len(calls)
        self.needs_load: set[str] = set()              # node names that answered NOSCRIPT

    async def run(self) -> list[Any]:
        try:
            await self.client.initialize()  # no-op unless the client was closed or never used
        except (RedisClusterException, RedisConnectionError) as exc:
            raise RedisConnectionError(f"no Redis Cluster node answers: {exc}") from exc
        pending = list(range(len(self.calls)))
        for _ in range(MAX_ROUNDS):
            groups, unroutable = self._route(pending)
            results = await asyncio.gather(*(
                self._send(node, entries) for node, entries in groups.values()
            ))
            retry: list[int] = []
            sleep = 0.0
            refresh: str | None = None
            for index, exc in unroutable:
                sleep = max(sleep, self._node_failed(index, exc, retry))
                refresh = refresh or ""
            for (node, entries), (replies, error) in zip(groups.values(), results, strict=True):
                for (index, _), reply in zip(entries, replies, strict=False):
                    sleep = max(sleep, await self._judge(index, node, reply, retry))
                for index, _ in entries[len(replies):]:  # not answered: the node failed
                    sleep = max(sleep, self._node_failed(index, error, retry))
                    refresh = node.name
            if refresh is not None:
                await self._refresh(refresh or None)
            if not retry:
                return self.replies
            pending = retry
            if sleep:
                await asyncio.sleep(sleep)
        return self.replies  # rounds used up: the calls left keep their last error

    def _route(self, pending: list[int]
               ) -> tuple[dict[str, tuple[ClusterNode, list[tuple[int, bool]]]], list[tuple[int, Exception]]]:
        """Group calls by the node to send them to: (node, [(call, asking)]) by node name."""
        manager = self.client.nodes_manager
        groups: dict[str, tuple[ClusterNode, list[tuple[int, bool]]]] = {}
        unroutable: list[tuple[int, Exception]] = []
        for index in pending:
            target = self.ask.pop(index, None)
            try:
                if target is not None:
                    node = manager.get_node(host=target[0], port=target[1]) or self._add_node(*target)
                else:
                    node = manager.get_node_from_slot(self.slots[index])
            except RedisClusterException as exc:  # slot not covered: the map is being rebuilt
                unroutable.append((index, exc))
                continue
            group = groups.get(node.name)
            if group is None:
                group = groups[node.name] = (node, [])
            group[1].append((index, target is not None))
        return groups, unroutable

    def _add_node(self, host: str, port: int) -> ClusterNode:
        """A node named by ASK that the slot map does not know yet (a new master)."""
        manager = self.client.nodes_manager
        node = ClusterNode(host, port, "primary", **manager.connection_kwargs)
        manager.set_nodes(manager.nodes_cache, {node.name: node})
        return manager.nodes_cache[node.name]

    async def _send(self, node: ClusterNode, entries: list[tuple[int, bool]]
                    ) -> tuple[list[Any], Exception | None]:
        """One pipelined write to `node`; the replies read (each a value or its error), and the
        error that stopped the reading early, if any. With WAIT, replies are only returned
        once WAIT has answered, all of them or none."""
        load = node.name in self.needs_load
        parts: list[bytes] = []
        if load:
            _command(parts, ("SCRIPT", "LOAD", self.script.source))
        for index, asking in entries:
            if asking:
                _command(parts, ("ASKING",))
            keys, args = self.calls[index]
            _command(parts, ("EVALSHA", self.script.sha, len(keys), *keys, *args))
        if self.acks:
            _command(parts, ("WAIT", self.acks, self.timeout_ms))
        STATS["round_trips"] += 1
        replies: list[Any] = []
        try:
            conn = node.acquire_connection()
        except RedisConnectionError as exc:
            return replies, exc
        try:
            await node.disconnect_if_needed(conn)
            await conn.send_packed_command(b"".join(parts), check_health=False)
            if load:
                try:
                    await conn.read_response()
                    self.needs_load.discard(node.name)
                except ResponseError:
                    pass  # e.g. a LOADING replica; the EVALSHAs will say NOSCRIPT again
            for _, asking in entries:
                if asking:
                    try:
                        await conn.read_response()
                    except ResponseError:
                        pass  # the call that follows will carry the error that matters
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            if self.acks:
                timeout = (conn.socket_timeout or 0) + self.timeout_ms / 1000 or None
                try:
                    acked = int(await conn.read_response(timeout=timeout))
                except ResponseError:  # e.g. the node is a replica now: its calls got MOVED
                    acked = -1
                if acked < self.acks:
                    STATS["ack_shortfalls"] += 1
                    _schedule_log()
                    shortfall = ReplicaAckTimeout(
                        f"{acked} of {self.acks} replicas of {node.name} acknowledged within "
                        f"{self.timeout_ms} ms")
                    replies = [r if isinstance(r, Exception) else shortfall for r in replies]
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await conn.disconnect()  # replies may be left unread: never reuse this connection
            return ([] if self.acks else replies), exc
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            node.release(conn)
        return replies, None

    async def _judge(self, index: int, node: ClusterNode, reply: Any, retry: list[int]) -> float:
        """Keep a final reply; queue the call again for a redirection. Returns the sleep wanted."""
        self.replies[index] = reply
        if not isinstance(reply, ResponseError):
            return 0.0
        _schedule_log()
        if isinstance(reply, MovedError):  # also a subclass of AskError: test it first
            STATS["moved"] += 1
            await self.client.nodes_manager.move_slot(reply)
            retry.append(index)
            return 0.0
        if isinstance(reply, AskError):
            STATS["ask"] += 1
            self.ask[index] = (reply.host, reply.port)
            retry.append(index)
            return 0.0
        if isinstance(reply, TryAgainError):
            STATS["tryagain"] += 1
            self.tryagain[index] += 1
            if self.tryagain[index] <= MAX_TRYAGAIN:
                retry.append(index)
                return TRYAGAIN_SLEEP_S
            return 0.0
        if isinstance(reply, NoScriptError):
            STATS["noscript"] += 1
            self.needs_load.add(node.name)
            self.noscript[index] += 1
            if self.noscript[index] <= MAX_NOSCRIPT:
                retry.append(index)
            return 0.0
        if isinstance(reply, ClusterDownError):
            return self._node_failed(index, reply, retry)
        return 0.0

    def _node_failed(self, index: int, exc: Exception | None, retry: list[int]) -> float:
        STATS["node_failures"] += 1
        _schedule_log()
        if exc is None:
            exc = RedisConnectionError("connection lost before the reply")
        if not isinstance(exc, (RedisConnectionError, RedisTimeoutError, ResponseError)):
            exc = RedisConnectionError(str(exc))  # e.g. slot not covered while the map is rebuilt
        self.replies[index] = exc
        self.failures[index] += 1
        if self.failures[index] > MAX_NODE_FAILURES:
            return 0.0
        retry.append(index)
        return NODE_FAILURE_SLEEPS_S[min(self.failures[index], len(NODE_FAILURE_SLEEPS_S)) - 1]

    async def _refresh(self, failed_node: str | None) -> None:
        """Read the slot map again (a node failed, or failed over)."""
        STATS["refreshes"] += 1
        try:
            await self.client.nodes_manager.initialize(last_failed_node_name=failed_node)
        except Exception as exc:  # noqa: BLE001 - no node answered now: the next round tries again
            log.warning("cluster slot map refresh failed: %s", exc)


def _command(parts: list[bytes], args: Sequence[Any]) -> None:
    """Append one command in RESP, as redis-py would pack it (str, int, float or bytes args)."""
    parts.append(b"*%d\r\n" % len(args))
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            data = str(int(arg)).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))


def _schedule_log() -> None:
    global _log_pending
    if _log_pending:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    _log_pending = True
    loop.call_later(1.0, _log_stats)


def _log_stats() -> None:
    global _log_pending
    _log_pending = False
    log.warning("cluster retries so far: %s", format_stats())


def format_stats() -> str:
    """The STATS counters as one line of key=value (what the tests parse)."""
    names = ("calls", "round_trips", "moved", "ask", "tryagain", "noscript", "node_failures",
             "refreshes", "ack_shortfalls")
    return " ".join(f"{name}={STATS[name]}" for name in names)
