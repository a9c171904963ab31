"""Issue 12: one regression test per interleaving defect, each asserting the issue's guarantee.

Through real nodes and real gRPC against the session's redis-server wherever a defect can be
reached that way. Where the issue has a node die, stall or resend at one given step, the test
runs claimcore's own library code in the test process on a real Redis client whose script
calls it can pause, fail (a dropped connection) or send again (interleavings_support.py), and
says in its docstring what stands for what. Nodes whose clocks are off use the test-only
CLAIMCORE_TEST_CLOCK_OFFSET_MS. Every test here failed on the code before the fixes (bc08ea9).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from interleavings_support import (
    Gate,
    HookedRedis,
    ScriptCall,
    StalledInventory,
    StubsByNode,
    campaign_info,
    claim,
    clock_node,
    create,
    dying_stacked_order,
    events,
    expire_counts,
    granted,
    in_process_node,
    is_stack_registry,
    load_config,
    mover,
    new_id,
    outcome,
    recycle,
    redeem,
    reverse,
    run_async,
    wait_past,
)

from claimcore._fast import shard_of
from claimcore.lifecycle import snregistry, stacking
from claimcore.lifecycle.eligibility import Eligibility
from claimcore.lifecycle.eligibility import update as update_eligibility
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.replies import ClaimItem, Code
from claimcore.store.reshard import reshard
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from support import users_on


@pytest.fixture(scope="module")
def behind_node(redis_server):
    """A node whose clock is 3 s behind: it would still call a voucher expired 2 s ago valid."""
    yield from clock_node(redis_server, -3000)


@pytest.fixture
def short_holds(monkeypatch):
    """This process's coordinator holds SN codes and prepares stacked parts for `ms` instead
    of 5 s (returns a setter), so that a coordinator that dies leaves holds and parts that are
    stale (past deadline + the 1 s margin) a few seconds later, not six. Nodes keep theirs."""

    def hold_for(ms: int) -> None:
        monkeypatch.setattr(snregistry, "HOLD_MS", ms)
        monkeypatch.setattr(stacking, "HOLD_MS", ms)

    return hold_for


@pytest.fixture(scope="module")
def stubs_of():
    stubs = StubsByNode()
    yield stubs
    stubs.close()


# ------------------------------------------------------------------ invariants broken


def test_defect_1_a_sweep_racing_a_reshard_recycles_each_voucher_once(redis_server, node, stubs_of):
    """Defect 1: an expiry sweep during a reshard recycled the movers' vouchers twice (the E
    mark stayed on the shard they left; their copy on the new shard was recycled again).

    The issue saw it with no injected delay (200-300 per 4,000-user reshard), because a sweep
    on the new map keeps retrying while the new shards are frozen, sweeping the old shards each
    time. To make it certain, the reshard runs in this process and is held just before it
    deletes the copied records at their old shard (before every forget.lua): that pause stands
    for a slow copy. Meanwhile a real node runs RecycleExpired; then the reshard finishes and
    the node sweeps again. Every voucher must come back once: one `expire` event each, and the
    stock left is inventory - granted + vouchers recycled."""
    s = stubs_of(node)
    cid = create(s.admin, merchant="", inventory=60, shards=2, valid_for_ms=400)
    users = [f"u{i}" for i in range(40)]
    batch = s.claims.ClaimBatch(pb.ClaimBatchRequest(claims=[
        pb.ClaimRequest(campaign_id=cid, user_id=u, request_id="r") for u in users]), timeout=30)
    assert [r.outcome for r in batch.replies] == [pb.OUTCOME_GRANTED] * len(users)
    movers = [u for u in users if shard_of(u, 2) != shard_of(u, 4)]
    assert movers  # about half of them move to the new shards
    wait_past(500)  # every voucher has expired, none recycled yet

    async def sweep_while_copying(client: HookedRedis) -> None:
        copied = Gate()

        async def before(call: ScriptCall) -> None:
            if call.name == "forget":
                await copied.passing()

        client.before = before
        resharding = asyncio.create_task(reshard(RedisInventory(client), cid, 4))
        await copied.wait_reached()
        async with grpc.aio.insecure_channel(node.address) as ch:
            try:  # the new shards are frozen: the sweep may wait for them past this deadline
                await pb_grpc.AdminServiceStub(ch).RecycleExpired(
                    pb.RecycleExpiredRequest(campaign_id=cid), timeout=1.0)
            except grpc.aio.AioRpcError as err:
                assert err.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE), err
        copied.go.set()
        await resharding

    run_async(redis_server, sweep_while_copying)
    recycle(s.admin, cid)  # the reshard is over: sweep again
    counts = expire_counts(s.admin, cid)
    twice = {v: n for v, n in counts.items() if n > 1}
    assert twice == {}, f"{len(twice)} vouchers recycled twice (of {len(movers)} movers)"
    assert len(counts) == len(users)
    assert campaign_info(s.admin, cid).remaining == 60 - len(users) + len(counts)


def test_defect_2_a_voucher_recycled_as_expired_is_never_redeemed_by_a_node_behind(
        node, behind_node, stubs_of):
    """Defect 2: a voucher recycled as expired (E) could still be redeemed, alone or stacked,
    through a node whose clock is behind (redeem.lua and stack.lua judged expiry by the
    caller's clock and did not treat E as final); reversed, it was then recycled again.

    The issue's node was 1 ms behind, right at the expiry; here the node is 3 s behind, so the
    same thing happens whatever the timing. The guarantee: once recycled, never redeemed or
    prepared again (EXPIRED), and its stock comes back once."""
    s, late = stubs_of(node), stubs_of(behind_node)
    a = create(s.admin, inventory=10, shards=1, valid_for_ms=1000, stackable=True, value_cents=500,
               min_spend_cents=1000)
    b = create(s.admin, inventory=10, shards=1, stackable=True, value_cents=300, min_spend_cents=1000)
    alone_voucher, stacked_voucher = granted(s.claims, a, "alone"), granted(s.claims, a, "stacker")
    other_part = granted(s.claims, b, "stacker")
    wait_past(1200)
    assert recycle(s.admin, a) == 2  # both recycled as expired (E) by a node on time

    alone = redeem(late.redeem, a, "alone", [alone_voucher], "o1")
    stacked = redeem(late.redeem, a, "stacker", [stacked_voucher], "o2", stacked=((b, [other_part]),))
    for user, reply, order in (("alone", alone, "o1"), ("stacker", stacked, "o2")):
        # the order is refunded: the voucher goes back to its user
        if reply.outcome == pb.REDEEM_OUTCOME_REDEEMED:
            reverse(late.redeem, a, user, order)
    recycle(s.admin, a)
    got = {"alone": outcome(alone), "stacked": outcome(stacked), "expire events": expire_counts(s.admin, a)}
    assert got == {"alone": "EXPIRED", "stacked": "EXPIRED",
                   "expire events": {alone_voucher: 1, stacked_voucher: 1}}


def test_defect_3_a_double_tap_in_one_flush_keeps_the_users_category(node, stubs_of):
    """Defect 3: per_user_limit 2 and one voucher left: a user's two claims in one flush got
    GRANTED and SOLD_OUT, the node settled the category hold from the last result (a drop),
    and another campaign of the category then granted the user too.

    Both claims are sent in one ClaimBatch, which one node serves in one flush. The
    guarantee: the hold becomes a use if any of the user's items in the flush granted."""
    s = stubs_of(node)
    category = new_id("fridge")
    first = create(s.admin, merchant="", inventory=1, shards=1, per_user_limit=2, category=category,
                   one_per_category=True)
    second = create(s.admin, merchant="", inventory=10, shards=1, category=category, one_per_category=True)
    taps = s.claims.ClaimBatch(pb.ClaimBatchRequest(claims=[
        pb.ClaimRequest(campaign_id=first, user_id="tapper", request_id=rid) for rid in ("r1", "r2")]),
        timeout=15)
    assert sorted(r.outcome for r in taps.replies) == sorted([pb.OUTCOME_GRANTED, pb.OUTCOME_SOLD_OUT])
    wait_past(500)  # the node settles the flush's holds in the background
    elsewhere = claim(s.claims, second, "tapper")
    assert short_name(pb.Outcome, elsewhere.outcome) == "NOT_ELIGIBLE"


def test_defect_4_a_category_hold_is_dropped_only_by_the_flush_that_took_it(redis_server, node, stubs_of):
    """Defect 4: category holds were owned by the campaign, so node 1's drop deleted node 2's
    live hold of the same user; a third campaign then granted the user, and node 2 granted
    under its deleted hold as well: vouchers of two campaigns of one category.

    Node 2 is this process's claim path (campaign cache, batcher, category gate), held between
    its hold and its claim.lua call (a node stalling there). Node 1 is a real node: the
    campaign is paused while it claims the same user, so its claim is PAUSED and it drops its
    hold. Then the user claims the third campaign through node 1, and node 2 goes on. The user
    must end with vouchers of exactly one of the two campaigns."""
    s = stubs_of(node)
    category = new_id("oven")
    first, third = (create(s.admin, merchant="", inventory=10, shards=1, category=category,
                           one_per_category=True) for _ in range(2))

    async def two_nodes(client: HookedRedis) -> tuple[int, int, int]:
        inventory = StalledInventory(client)
        stalled = inventory.claim_gate = Gate()
        cache, node2 = in_process_node(inventory)
        config = await cache.require(first)
        by_node2 = node2.submit(config, shard_of("u", config.shards), ClaimItem("u", "r2", ""))
        await stalled.wait_reached()  # node 2 holds u for the campaign, and stalls

        def node1() -> tuple[int, int]:
            s.admin.PauseCampaign(pb.PauseCampaignRequest(campaign_id=first), timeout=10)
            paused = claim(s.claims, first, "u", "r1").outcome  # node 1 holds u too, then drops
            s.admin.ResumeCampaign(pb.ResumeCampaignRequest(campaign_id=first), timeout=10)
            wait_past(500)  # node 1 drops its holds in the background
            return paused, claim(s.claims, third, "u", "r3").outcome

        paused, in_third = await asyncio.to_thread(node1)
        stalled.go.set()
        return paused, in_third, (await by_node2).code

    paused, in_third, by_node2 = run_async(redis_server, two_nodes)
    holds_from = [name for name, won in (("first, through node 2", by_node2 == Code.GRANTED),
                                         ("third, through node 1", in_third == pb.OUTCOME_GRANTED)) if won]
    assert len(holds_from) == 1, \
        f"u holds vouchers of {holds_from} (node 1's claim while paused: {short_name(pb.Outcome, paused)})"


def test_defect_5_a_deny_list_loaded_after_a_shrink_holds_on_shards_revived_by_a_growth(node, stubs_of):
    """Defect 5: eligdata was set only on shards created by a reshard, so a deny list loaded
    after a shrink was ignored on the retired shards a later growth revived: the denied user,
    moved there with their record, was GRANTED. All through gRPC."""
    s = stubs_of(node)
    cid = create(s.admin, merchant="", inventory=40, shards=4)
    s.admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=2), timeout=60)
    moving = mover("denied-mover", 2, 4)       # back onto shard 2 or 3 when the campaign grows
    staying = next(u for u in users_on(0, 2, 50, "denied-stayer") if shard_of(u, 4) == 0)  # a control
    s.admin.UpdateEligibility(pb.UpdateEligibilityRequest(campaign_id=cid, records=[
        pb.EligibilityRecord(user_id=u, denied=True) for u in (moving, staying)]), timeout=10)
    s.admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=4), timeout=60)
    got = {u: short_name(pb.Outcome, claim(s.claims, cid, u).outcome) for u in (moving, staying)}
    assert got == {moving: "NOT_ELIGIBLE", staying: "NOT_ELIGIBLE"}


def test_defect_5_the_first_deny_list_landing_during_a_reshard_holds_on_the_new_shards(
        redis_server, node, stubs_of):
    """Defect 5, its race: the campaign's first UpdateEligibility lands during a growth, after
    the reshard has looked for eligibility records (none yet: the new shards are made without
    eligdata) and before it fences the old shards. The denied user's record then moves to a
    new shard that never checks it: GRANTED.

    The reshard runs in this process, held just before it fences (before every fence.lua);
    the update is written meanwhile by this process's eligibility.update on the map read
    before the reshard began (a node that loaded the campaign just before), then the reshard
    goes on. The denied user must be NOT_ELIGIBLE."""
    s = stubs_of(node)
    cid = create(s.admin, merchant="", inventory=40, shards=2)
    denied = mover("race-denied", 2, 4)

    async def update_while_fencing(client: HookedRedis) -> None:
        inventory = RedisInventory(client)
        cache = CampaignCache(inventory)
        before_reshard = await cache.require(cid)
        fencing = Gate()

        async def before(call: ScriptCall) -> None:
            if call.name == "fence":
                await fencing.passing()

        client.before = before
        resharding = asyncio.create_task(reshard(inventory, cid, 4))
        await fencing.wait_reached()
        await update_eligibility(inventory, cache, before_reshard, [Eligibility(denied, denied=True)])
        fencing.go.set()
        await resharding

    run_async(redis_server, update_while_fencing)
    assert short_name(pb.Outcome, claim(s.claims, cid, denied).outcome) == "NOT_ELIGIBLE"


def test_defect_6_a_stale_sn_hold_of_a_decided_stacked_order_is_settled_as_used(
        redis_server, node, stubs_of, short_holds):
    """Defect 6: a stacked order's coordinator died after its decision and before its commits;
    its stale SN hold was settled as free (its parts were only prepared, P), another order was
    subsidised for the SN code, and the first order was committed later: one SN code, two
    subsidies.

    The coordinator is this process's Redemptions (holding for 3 s, not 5: short_holds), whose
    Redis calls fail (a dropped connection: the node dies) from the first call after its
    decision was written. Once its SN hold and prepared parts are stale, another order wants
    the SN code and the user's vouchers are met again, through a real node. The guarantee:
    the stale hold is settled by the order's decision (decided = used), so only the first
    order ever carries the SN code."""
    s = stubs_of(node)
    a, b = (create(s.admin, inventory=10, shards=2, stackable=True, value_cents=v, min_spend_cents=1000)
            for v in (500, 300))
    va, vb, other = granted(s.claims, a, "u"), granted(s.claims, b, "u"), granted(s.claims, a, "other")
    sn = new_id("sn")
    short_holds(3000)

    async def coordinator(client: HookedRedis) -> None:
        await dying_stacked_order(client, lambda call, done: any(is_stack_registry(d) for d in done),
                                  "after the stacked order's decision, before its commits",
                                  [(a, [va]), (b, [vb])], "o1", (sn,))
        assert any(is_stack_registry(done) for done in client.calls)  # it did decide

    run_async(redis_server, coordinator)
    wait_past(3000 + 1000 + 300)  # the SN hold's deadline and margin: it is stale now
    second = redeem(s.redeem, a, "other", [other], "o2", sns=(sn,))
    meet_a = redeem(s.redeem, a, "u", [va], "o3")  # meets the dead order's parts: settled
    meet_b = redeem(s.redeem, b, "u", [vb], "o3")
    with_sn = {(e.user_id, e.order_id) for cid in (a, b) for e in events(s.admin, cid)
               if e.kind == "redeem" and sn in e.sn_codes}
    assert {"second order": outcome(second), "orders with the SN code": with_sn} == {
        "second order": "SN_ALREADY_SUBSIDISED", "orders with the SN code": {("u", "o1")}}, \
        f"meeting the dead order's parts: {outcome(meet_a)}, {outcome(meet_b)}"


def test_defect_9_a_resent_lend_moves_stock_at_most_once(redis_server, node, stubs_of):
    """Defect 9: a LEND reaching Redis again after its lease was credited and settled took the
    donor's stock a second time; the credit then refused it (lease id credited already) and
    that stock was gone.

    The move runs in this process (RedisInventory.move_stock: lend, credit, settle); then the
    same lend.lua call, same keys and arguments, is sent once more with claimcore.store.scripts, as
    a resend after a dropped connection would, and leases are settled as a borrower would.
    The campaign's stock must be whole."""
    s = stubs_of(node)
    cid = create(s.admin, merchant="", inventory=20, shards=2)

    async def lend_twice(client: HookedRedis) -> int:
        inventory = RedisInventory(client)
        config = await load_config(inventory, cid)
        moved = await inventory.move_stock(config, 1, 0, 3)
        lend = next(call for call in client.calls if call.name == "lend")
        await scripts.LEND(client, lend.keys, lend.args)  # the same LEND, resent late
        await inventory.settle_leases(config)
        return moved

    moved = run_async(redis_server, lend_twice)
    info = campaign_info(s.admin, cid)
    assert moved == 3
    assert (info.remaining, [sh.remaining for sh in info.shards]) == (20, [13, 7])


def test_defect_10_a_stacked_decision_commits_only_its_own_order(redis_server, node, stubs_of, short_holds):
    """Defect 10: decisions were keyed by (user, order id) only: a refused stacked order's
    prepared part, left by a coordinator that crashed before aborting it, was committed from
    the decision of another stacked order with the same order id over other campaigns.

    The refused order's coordinator is this process's Redemptions (preparing for 1.5 s, not
    5: short_holds), whose Redis calls fail from its first abort (it crashes there). The
    second order, same user and order id over two other campaigns, goes through a real node.
    Once the part left prepared is stale, its voucher is met again through the node. The
    guarantee: the decision binds one stacked-order instance, so the refused order's part is
    aborted: its voucher is free and its campaign never records that order."""
    s = stubs_of(node)
    a, b, c, d = (create(s.admin, inventory=10, shards=2, stackable=True, value_cents=300,
                         min_spend_cents=1000) for _ in range(4))
    a, b = sorted((a, b))  # parts are prepared in campaign id order: a's first
    va, vb, vc, vd = (granted(s.claims, cid, "u") for cid in (a, b, c, d))
    # so b's part is refused
    assert redeem(s.redeem, b, "u", [vb], "elsewhere").outcome == pb.REDEEM_OUTCOME_REDEEMED
    short_holds(1500)

    async def coordinator(client: HookedRedis) -> str:
        await dying_stacked_order(client, lambda call, _: call.name == "stack" and call.args[0] == "abort",
                                  "after a part was refused, before aborting the others",
                                  [(a, [va]), (b, [vb])], "o")
        prepared = [call for call in client.calls if call.name == "stack" and call.args[0] == "prepare"]
        return ",".join(sorted(str(call.reply[0]) for call in prepared))

    assert run_async(redis_server, coordinator) == "1,2"  # a's part prepared, b's refused
    other_order = redeem(s.redeem, c, "u", [vc], "o", stacked=((d, [vd]),))
    assert other_order.outcome == pb.REDEEM_OUTCOME_REDEEMED
    wait_past(1500 + 1000 + 300)  # the prepared part's deadline and margin: it is stale now
    met = redeem(s.redeem, a, "u", [va], "o-new")
    orders_in_a = sorted({e.order_id for e in events(s.admin, a) if e.kind == "redeem"})
    assert (outcome(met), orders_in_a) == ("REDEEMED", ["o-new"])


# ------------------------------------------------------------------ wrong answers


def test_defect_11_every_redemption_record_moves_with_its_user(node, stubs_of):
    """Defect 11: a reshard moved only the order records the user's vouchers point at now, so
    an older order (redeemed, reversed, and its voucher redeemed again on a newer order) stayed
    on the old shard: after the reshard its reversal replay answered ORDER_NOT_FOUND and its
    order id could be redeemed again. All through gRPC."""
    s = stubs_of(node)
    cid = create(s.admin, inventory=10, shards=2, value_cents=500, min_spend_cents=1000)
    user = mover("orders", 2, 4)
    voucher = granted(s.claims, cid, user)
    assert redeem(s.redeem, cid, user, [voucher], "o1").outcome == pb.REDEEM_OUTCOME_REDEEMED
    first_reversal = reverse(s.redeem, cid, user, "o1")
    assert redeem(s.redeem, cid, user, [voucher], "o2").outcome == pb.REDEEM_OUTCOME_REDEEMED
    assert reverse(s.redeem, cid, user, "o2").outcome == pb.REVERSE_OUTCOME_REVERSED
    s.admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=4), timeout=60)
    replay = reverse(s.redeem, cid, user, "o1")
    reuse = redeem(s.redeem, cid, user, [voucher], "o1")
    got = {"replay": (short_name(pb.ReverseOutcome, replay.outcome), list(replay.returned_voucher_ids),
                      replay.reversed_at_ms),
           "o1 again": outcome(reuse)}
    assert got == {"replay": ("REVERSED", [voucher], first_reversal.reversed_at_ms),
                   "o1 again": "ORDER_ID_REUSED"}


def test_defect_13_a_refill_with_a_pre_reshard_map_finds_the_new_shards_stock(redis_server, node, stubs_of):
    """Defect 13: a claim found its shard empty under the old map; before its refill borrowed,
    the campaign grew and the stock went to the new shards; the borrow, still on the old map,
    saw no stock and declared the campaign sold out.

    The claim runs through this process's claim path (campaign cache, batcher), held just
    before it borrows (a node stalling there). Meanwhile, through a real node, the campaign is
    resharded from 2 to 4 shards and the old shards are claimed empty. The guarantee: nothing
    left to borrow is decided against the current map, so the claim is GRANTED."""
    s = stubs_of(node)
    cid = create(s.admin, merchant="", inventory=10, shards=2)
    first_left = {sh.shard: sh.remaining for sh in campaign_info(s.admin, cid).shards}[0]
    for user in users_on(0, 2, first_left, "early"):
        granted(s.claims, cid, user)
    latecomer = users_on(0, 2, 1, "late")[0]

    async def refill_across_reshard(client: HookedRedis) -> int:
        inventory = StalledInventory(client)
        stalled = inventory.borrow_gate = Gate()
        cache, batcher = in_process_node(inventory)
        config = await cache.require(cid)
        result = batcher.submit(config, shard_of(latecomer, config.shards), ClaimItem(latecomer, "r", ""))
        await stalled.wait_reached()  # its shard was empty: it is about to borrow, on the old map

        def grow_and_drain() -> None:
            s.admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=4), timeout=60)
            left = {sh.shard: sh.remaining for sh in campaign_info(s.admin, cid).shards}
            for shard in (0, 1):  # the old shards run dry; the new ones keep their stock
                for user in users_on(shard, 4, left[shard], f"drain{shard}-"):
                    granted(s.claims, cid, user)

        await asyncio.to_thread(grow_and_drain)
        left = {sh.shard: sh.remaining for sh in campaign_info(s.admin, cid).shards}
        assert (left[0], left[1], left[2] + left[3] > 0) == (0, 0, True)
        stalled.go.set()
        return (await result).code

    assert Code(run_async(redis_server, refill_across_reshard)).name == "GRANTED"


# ------------------------------------------------------------------ design gap


def test_defect_15_a_voucher_reversed_after_its_expiry_comes_back_to_stock_once(node, stubs_of):
    """Defect 15: a voucher whose order was reversed after the voucher's expiry (X) was never
    recycled: its stock was lost. The rule (docs/recycling.md): its stock comes back in the
    reversal's own step, exactly once, however often the reversal is replayed and the
    campaign swept. All through gRPC."""
    s = stubs_of(node)
    cid = create(s.admin, inventory=5, shards=1, valid_for_ms=1000, value_cents=500, min_spend_cents=1000)
    voucher = granted(s.claims, cid, "u")
    assert redeem(s.redeem, cid, "u", [voucher], "o").outcome == pb.REDEEM_OUTCOME_REDEEMED
    wait_past(1200)
    reversal = reverse(s.redeem, cid, "u", "o")
    assert list(reversal.expired_voucher_ids) == [voucher]
    reverse(s.redeem, cid, "u", "o")
    recycle(s.admin, cid)
    recycle(s.admin, cid)
    got = {"expire events": expire_counts(s.admin, cid), "remaining": campaign_info(s.admin, cid).remaining}
    assert got == {"expire events": {voucher: 1}, "remaining": 5}


# ------------------------------------------------------------------ also looked at


def test_also_a_stranded_prepared_part_is_recycled_once_expired(redis_server, node, stubs_of, short_holds):
    """Also looked at: a part prepared (P) by a stacked order whose coordinator died before
    deciding, and which nobody touches again, stranded its voucher: sweeps never recycled it.

    The coordinator is this process's Redemptions (preparing for 1.5 s, not 5: short_holds),
    whose Redis calls fail from its decision on (it dies after preparing). Once the voucher
    has expired and the part is stale, a real node sweeps. The voucher must come back once."""
    s = stubs_of(node)
    a = create(s.admin, inventory=10, shards=1, stackable=True, valid_for_ms=1000, value_cents=500,
               min_spend_cents=1000)
    b = create(s.admin, inventory=10, shards=1, stackable=True, value_cents=300, min_spend_cents=1000)
    va, vb = granted(s.claims, a, "u"), granted(s.claims, b, "u")
    short_holds(1500)

    async def coordinator(client: HookedRedis) -> None:
        await dying_stacked_order(client, lambda call, _: is_stack_registry(call),
                                  "after preparing, before deciding", [(a, [va]), (b, [vb])], "o")

    run_async(redis_server, coordinator)
    wait_past(1500 + 1000 + 300)  # the voucher has expired, and the part is stale
    for _ in range(3):
        recycle(s.admin, a)
    assert expire_counts(s.admin, a) == {va: 1}


def test_also_a_failed_sn_hold_never_frees_the_orders_own_committed_uses(node, stubs_of):
    """Also looked at: SnRegistry.hold released every SN code of the order when one of them
    was taken, its own committed uses included. A stacked order is sent again with one more
    SN code, which another order uses: that refusal freed the order's first SN code, and a
    third order was subsidised for it. All through gRPC."""
    s = stubs_of(node)
    a, b = (create(s.admin, inventory=10, shards=2, stackable=True, value_cents=300, min_spend_cents=1000)
            for _ in range(2))
    va, vb = granted(s.claims, a, "u"), granted(s.claims, b, "u")
    vx, vw = granted(s.claims, a, "x"), granted(s.claims, a, "w")
    first_sn, second_sn = new_id("sn"), new_id("sn")
    assert redeem(s.redeem, a, "x", [vx], "ox", sns=(second_sn,)).outcome == pb.REDEEM_OUTCOME_REDEEMED
    stacked = redeem(s.redeem, a, "u", [va], "o", sns=(first_sn,), stacked=((b, [vb]),))
    assert stacked.outcome == pb.REDEEM_OUTCOME_REDEEMED
    again = redeem(s.redeem, a, "u", [va], "o", sns=(first_sn, second_sn), stacked=((b, [vb]),))
    third = redeem(s.redeem, a, "w", [vw], "ow", sns=(first_sn,))
    assert outcome(third) == "SN_ALREADY_SUBSIDISED", f"the order sent again: {outcome(again)}"


def test_also_a_resent_eligibility_update_never_overwrites_a_newer_one(redis_server, node, stubs_of):
    """Also looked at: an UpdateEligibility call that reached Redis again (the client's
    automatic retry on a dropped connection) after a newer update overwrote it.

    The older update (deny the user) runs in this process (eligibility.update) and its
    eligibility.lua call is recorded; the newer one (the user is no longer denied) goes
    through a real node; then the older call is sent again as it was, with claimcore.store.scripts.
    The newer record must stand: the user is GRANTED."""
    s = stubs_of(node)
    cid = create(s.admin, merchant="", inventory=10, shards=2)

    async def older_update(client: HookedRedis) -> ScriptCall:
        inventory = RedisInventory(client)
        cache = CampaignCache(inventory)
        await update_eligibility(inventory, cache, await cache.require(cid), [Eligibility("u", denied=True)])
        return next(call for call in client.calls if call.name == "eligibility")

    sent = run_async(redis_server, older_update)
    s.admin.UpdateEligibility(pb.UpdateEligibilityRequest(campaign_id=cid, records=[
        pb.EligibilityRecord(user_id="u", denied=False)]), timeout=10)

    async def resend(client: HookedRedis) -> None:
        await scripts.ELIGIBILITY(client, sent.keys, sent.args)

    run_async(redis_server, resend)
    assert short_name(pb.Outcome, claim(s.claims, cid, "u").outcome) == "GRANTED"
