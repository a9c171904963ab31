"""The operations: each makes real gRPC calls through the nodes, records them, and learns from them.

A call whose outcome is unknown (UNAVAILABLE, DEADLINE_EXCEEDED, a node killed under it) is
sent again with the same ids, to the next node, as a careful client would: that is where
replays, resent redemptions and settlements of half-done work come from.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import grpc

from claimcore.client import ClaimClient, ClaimOutcomeUnknown
from claimcore.client.watch import LOCAL_DETAIL, MARGIN_MS
from claimcore.simulation.calls import UNKNOWN, Call, CallLog
from claimcore.simulation.campaigns import CHANNELS, MERCHANTS, Plan
from claimcore.simulation.checks import Violation
from claimcore.simulation.model import Model, Order
from claimcore.simulation.world import World
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import short_name

DEADLINE_S = 5.0
RESHARD_DEADLINE_S = 30.0
SN_POOL = 20  # SN codes an order draws from at a time: few, so that orders meet on the same codes
SN_PER_S = 0.5  # new SN codes per second
MAX_RESENDS = 4


@dataclass
class Ctx:
    world: World
    log: CallLog
    model: Model
    plans: dict[str, Plan]
    client: ClaimClient
    started: float
    users_per_s: float

    found: list[Violation] = field(default_factory=list)  # violations seen while running (probes)
    # The long-lived app backend: ClaimClient(watch=True), batching (op_watched_claim), and the
    # claims it sent per campaign (its resends draw from these: never another client's request ids).
    watching: ClaimClient | None = None
    watched_sent: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    @property
    def nodes(self) -> int:
        return len(self.world.nodes)

    def node_by_clock(self, lowest: bool) -> int:
        slots = sorted(self.world.nodes, key=lambda s: s.clock_offset_ms)
        return (slots[0] if lowest else slots[-1]).index

    def user(self, rng: random.Random) -> str:
        """A user from a window that slides over time: new users keep coming, some come back."""
        frontier = int((time.monotonic() - self.started) * self.users_per_s) + 40
        return f"u{rng.randrange(max(0, frontier - 250), frontier)}"

    def channel_of(self, user: str) -> str:
        return CHANNELS[zlib.crc32(user.encode()) % len(CHANNELS)]

    def campaign(self, rng: random.Random, group: str | None = None) -> Plan:
        return rng.choice([p for p in self.plans.values() if group is None or p.group == group])

    def usable(self, rng: random.Random, campaign: str, user: str) -> list[str]:
        """Mostly vouchers still valid; now and then any (an expired one must be refused)."""
        valid_for = self.plans[campaign].campaign.valid_for_ms if rng.random() < 0.85 else 0
        return self.model.usable(campaign, user, valid_for)

    def sns(self, rng: random.Random) -> list[str]:
        """SN codes from a small window that slides over time: orders meet on the same codes (and on
        codes left held by a killed node), while new, unused codes keep coming."""
        frontier = int((time.monotonic() - self.started) * SN_PER_S) + SN_POOL
        return [
            f"SN{n}" for n in rng.sample(range(frontier - SN_POOL, frontier), rng.choice((0, 0, 1, 1, 2)))
        ]


def _code(err: grpc.aio.AioRpcError) -> str:
    return err.code().name


# ------------------------------------------------------------------ single calls


async def claim(
    ctx: Ctx,
    op: str,
    node: int,
    campaign: str,
    user: str,
    request_id: str,
    channel: str,
    timeout: float = DEADLINE_S,
) -> Call:
    call = ctx.log.begin(op, "Claim", node, campaign, user=user, request_id=request_id, channel=channel)
    try:
        reply = await ctx.world.nodes[node].claims.Claim(
            pb.ClaimRequest(campaign_id=campaign, user_id=user, request_id=request_id, channel_id=channel),
            timeout=timeout,
        )
    except grpc.aio.AioRpcError as err:
        return ctx.log.failed(call, _code(err))
    return _claim_answer(ctx, call, reply)


def _claim_answer(ctx: Ctx, call: Call, reply: pb.ClaimResponse) -> Call:
    outcome = short_name(pb.Outcome, reply.outcome)
    v = reply.voucher
    why = {"reason": short_name(pb.NotEligibleReason, reply.not_eligible_reason)} if (
        outcome == "NOT_ELIGIBLE") else {}
    ctx.log.end(
        call,
        outcome,
        voucher=v.voucher_id,
        voucher_channel=v.channel_id,
        voucher_request=v.request_id,
        granted_at_ms=v.granted_at_ms,
        **why,
    )
    if outcome in ("GRANTED", "ALREADY_CLAIMED") and v.voucher_id and v.user_id == call.user:
        ctx.model.learn_grant(
            call.campaign, call.user, v.request_id, v.voucher_id, v.channel_id, v.granted_at_ms
        )
    if outcome == "GRANTED":
        ctx.model.requests.append((call.campaign, call.user, call.request_id, call.channel))
    return call


async def claim_until_known(
    ctx: Ctx, op: str, rng: random.Random, node: int, campaign: str, user: str, request_id: str, channel: str
) -> Call:
    """As a client does: an unknown outcome is sent again, same request id, to the next node."""
    call = await claim(ctx, op, node, campaign, user, request_id, channel)
    for attempt in range(MAX_RESENDS):
        if call.outcome != UNKNOWN:
            break
        await asyncio.sleep(rng.uniform(0.05, 0.3) * (attempt + 1))
        node = (node + 1) % ctx.nodes
        call = await claim(ctx, op, node, campaign, user, request_id, channel)
    return call


async def _unary(ctx: Ctx, call: Call, method: Any, request: Any, timeout: float = DEADLINE_S) -> Any:
    """Send one non-claim RPC for `call`; None if it failed (the call records why)."""
    try:
        return await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as err:
        ctx.log.failed(call, _code(err))
        return None


async def until_known(send: Any, rng: random.Random, node: int, nodes: int) -> Call:
    """send(node) -> Call, again on the next node while the outcome is unknown."""
    call = await send(node)
    for attempt in range(MAX_RESENDS):
        if call.outcome != UNKNOWN:
            break
        await asyncio.sleep(rng.uniform(0.1, 0.4) * (attempt + 1))
        node = (node + 1) % nodes
        call = await send(node)
    return call


async def redeem(ctx: Ctx, op: str, node: int, order: Order, timeout: float = DEADLINE_S) -> Call:
    (campaign, vouchers), *stacked = order.parts
    every = tuple(v for _, vs in order.parts for v in vs)
    call = ctx.log.begin(
        op,
        "Redeem",
        node,
        campaign,
        user=order.user,
        order_id=order.order_id,
        channel=order.channel,
        vouchers=every,
        sns=tuple(order.sns),
        parts=tuple((c, tuple(vs)) for c, vs in order.parts) if stacked else (),
    )
    plan = ctx.plans[campaign]
    request = pb.RedeemRequest(
        campaign_id=campaign,
        user_id=order.user,
        voucher_ids=vouchers,
        merchant_id=MERCHANTS[plan.campaign.category],
        order_id=order.order_id,
        order_amount_cents=order.amount,
        sn_codes=order.sns,
        channel_id=order.channel,
        stacked=[pb.StackedVouchers(campaign_id=c, voucher_ids=vs) for c, vs in stacked],
    )
    reply = await _unary(ctx, call, ctx.world.nodes[node].redeem.Redeem, request, timeout)
    if reply is None:
        return call
    outcome = short_name(pb.RedeemOutcome, reply.outcome)
    ctx.log.end(call, outcome, vouchers=list(reply.voucher_ids), subsidy=reply.subsidy_cents)
    if outcome == "REDEEMED":
        order.redeemed = True
        ctx.model.used.update(every)
    return call


async def reverse(ctx: Ctx, op: str, node: int, campaign: str, order: Order) -> Call:
    call = ctx.log.begin(op, "Reverse", node, campaign, user=order.user, order_id=order.order_id)
    reply = await _unary(
        ctx,
        call,
        ctx.world.nodes[node].redeem.Reverse,
        pb.ReverseRequest(campaign_id=campaign, user_id=order.user, order_id=order.order_id),
    )
    if reply is None:
        return call
    outcome = short_name(pb.ReverseOutcome, reply.outcome)
    ctx.log.end(
        call, outcome, returned=list(reply.returned_voucher_ids), expired=list(reply.expired_voucher_ids)
    )
    if outcome == "REVERSED":
        order.reversed = True
        ctx.model.used.difference_update(reply.returned_voucher_ids)
    return call


async def release(ctx: Ctx, op: str, node: int, campaign: str, user: str, voucher: str) -> Call:
    call = ctx.log.begin(op, "Release", node, campaign, user=user, vouchers=(voucher,))
    reply = await _unary(
        ctx,
        call,
        ctx.world.nodes[node].redeem.Release,
        pb.ReleaseRequest(campaign_id=campaign, user_id=user, voucher_id=voucher),
    )
    if reply is not None:
        ctx.log.end(call, "RELEASED" if reply.released else "NOT_RELEASED")
        if reply.released:
            ctx.model.used.add(voucher)
    return call


async def recycle(ctx: Ctx, op: str, node: int, campaign: str) -> Call:
    call = ctx.log.begin(op, "RecycleExpired", node, campaign)
    reply = await _unary(
        ctx, call, ctx.world.nodes[node].admin.RecycleExpired, pb.RecycleExpiredRequest(campaign_id=campaign)
    )
    if reply is not None:
        ctx.log.end(call, "RECYCLED", recycled=reply.recycled)
    return call


async def reshard(ctx: Ctx, op: str, node: int, campaign: str, shards: int) -> Call:
    call = ctx.log.begin(op, "Reshard", node, campaign, answer={"to": shards})
    reply = await _unary(
        ctx,
        call,
        ctx.world.nodes[node].admin.Reshard,
        pb.ReshardRequest(campaign_id=campaign, shards=shards),
        RESHARD_DEADLINE_S,
    )
    if reply is not None:
        ctx.log.end(
            call, "RESHARDED", moved_users=reply.moved_users, epoch=reply.shard_epoch, took_ms=reply.took_ms
        )
    return call


async def eligibility(
    ctx: Ctx, op: str, node: int, campaign: str, records: list[pb.EligibilityRecord]
) -> Call:
    users = ",".join(r.user_id for r in records)
    call = ctx.log.begin(
        op,
        "UpdateEligibility",
        node,
        campaign,
        answer={"users": users, "denied": any(r.denied for r in records)},
    )
    reply = await _unary(
        ctx,
        call,
        ctx.world.nodes[node].admin.UpdateEligibility,
        pb.UpdateEligibilityRequest(campaign_id=campaign, records=records),
    )
    if reply is not None:
        ctx.log.end(call, "UPDATED", updated=reply.updated)
    return call


# ------------------------------------------------------------------ the operations of the schedule


async def op_claim(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    user, plan = ctx.user(rng), ctx.campaign(rng)
    channel = ctx.channel_of(user)
    if rng.random() < 0.25:  # through the client library: round robin, its own safe retries
        rid = f"r{rng.getrandbits(40):x}"
        call = ctx.log.begin(
            "claim", "Claim(client)", -1, plan.campaign_id, user=user, request_id=rid, channel=channel
        )
        try:
            reply = await ctx.client.claim(plan.campaign_id, user, rid, channel)
        except ClaimOutcomeUnknown as err:
            ctx.log.failed(call, err.last.code().name)
            return
        except grpc.aio.AioRpcError as err:
            ctx.log.failed(call, _code(err))
            return
        _claim_answer(ctx, call, reply)
        return
    node, rid = rng.randrange(ctx.nodes), f"r{rng.getrandbits(40):x}"
    call = await claim_until_known(ctx, "claim", rng, node, plan.campaign_id, user, rid, channel)
    if call.outcome == "GRANTED" and rng.random() < 0.3:
        # Its reply lost on the way: the client asks another node at once. Where stock has just come
        # back, that node may still hold a sold-out snapshot.
        other = (call.node + rng.randint(1, ctx.nodes - 1)) % ctx.nodes
        await claim(ctx, "claim", other, plan.campaign_id, user, rid, channel)


async def watched_claim(ctx: Ctx, campaign: str, user: str, request_id: str, channel: str) -> Call:
    """One claim through the watching, auto-batching client. A local SOLD_OUT records what the
    client's watch held at that moment (claim() answers it without yielding, so the state read just
    after is the one it answered from): its phase, the trust left, and the wall time (checks.py
    holds it against the ledger)."""
    assert ctx.watching is not None and ctx.watching.watch is not None
    call = ctx.log.begin(
        "watched_claim", "Claim(watch)", -1, campaign, user=user, request_id=request_id, channel=channel
    )
    try:
        reply = await ctx.watching.claim(campaign, user, request_id, channel)
    except ClaimOutcomeUnknown as err:
        return ctx.log.failed(call, err.last.code().name if err.last is not None else "UNAVAILABLE")
    except grpc.aio.AioRpcError as err:
        return ctx.log.failed(call, _code(err))
    if reply.detail == LOCAL_DETAIL:
        now, got = time.monotonic(), ctx.watching.watch.state(campaign)
        trusted_until = 0.0
        if got is not None and got.state.phase == pb.CAMPAIGN_PHASE_SOLD_OUT:
            trusted_until = got.received_at + (got.state.sold_out_valid_for_ms - MARGIN_MS) / 1000
        call.answer.update(
            local=True,
            at_ms=int(time.time() * 1000),
            pushed_phase=pb.CampaignPhase.Name(got.state.phase) if got else "none",
            pushed_sequence=got.state.sequence if got else -1,
            trusted_left_ms=round((trusted_until - now) * 1000, 1),
        )
    else:
        ctx.watched_sent.setdefault(campaign, []).append((user, request_id, channel))
    return _claim_answer(ctx, call, reply)


async def op_watched_claim(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    """An app backend's burst: 2-8 users of one campaign claim at once through the long-lived
    ClaimClient(watch=True), so they leave together in one ClaimBatch (or are answered SOLD_OUT by
    the client while the pushed state says sold out). Now and then a user taps twice with one
    request id, and a request this client sent earlier is sent again: both must reach a node."""
    assert ctx.watching is not None and ctx.watching.watch is not None
    watch = ctx.watching.watch
    sold_out = [
        p
        for p in ctx.plans.values()
        if (got := watch.state(p.campaign_id)) is not None and got.state.phase == pb.CAMPAIGN_PHASE_SOLD_OUT
    ]
    # Half the bursts go where the pushed state says sold out: the local answers are what is checked.
    plan = rng.choice(sold_out) if sold_out and rng.random() < 0.5 else ctx.campaign(rng)
    claims = []
    for _ in range(rng.randint(2, 8)):
        user = ctx.user(rng)
        claims.append((user, f"w{rng.getrandbits(40):x}", ctx.channel_of(user)))
    if rng.random() < 0.3:
        claims.append(claims[0])  # a double tap: one request id, twice at once
    sent = ctx.watched_sent.get(plan.campaign_id)
    if sent and rng.random() < 0.4:
        claims.append(rng.choice(sent))  # a resend of a request this client sent before
    await asyncio.gather(*(watched_claim(ctx, plan.campaign_id, *c) for c in claims))


async def op_double_tap(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    user, plan, node = ctx.user(rng), ctx.campaign(rng), rng.randrange(ctx.nodes)
    channel = ctx.channel_of(user)
    await asyncio.gather(
        *(
            claim_until_known(
                ctx, "double_tap", rng, node, plan.campaign_id, user, f"r{rng.getrandbits(40):x}", channel
            )
            for _ in range(2)
        )
    )
    if plan.group == "category" and rng.random() < 0.6:  # then tries another campaign of the category
        other = rng.choice([p for p in ctx.plans.values() if p.group == "category" and p is not plan])
        await claim_until_known(
            ctx,
            "double_tap",
            rng,
            rng.randrange(ctx.nodes),
            other.campaign_id,
            user,
            f"r{rng.getrandbits(40):x}",
            channel,
        )


async def op_cross_node_tap(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    """One user through several nodes at once: the same campaign twice, and the category's others."""
    user = ctx.user(rng)
    channel = ctx.channel_of(user)
    group = rng.choice(("category", "category", "stack"))
    same = ctx.campaign(rng, group).campaign_id
    targets = [same, same] + (
        [p.campaign_id for p in ctx.plans.values() if p.group == group and p.campaign_id != same]
        if rng.random() < 0.6
        else []
    )
    nodes = list(range(ctx.nodes))
    rng.shuffle(nodes)
    await asyncio.gather(
        *(
            claim_until_known(
                ctx,
                "cross_node_tap",
                rng,
                nodes[i % len(nodes)],
                c,
                user,
                f"r{rng.getrandbits(40):x}",
                channel,
            )
            for i, c in enumerate(targets)
        )
    )


async def op_lost_reply(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    user, plan = ctx.user(rng), ctx.campaign(rng)
    channel, rid = ctx.channel_of(user), f"r{rng.getrandbits(40):x}"
    node = rng.randrange(ctx.nodes)
    await claim(
        ctx, "lost_reply", node, plan.campaign_id, user, rid, channel, timeout=rng.uniform(0.001, 0.03)
    )
    await asyncio.sleep(rng.uniform(0.0, 1.5))
    await claim_until_known(
        ctx, "lost_reply", rng, rng.randrange(ctx.nodes), plan.campaign_id, user, rid, channel
    )


async def op_replay(ctx: Ctx, rng: random.Random, args: dict[str, Any], other_channel: bool = False) -> None:
    if not ctx.model.requests:
        return
    # Mostly recent requests: a retry soon after a grant is where stale sold-out answers were.
    recent = ctx.model.requests[-40:] if rng.random() < 0.7 else ctx.model.requests
    campaign, user, rid, channel = rng.choice(recent)
    if other_channel:
        channel = rng.choice([c for c in CHANNELS if c != channel])
    op = "cross_channel_replay" if other_channel else "replay"
    await claim_until_known(ctx, op, rng, rng.randrange(ctx.nodes), campaign, user, rid, channel)


async def op_batch(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    items = []
    for _ in range(rng.randint(3, 12)):
        user = ctx.user(rng) if not items or rng.random() < 0.8 else rng.choice(items).user_id
        items.append(
            pb.ClaimRequest(
                campaign_id=ctx.campaign(rng).campaign_id,
                user_id=user,
                request_id=f"r{rng.getrandbits(40):x}",
                channel_id=ctx.channel_of(user),
            )
        )
    node = rng.randrange(ctx.nodes)
    for attempt in range(MAX_RESENDS + 1):
        calls = [
            ctx.log.begin(
                "batch",
                "ClaimBatch",
                node,
                c.campaign_id,
                user=c.user_id,
                request_id=c.request_id,
                channel=c.channel_id,
            )
            for c in items
        ]
        try:
            reply = await ctx.world.nodes[node].claims.ClaimBatch(
                pb.ClaimBatchRequest(claims=items), timeout=DEADLINE_S
            )
        except grpc.aio.AioRpcError as err:
            for call in calls:
                ctx.log.failed(call, _code(err))
            if calls[0].outcome != UNKNOWN:
                return
            await asyncio.sleep(rng.uniform(0.1, 0.4) * (attempt + 1))
            node = (node + 1) % ctx.nodes
            continue
        for call, r in zip(calls, reply.replies, strict=True):
            _claim_answer(ctx, call, r)
        return


async def op_release(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    plan = ctx.campaign(rng)
    holders = ctx.model.holders(plan.campaign_id)
    if not holders:
        return
    user = rng.choice(holders)
    vouchers = ctx.model.usable(plan.campaign_id, user)
    if vouchers:
        await until_known(
            lambda n: release(ctx, "release", n, plan.campaign_id, user, rng.choice(vouchers)),
            rng,
            rng.randrange(ctx.nodes),
            ctx.nodes,
        )


async def op_recycle(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    await recycle(ctx, "recycle", rng.randrange(ctx.nodes), ctx.campaign(rng).campaign_id)


def _order_for(ctx: Ctx, rng: random.Random, user: str, parts: list[tuple[str, list[str]]]) -> Order:
    spend = max(ctx.plans[c].campaign.min_spend_cents for c, _ in parts)
    order = Order(
        user,
        f"o{rng.getrandbits(40):x}",
        parts,
        ctx.sns(rng),
        ctx.channel_of(user),
        spend + rng.randint(0, 5000),
    )
    ctx.model.orders.append(order)
    return order


async def op_redeem(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    plan = ctx.campaign(rng)
    usable = {
        u: vs for u in ctx.model.holders(plan.campaign_id) if (vs := ctx.usable(rng, plan.campaign_id, u))
    }
    if not usable:
        return
    user = rng.choice(sorted(usable))
    vouchers = usable[user]
    picked = rng.sample(vouchers, min(len(vouchers), rng.randint(1, 2)))
    order = _order_for(ctx, rng, user, [(plan.campaign_id, picked)])
    await until_known(lambda n: redeem(ctx, "redeem", n, order), rng, rng.randrange(ctx.nodes), ctx.nodes)


async def op_redeem_edge(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    """Redeem vouchers about to expire through the node furthest behind in time, while the node
    furthest ahead sweeps: both must agree on one answer per voucher."""
    plan = ctx.campaign(rng)
    edge = ctx.model.near_expiry(plan.campaign_id, plan.campaign.valid_for_ms, 400, rng, 3)
    if not edge:
        return
    behind, ahead = ctx.node_by_clock(lowest=True), ctx.node_by_clock(lowest=False)
    orders = [_order_for(ctx, rng, g.user, [(plan.campaign_id, [g.voucher])]) for g in edge]
    await asyncio.gather(
        recycle(ctx, "redeem_edge", ahead, plan.campaign_id),
        *(redeem(ctx, "redeem_edge", behind, o) for o in orders),
    )


def _stack_parts(ctx: Ctx, rng: random.Random, user: str) -> list[tuple[str, list[str]]]:
    parts = []
    for plan in ctx.plans.values():
        if plan.group == "stack":
            usable = ctx.usable(rng, plan.campaign_id, user)
            if usable:
                parts.append((plan.campaign_id, [rng.choice(usable)]))
    rng.shuffle(parts)
    return parts[: rng.randint(2, 3)]


def _stack_user(ctx: Ctx, rng: random.Random) -> str | None:
    stack = [p.campaign_id for p in ctx.plans.values() if p.group == "stack"]
    candidates = {u for c in stack for u in ctx.model.holders(c)}
    candidates = [u for u in sorted(candidates) if sum(bool(ctx.usable(rng, c, u)) for c in stack) >= 2]
    return rng.choice(candidates) if candidates else None


async def op_redeem_stacked(
    ctx: Ctx, rng: random.Random, args: dict[str, Any], node: int | None = None, resend: bool = True
) -> Order | None:
    user = _stack_user(ctx, rng)
    if user is None:
        return None
    parts = _stack_parts(ctx, rng, user)
    if len(parts) < 2:
        return None
    if args.get("bad_part"):  # a part that must be refused: a voucher the user never had
        campaign, vouchers = parts[-1]
        parts[-1] = (campaign, [f"{campaign}-0-999999"])
    order = _order_for(ctx, rng, user, parts)
    first = rng.randrange(ctx.nodes) if node is None else node
    if resend:
        await until_known(lambda n: redeem(ctx, "redeem_stacked", n, order), rng, first, ctx.nodes)
    else:
        await redeem(ctx, "redeem_stacked", first, order)
    return order


async def op_reverse(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    done = [o for o in ctx.model.orders if o.redeemed and not o.reversed]
    if not done:
        return
    order = rng.choice(done[-60:])
    for campaign, _ in order.parts:  # a stacked order is reversed campaign by campaign
        await until_known(
            lambda n, c=campaign: reverse(ctx, "reverse", n, c, order),
            rng,
            rng.randrange(ctx.nodes),
            ctx.nodes,
        )


async def op_replay_redeem(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    if ctx.model.orders:
        order = rng.choice(ctx.model.orders)
        await until_known(
            lambda n: redeem(ctx, "replay_redeem", n, order), rng, rng.randrange(ctx.nodes), ctx.nodes
        )


async def op_replay_reverse(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    done = [o for o in ctx.model.orders if o.reversed]
    if done:
        order = rng.choice(done)
        campaign = rng.choice(order.parts)[0]
        await until_known(
            lambda n: reverse(ctx, "replay_reverse", n, campaign, order),
            rng,
            rng.randrange(ctx.nodes),
            ctx.nodes,
        )


async def op_eligibility(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    """Records that change nothing about who may claim (no allow list, no rule): still written,
    still moved by reshards, still read by every claim once the campaign has any."""
    plan = next(p for p in ctx.plans.values() if p.deny_list)
    if not ctx.model.denied.get(plan.campaign_id):
        # Not before the first deny list: a first load must come after a shrink (schedule.py).
        plan = next(p for p in ctx.plans.values() if p.group == "stack" and not p.deny_list)
    users = {ctx.user(rng) for _ in range(rng.randint(1, 5))}
    records = [pb.EligibilityRecord(user_id=u, allowed=True, region="r1", tags=["t"]) for u in sorted(users)]
    await until_known(
        lambda n: eligibility(ctx, "eligibility", n, plan.campaign_id, records),
        rng,
        rng.randrange(ctx.nodes),
        ctx.nodes,
    )


async def op_deny(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    """Fresh users go on the deny list; they claim only once that call was answered."""
    campaign = str(args["campaign"])
    users = []
    for _ in range(rng.randint(3, 8)):
        users.append(f"d{ctx.model.next_denied}")
        ctx.model.next_denied += 1
    records = [pb.EligibilityRecord(user_id=u, denied=True) for u in users]
    call = await until_known(
        lambda n: eligibility(ctx, "deny", n, campaign, records), rng, rng.randrange(ctx.nodes), ctx.nodes
    )
    if call.outcome == "UPDATED":
        ctx.model.denied[campaign].update(users)


async def op_denied_claim(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    plan = next(p for p in ctx.plans.values() if p.deny_list)
    denied = sorted(ctx.model.denied.get(plan.campaign_id, ()))
    if denied:
        user = rng.choice(denied)
        await claim_until_known(
            ctx,
            "denied_claim",
            rng,
            rng.randrange(ctx.nodes),
            plan.campaign_id,
            user,
            f"r{rng.getrandbits(40):x}",
            ctx.channel_of(user),
        )


async def op_reshard(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    """A reshard, mostly with expiry sweeps through the other nodes while it moves users."""
    campaign, shards = str(args["campaign"]), int(args["shards"])
    node = rng.randrange(ctx.nodes)
    moving = asyncio.create_task(
        until_known(lambda n: reshard(ctx, "reshard", n, campaign, shards), rng, node, ctx.nodes)
    )
    if rng.random() < 0.7:
        while not moving.done():
            await recycle(ctx, "reshard", rng.choice([n for n in range(ctx.nodes) if n != node]), campaign)
            await asyncio.sleep(rng.uniform(0.005, 0.03))
    done = await moving
    if done.outcome == "RESHARDED":
        # After a reshard, stock that comes back may land only on shards a node's cached map does
        # not have: probe every node (sold-out snapshots and refills must follow the new map).
        await asyncio.sleep(rng.uniform(0.5, 4.0))
        tag = f"{rng.getrandbits(32):x}"
        found = await asyncio.gather(
            *(sold_out_probe(ctx, "reshard", n, campaign, f"{tag}{n}") for n in range(ctx.nodes))
        )
        ctx.found += [v for v in found if v is not None]


async def op_kill(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    """kill -9 a node, often in the middle of stacked redemptions and claims it is serving; the
    cut-off orders are sent again elsewhere, or (a client reusing its order id) with other parts."""
    node = int(args["node"])
    if not ctx.world.alive(node):
        return
    cut: list[asyncio.Task[Any]] = []
    if rng.random() < 0.7:
        # Stacked orders started a few ms apart: whenever the kill lands, some are between their
        # decision and their commits (the step a dying coordinator must not leave ambiguous).
        for k in range(rng.randint(6, 12)):
            sub = random.Random(rng.getrandbits(32))
            cut.append(
                asyncio.create_task(
                    op_redeem_stacked(ctx, sub, {"bad_part": k % 3 == 2}, node=node, resend=False)
                )
            )
            await asyncio.sleep(rng.uniform(0.0, 0.004))
        for _ in range(rng.randint(2, 6)):
            sub = random.Random(rng.getrandbits(32))
            user, plan = ctx.user(sub), ctx.campaign(sub)
            cut.append(
                asyncio.create_task(
                    claim(
                        ctx,
                        "kill",
                        node,
                        plan.campaign_id,
                        user,
                        f"r{sub.getrandbits(40):x}",
                        ctx.channel_of(user),
                    )
                )
            )
        await asyncio.sleep(rng.uniform(0.0, 0.04))
    await asyncio.to_thread(ctx.world.kill, node)
    ctx.log.end(ctx.log.begin("kill", "kill -9", node, ""), "KILLED")
    orders = [o for o in await asyncio.gather(*cut, return_exceptions=True) if isinstance(o, Order)]
    await asyncio.sleep(float(args["down_s"]))
    await asyncio.to_thread(ctx.world.restart, node)
    ctx.log.end(ctx.log.begin("kill", "restart", node, ""), "STARTED")
    for order in orders:  # each cut-off order: the same again, its id reused with other parts, or given up
        if order.redeemed or rng.random() < 0.4:
            continue
        if rng.random() < 0.35 and (parts := _stack_parts(ctx, rng, order.user)):
            reuse = Order(order.user, order.order_id, parts, ctx.sns(rng), order.channel, order.amount)
            ctx.model.orders.append(reuse)
            order = reuse
        await until_known(
            lambda n, o=order: redeem(ctx, "kill_resend", n, o), rng, rng.randrange(ctx.nodes), ctx.nodes
        )


async def op_drop_connections(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    for _ in range(int(args["times"])):
        killed = await asyncio.to_thread(ctx.world.drop_connections)
        ctx.log.end(ctx.log.begin("drop_connections", "CLIENT KILL", -1, ""), "DROPPED", connections=killed)
        await asyncio.sleep(rng.uniform(0.002, 0.02))


PROBE_AGAIN_S = 3.0  # a node's sold-out snapshot may trust itself 1.5 s and checks every 1 s


async def sold_out_probe(ctx: Ctx, op: str, node: int, campaign: str, tag: str) -> Violation | None:
    """A fresh user claims through `node` while Redis holds stock; SOLD_OUT is asked again after
    PROBE_AGAIN_S, and if the node still says SOLD_OUT while the stock stayed, it is a violation:
    a sold-out decision must cover the campaign's current map and reopen within its check."""
    answers, stock = [], []
    for attempt in range(2):
        stock.append(await asyncio.to_thread(ctx.world.claimable, campaign))
        if stock[-1] < 2:
            return None
        user = f"probe-{tag}-{attempt}"
        call = await claim(ctx, op, node, campaign, user, f"p{attempt}", CHANNELS[0])
        if call.outcome != "SOLD_OUT":
            return None
        answers.append(call)
        stock.append(await asyncio.to_thread(ctx.world.claimable, campaign))
        if stock[-1] < 1:
            return None  # taken meanwhile by others: the answer may have been right
        if attempt == 0:
            await asyncio.sleep(PROBE_AGAIN_S)
    first, last = answers
    return Violation(
        "sold-out-with-stock",
        campaign,
        (
            f"node {node} answered SOLD_OUT to fresh users twice, {PROBE_AGAIN_S:.0f} s apart "
            f"(calls #{first.call_id}, #{last.call_id}), while the campaign held claimable stock before "
            f"and after each ({', '.join(map(str, stock))})"
        ),
        {f"user:{first.user}", f"user:{last.user}", f"campaign:{campaign}", f"node:{node}"},
        until=last.call_id,
    )


async def op_sold_out_probe(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    plan = ctx.campaign(rng)
    tag = f"{rng.getrandbits(32):x}"
    found = await asyncio.gather(
        *(sold_out_probe(ctx, "sold_out_probe", n, plan.campaign_id, f"{tag}{n}") for n in range(ctx.nodes))
    )
    ctx.found += [v for v in found if v is not None]


ARCHIVE_CLOCK_MARGIN_MS = 5000  # a campaign ending this close to now may have ended by Redis's clock


async def set_archived(ctx: Ctx, op: str, node: int, campaign: str, archived: bool) -> Call:
    """ArchiveCampaign (archived) or UnarchiveCampaign; the reply's figures go in the call."""
    rpc = "ArchiveCampaign" if archived else "UnarchiveCampaign"
    call = ctx.log.begin(op, rpc, node, campaign)
    admin = ctx.world.nodes[node].admin
    request = pb.ArchiveCampaignRequest if archived else pb.UnarchiveCampaignRequest
    reply = await _unary(ctx, call, getattr(admin, rpc), request(campaign_id=campaign))
    if reply is not None:
        info = reply.campaign
        ctx.log.end(call, "ARCHIVED" if info.archived else "UNARCHIVED", granted=info.granted,
                    remaining=info.remaining, paused=info.paused)
    return call


async def _archive_view(ctx: Ctx, node: int, campaign: str) -> tuple[int, int, int, bool] | None:
    """(granted, remaining, held for rounds, paused) by GetCampaign; None if the node did not answer."""
    try:
        info = (await ctx.world.nodes[node].admin.GetCampaign(pb.GetCampaignRequest(campaign_id=campaign),
                                                            timeout=DEADLINE_S)).campaign
    except grpc.aio.AioRpcError:
        return None
    return info.granted, info.remaining, info.held_for_rounds, info.paused


async def op_archive(ctx: Ctx, rng: random.Random, args: dict[str, Any]) -> None:
    """Archive a campaign, then unarchive it, while every other operation goes on using it. The
    archive is refused (FAILED_PRECONDITION) while the campaign is open to claims; once it is
    sold out or ended it is taken. The figures are read just before and just after: when those
    two agree, nothing moved meanwhile, so an archive answered OK must show the same granted and
    remaining (archiving changes no figure), and the campaign must not have been open."""
    plan = ctx.campaign(rng)
    if rng.random() < 0.5:  # half the time, a campaign with no claimable stock left, if there is one
        plans = sorted(ctx.plans.values(), key=lambda p: p.campaign_id)
        left = await asyncio.gather(*(asyncio.to_thread(ctx.world.claimable, p.campaign_id) for p in plans))
        plan = rng.choice([p for p, n in zip(plans, left, strict=True) if n == 0] or [plan])
    campaign, node = plan.campaign_id, rng.randrange(ctx.nodes)
    before = await _archive_view(ctx, node, campaign)
    done = await until_known(lambda n: set_archived(ctx, "archive", n, campaign, True), rng, node, ctx.nodes)
    if done.outcome != "ARCHIVED":
        return  # refused: open (or unknown after every resend); nothing to undo
    after = await _archive_view(ctx, node, campaign)
    answered = (done.answer["granted"], done.answer["remaining"])
    keys = {f"campaign:{campaign}"}
    if before is not None and before == after:
        granted, remaining, held, paused = before
        if answered != (granted, remaining):
            ctx.found.append(Violation(
                "archive-changed-figures", campaign,
                f"call #{done.call_id} archived the campaign answering granted {answered[0]}, remaining "
                f"{answered[1]}, while GetCampaign read granted {granted}, remaining {remaining} just "
                f"before and just after", keys, until=done.call_id))
        ends_at = plan.campaign.ends_at_ms
        ended = bool(ends_at) and ends_at <= time.time() * 1000 + ARCHIVE_CLOCK_MARGIN_MS
        if not (paused or ended or remaining + held == 0):
            ctx.found.append(Violation(
                "archived-while-open", campaign,
                f"call #{done.call_id} archived the campaign while it was open to claims: not paused, "
                f"not ended, {remaining} left and {held} held for rounds (read before and after)",
                keys, until=done.call_id))
    await asyncio.sleep(rng.uniform(0.05, 0.5))
    await until_known(lambda n: set_archived(ctx, "archive", n, campaign, False), rng, node, ctx.nodes)


OPERATIONS = {
    "claim": op_claim,
    "watched_claim": op_watched_claim,
    "double_tap": op_double_tap,
    "cross_node_tap": op_cross_node_tap,
    "lost_reply": op_lost_reply,
    "replay": op_replay,
    "cross_channel_replay": lambda ctx, rng, args: op_replay(ctx, rng, args, other_channel=True),
    "batch": op_batch,
    "release": op_release,
    "recycle": op_recycle,
    "redeem": op_redeem,
    "redeem_edge": op_redeem_edge,
    "redeem_stacked": op_redeem_stacked,
    "reverse": op_reverse,
    "replay_redeem": op_replay_redeem,
    "replay_reverse": op_replay_reverse,
    "eligibility": op_eligibility,
    "deny": op_deny,
    "denied_claim": op_denied_claim,
    "reshard": op_reshard,
    "kill": op_kill,
    "drop_connections": op_drop_connections,
    "sold_out_probe": op_sold_out_probe,
    "archive": op_archive,
}
