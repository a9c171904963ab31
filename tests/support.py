"""Helpers several test folders share: bursts through real nodes, the ledger's export, scripts
against a real redis-server, and API keys made by `claimcore keygen`."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import redis.asyncio

from claimcore._fast import shard_of
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.security.auth import digest_line
from claimcore.store.inventory import RedisInventory
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name


async def burst(addresses: list[str], cid: str, requests: list[tuple[str, str]],
                clients: int = 200) -> list[tuple[str, str, pb.ClaimResponse]]:
    """`clients` concurrent callers over the given nodes; returns (user, rid, reply) per request."""
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [pb_grpc.ClaimServiceStub(ch) for ch in channels]
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    results: list[tuple[str, str, pb.ClaimResponse]] = []

    async def client(n: int) -> None:
        stub = stubs[n % len(stubs)]
        while not queue.empty():
            user, rid = queue.get_nowait()
            reply = await stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid),
                                     timeout=30)
            results.append((user, rid, reply))

    try:
        await asyncio.gather(*(client(n) for n in range(clients)))
    finally:
        for ch in channels:
            await ch.close()
    return results


def check_burst(results: list[tuple[str, str, pb.ClaimResponse]], inventory: int,
                distinct_users: int) -> dict[str, str]:
    """The invariants over every reply: returns user -> voucher id."""
    holder: dict[str, str] = {}
    owner: dict[str, str] = {}
    for user, _, reply in results:
        if reply.outcome in (pb.OUTCOME_GRANTED, pb.OUTCOME_ALREADY_CLAIMED):
            vid = reply.voucher.voucher_id
            assert holder.setdefault(user, vid) == vid, f"{user} got two vouchers"
            assert owner.setdefault(vid, user) == user, f"voucher {vid} given to two users"
        else:
            assert reply.outcome == pb.OUTCOME_SOLD_OUT, short_name(pb.Outcome, reply.outcome)
    assert len(holder) == min(inventory, distinct_users)
    return holder


def export_all(admin, cid: str, cursor: str = "", limit: int = 1000) -> tuple[list[pb.Event], str]:
    events: list[pb.Event] = []
    while True:
        reply = admin.ExportEvents(pb.ExportEventsRequest(campaign_id=cid, cursor=cursor, limit=limit),
                                   timeout=10)
        events.extend(reply.events)
        cursor = reply.next_cursor
        if not reply.more:
            return events, cursor


def run(redis_server: EmbeddedRedis,
        fn: Callable[[RedisInventory, redis.asyncio.Redis], Awaitable[Any]]) -> Any:
    """Run fn(inventory, client) in a fresh event loop with its own async client."""

    async def main() -> Any:
        client = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
        try:
            return await fn(RedisInventory(client), client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def users_on(shard: int, shards: int, n: int, prefix: str = "u") -> list[str]:
    """n user ids that shard_of routes to `shard` (as the node would)."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        user = f"{prefix}{i}"
        i += 1
        if shard_of(user, shards) == shard:
            out.append(user)
    return out


def keygen(*who: str) -> tuple[str, str]:
    """(key, its digest line) as `claimcore keygen` prints them."""
    out = subprocess.run([sys.executable, "-m", "claimcore", "keygen", *who], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    key = out[1]
    line = out[3]
    assert line == f'keys = ["{digest_line(key)}"]'
    return key, line


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def metrics_port(node: Any, timeout: float = 20.0) -> int:
    """The port a node started with `--metrics-port 0` took, read from its start line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"claimcore: metrics on http://[\d.]+:(\d+)/metrics", node.log_tail())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no metrics port in the node's log:\n{node.log_tail()}")


# One error line of the claimcore CLI: "claimcore <command>: <STATUS>: <what>".
CLI_ERROR_LINE = re.compile(r"claimcore [a-z ]+: [A-Z_]+: \S.*\n")


def run_cli(env: dict[str, str], *args: str, **more: str) -> subprocess.CompletedProcess[str]:
    """`python -m claimcore ARGS` in `env` (plus `more`), its output captured as text."""
    return subprocess.run([sys.executable, "-m", "claimcore", *args], capture_output=True, text=True,
                          env={**env, **more}, timeout=60)


def outcome_of(fn: Callable[..., object], *args: object) -> object:
    """fn(*args), or the type of what it raised: how twins are compared, errors included."""
    try:
        return fn(*args)
    except Exception as exc:  # compared by type
        return type(exc)
