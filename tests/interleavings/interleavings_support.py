"""Shared set-up of tests/interleavings/test_interleavings.py (issue 12's regression tests).

Everything here is real: redis-server, nodes (LocalNode), gRPC stubs. Where a test must
stand for a node dying, stalling or resending at one given step, it runs claimcore's own
library code in the test process on a `HookedRedis`: a real redis.asyncio client that lets
the test act just before a script call (pause it, or fail it as a dropped connection) and
keeps every call it sent (to send one again, as a resend would). Nothing imitates Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from claimcore._fast import shard_of
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.harness.local_node import LocalNode
from claimcore.lifecycle.categories import CategoryGate
from claimcore.lifecycle.redemption import Redemptions
from claimcore.node.batcher import ClaimBatcher
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name

# Every script by its SHA, so hooks can name what is being sent (read at call time: the
# scripts change while issue 12 is fixed).
SCRIPT_NAMES = {s.sha: s.name for s in vars(scripts).values() if isinstance(s, scripts.LuaScript)}


@dataclass
class ScriptCall:
    name: str
    sha: str
    keys: list[str]
    args: list[Any]
    reply: Any = None


Hook = Callable[[ScriptCall], Awaitable[None]]


class HookedRedis(redis.asyncio.Redis):
    """A real Redis client; `before` runs before each script call (it may wait or raise),
    and every call that got a reply is kept in `calls`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.before: Hook | None = None
        self.calls: list[ScriptCall] = []

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:  # type: ignore[override]
        call = ScriptCall(SCRIPT_NAMES.get(sha, sha), sha, list(keys_and_args[:numkeys]),
                          list(keys_and_args[numkeys:]))
        if self.before is not None:
            await self.before(call)
        call.reply = await super().evalsha(sha, numkeys, *keys_and_args)
        self.calls.append(call)
        return call.reply


class Gate:
    """Holds one step of in-process code until the test lets it go."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def passing(self) -> None:
        self.reached.set()
        await self.go.wait()

    async def wait_reached(self, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self.reached.wait(), timeout)


def node_died(step: str) -> RedisConnectionError:
    return RedisConnectionError(f"injected: the node dies here ({step})")


def run_async(redis_server: EmbeddedRedis, fn: Callable[[HookedRedis], Awaitable[Any]]) -> Any:
    """Run fn(client) in a fresh event loop with its own hooked client."""

    async def main() -> Any:
        client = HookedRedis(port=redis_server.port, decode_responses=True)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def is_stack_registry(call: ScriptCall) -> bool:
    """A call on the stacked orders' decisions (cc:{stack:b}:orders)."""
    return any(key.startswith("cc:{stack:") for key in call.keys)


async def dying_stacked_order(client: HookedRedis, dies_at: Callable[[ScriptCall, list[ScriptCall]], bool],
                              step: str, parts: list[tuple[str, list[str]]], order: str,
                              sns: tuple[str, ...] = ()) -> None:
    """User u's stacked order over `parts` (campaign, vouchers), coordinated by this process's
    Redemptions on a node that dies at the first script call `dies_at(call, calls so far)` names:
    that call and every later one fail as a dropped connection, and the order raises."""
    dead = False

    async def before(call: ScriptCall) -> None:
        nonlocal dead
        dead = dead or dies_at(call, client.calls)
        if dead:
            raise node_died(step)

    client.before = before
    inventory = RedisInventory(client)
    cache = CampaignCache(inventory)
    configs = [(await cache.require(cid), vouchers) for cid, vouchers in parts]
    try:
        await Redemptions(inventory, cache).redeem_stacked(configs, "u", "m1", order, 5000, list(sns), "")
    except RedisConnectionError:
        return
    raise AssertionError(f"the coordinator was to die {step}, and did not")


class StalledInventory(RedisInventory):
    """The store, with the first claim flush or the first borrow held at a gate (a node
    stalling at that step)."""

    claim_gate: Gate | None = None
    borrow_gate: Gate | None = None

    async def claim_many(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        gate, self.claim_gate = self.claim_gate, None
        if gate is not None:
            await gate.passing()
        return await super().claim_many(*args, **kwargs)

    async def borrow(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        gate, self.borrow_gate = self.borrow_gate, None
        if gate is not None:
            await gate.passing()
        return await super().borrow(*args, **kwargs)


def in_process_node(inventory: RedisInventory) -> tuple[CampaignCache, ClaimBatcher]:
    """A node's claim path in this process: its campaign cache and its batcher (with the
    category gate), not sold out anywhere."""
    cache = CampaignCache(inventory)
    batcher = ClaimBatcher(inventory, lambda _cid: False, lambda _config: None, cache.reload,
                           gate=CategoryGate(inventory))
    return cache, batcher


# ------------------------------------------------------------------ nodes and stubs


def clock_node(redis_server: EmbeddedRedis, offset_ms: int) -> Iterator[LocalNode]:
    """A node whose clock is off by offset_ms; it never sweeps by itself."""
    node = LocalNode(redis_server.url, "--recycle-every-s", "0",
                     env={"CLAIMCORE_TEST_CLOCK_OFFSET_MS": str(offset_ms)}).start()
    yield node
    node.stop()


@dataclass
class Stubs:
    claims: pb_grpc.ClaimServiceStub
    admin: pb_grpc.AdminServiceStub
    redeem: pb_grpc.RedeemServiceStub


class StubsByNode:
    """Stubs for any node, over one channel per node (close() at the end)."""

    def __init__(self) -> None:
        self.channels: dict[str, grpc.Channel] = {}

    def __call__(self, node: LocalNode) -> Stubs:
        if node.address not in self.channels:
            self.channels[node.address] = grpc.insecure_channel(node.address)
        ch = self.channels[node.address]
        return Stubs(pb_grpc.ClaimServiceStub(ch), pb_grpc.AdminServiceStub(ch),
                     pb_grpc.RedeemServiceStub(ch))

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()


# ------------------------------------------------------------------ campaigns and calls


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create(admin: pb_grpc.AdminServiceStub, merchant: str = "m1", **fields: Any) -> str:
    fields.setdefault("campaign_id", new_id("il"))
    reply = admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(**fields)),
                                 timeout=10).campaign
    cid = reply.campaign.campaign_id
    if merchant:
        admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
            campaign_id=cid, merchant_id=merchant, category=fields.get("category", ""))), timeout=10)
    return cid


def claim(claims: pb_grpc.ClaimServiceStub, cid: str, user: str, rid: str = "r") -> pb.ClaimResponse:
    return claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid), timeout=15)


def granted(claims: pb_grpc.ClaimServiceStub, cid: str, user: str, rid: str = "r") -> str:
    reply = claim(claims, cid, user, rid)
    assert reply.outcome == pb.OUTCOME_GRANTED, (user, short_name(pb.Outcome, reply.outcome), reply.detail)
    return reply.voucher.voucher_id


def redeem(stub: pb_grpc.RedeemServiceStub, cid: str, user: str, vouchers: list[str], order: str,
           sns: tuple[str, ...] = (), stacked: tuple[tuple[str, list[str]], ...] = (),
           amount: int = 5000) -> pb.RedeemResponse:
    return stub.Redeem(pb.RedeemRequest(
        campaign_id=cid, user_id=user, voucher_ids=vouchers, merchant_id="m1", order_id=order,
        order_amount_cents=amount, sn_codes=list(sns),
        stacked=[pb.StackedVouchers(campaign_id=c, voucher_ids=v) for c, v in stacked]), timeout=15)


def outcome(reply: pb.RedeemResponse) -> str:
    return short_name(pb.RedeemOutcome, reply.outcome)


def reverse(stub: pb_grpc.RedeemServiceStub, cid: str, user: str, order: str) -> pb.ReverseResponse:
    return stub.Reverse(pb.ReverseRequest(campaign_id=cid, user_id=user, order_id=order), timeout=15)


def recycle(admin: pb_grpc.AdminServiceStub, cid: str) -> int:
    return admin.RecycleExpired(pb.RecycleExpiredRequest(campaign_id=cid), timeout=30).recycled


def campaign_info(admin: pb_grpc.AdminServiceStub, cid: str) -> pb.CampaignInfo:
    return admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign


def events(admin: pb_grpc.AdminServiceStub, cid: str) -> list[pb.Event]:
    """The campaign's whole ledger, every shard."""
    out: list[pb.Event] = []
    cursor = ""
    while True:
        reply = admin.ExportEvents(pb.ExportEventsRequest(campaign_id=cid, cursor=cursor, limit=1000),
                                   timeout=15)
        out.extend(reply.events)
        cursor = reply.next_cursor
        if not reply.more:
            return out


def expire_counts(admin: pb_grpc.AdminServiceStub, cid: str) -> dict[str, int]:
    """How many times each voucher's stock came back as expired, by the ledger."""
    counts: dict[str, int] = {}
    for e in events(admin, cid):
        if e.kind == "expire":
            counts[e.voucher_id] = counts.get(e.voucher_id, 0) + 1
    return counts


def mover(prefix: str, before: int, after: int, want: Callable[[int, int], bool] | None = None) -> str:
    """A user whose shard changes from the `before`-shard map to the `after`-shard one
    (and, if given, with want(old_shard, new_shard))."""
    i = 0
    while True:
        user = f"{prefix}{i}"
        i += 1
        old, new = shard_of(user, before), shard_of(user, after)
        if old != new and (want is None or want(old, new)):
            return user


def wait_past(ms: float) -> None:
    """Sleep until `ms` of real time have passed (validity periods run on real time)."""
    time.sleep(ms / 1000)


async def load_config(inventory: RedisInventory, cid: str) -> Any:
    status = await inventory.load_campaign(cid)
    assert status is not None, cid
    return status.config
