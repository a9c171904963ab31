"""Issue 14's exactness test: the auto-batching, watching client across two nodes, with a reshard
and a stock return during the run, checked with the history checker (harness/history.py).

Real redis-server, two real nodes (LocalNode) on it, real gRPC. One ClaimClient(watch=True) with
batching sends, concurrently: a launch of 1,500 users against 300 vouchers (one user in ten taps
twice with one request id), then waves of latecomers after the campaign sold out, resends of
launch requests (their request ids again), and a release of granted vouchers in the middle of
the waves; a growth reshard (2 -> 4 shards) runs during the launch.

What is checked:
- check_history: nothing acknowledged is lost, nobody holds two vouchers, no voucher twice,
  conservation (the checker assumes a claim-only history: the released vouchers are counted as
  inventory the campaign got back, see `effective`), every stored grant acknowledged or explained;
- every replay (double tap, resend) sent after a request was answered GRANTED gets that voucher,
  and no replay is answered locally;
- each local SOLD_OUT (recorded as it happens, with the watch's state at that moment) came while
  the last state pushed to the client was SOLD_OUT and within its trusted window (received +
  sold_out_valid_for_ms - MARGIN_MS);
- the design's promise (docs/architecture.md, "The pushed campaign state"): no claim is answered
  SOLD_OUT locally while a node could grant it. With Redis's own grant times (the reqs records)
  and the releases' times: every grant stored after a local answer at t came from stock returned
  after t - RETURN_DELAY_MS (stock that returned earlier was claimable at t, and then the local
  answer would have hidden it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace

import grpc
import pytest
import redis

from claimcore.client import ClaimClient, ClaimOutcomeUnknown
from claimcore.client.watch import LOCAL_DETAIL, MARGIN_MS, CampaignWatch
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.harness.history import History, Op, check_against, read_final_state
from claimcore.harness.local_node import LocalNode
from claimcore.store.inventory import RETURN_DELAY_MS
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import new_campaign_id

USERS = 1500
VOUCHERS = 300
DOUBLE_TAP_EVERY = 10    # one launch user in ten taps twice, same request id
RELEASED = 3             # granted vouchers given back during the waves
WAVE = 40                # latecomers per wave
WAVES = 120              # waves, WAVE_PAUSE_S apart (about 6 s in all)
WAVE_PAUSE_S = 0.05
SOLD_OUT = pb.CAMPAIGN_PHASE_SOLD_OUT


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as s:
        yield s


@pytest.fixture(scope="module")
def nodes(server: EmbeddedRedis) -> Iterator[list[LocalNode]]:
    started = [LocalNode(server.url), LocalNode(server.url)]
    try:
        for n in started:
            n.start()
        yield started
    finally:
        for n in started:
            n.stop()


@dataclass(frozen=True)
class LocalAnswer:
    """A local SOLD_OUT and what the watch held at that moment."""

    at: float          # monotonic
    wall_ms: int
    phase: int         # the phase of the watch's latest state (-1: none)
    sequence: int
    trusted_until: float  # received + valid_for - MARGIN_MS (monotonic), 0 unless sold out


@dataclass(frozen=True)
class Pushed:
    at: float          # monotonic, as the client received it
    phase: int
    sequence: int
    node: str


def observe(watch: CampaignWatch, cid: str, answers: list[LocalAnswer], pushed: list[Pushed]) -> None:
    """Record every local answer with the watch's state then, and every state pushed (in order)."""
    local_answer, receive = watch.local_answer, watch._receive

    def observed_answer(campaign_id: str) -> pb.ClaimResponse | None:
        reply = local_answer(campaign_id)
        if reply is not None:
            now = time.monotonic()
            got = watch.state(campaign_id)
            trusted = (got.received_at + (got.state.sold_out_valid_for_ms - MARGIN_MS) / 1000
                       if got is not None and got.state.phase == SOLD_OUT else 0.0)
            answers.append(LocalAnswer(now, int(time.time() * 1000), got.state.phase if got else -1,
                                       got.state.sequence if got else -1, trusted))
        return reply

    async def observed_receive(state: pb.CampaignState, node: str) -> None:
        if state.campaign_id == cid:
            pushed.append(Pushed(time.monotonic(), state.phase, state.sequence, node))
        await receive(state, node)

    watch.local_answer = observed_answer  # type: ignore[method-assign]
    watch._receive = observed_receive  # type: ignore[method-assign]


async def claim(client: ClaimClient, history: History, cid: str, user: str, rid: str,
                replies: dict[tuple[str, str], list[pb.ClaimResponse]]) -> None:
    op = history.invoke(cid, user, rid)
    try:
        reply = await client.claim(cid, user, rid, timeout=10)
    except ClaimOutcomeUnknown as err:
        history.failed(op, err.last.code().name if err.last is not None else "UNKNOWN")
    except grpc.aio.AioRpcError as err:
        history.failed(op, err.code().name)
    else:
        history.replied(op, reply)
        replies[(user, rid)].append(reply)


def effective(state, released: int):  # type: ignore[no-untyped-def]
    """The final state as the checker sees a claim-only campaign: a released voucher's stock came
    back (counted in `recycled`) and may be granted again, so the campaign had inventory + recycled
    vouchers to give in all. The released grants stay stored with their users (recycle.lua)."""
    assert state.recycled == released, f"{state.recycled} recycled, {released} released"
    return replace(state, inventory=state.inventory + state.recycled, recycled=0)


def test_the_watching_batching_client_is_exact_through_a_reshard_and_a_release(server, nodes):
    cid = new_campaign_id("cx")
    addresses = [n.address for n in nodes]
    admin = pb_grpc.AdminServiceStub(grpc.insecure_channel(addresses[0]))
    redeem = pb_grpc.RedeemServiceStub(grpc.insecure_channel(addresses[1]))
    admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
        campaign_id=cid, inventory=VOUCHERS, shards=2)), timeout=10)
    history = History()
    replies: dict[tuple[str, str], list[pb.ClaimResponse]] = defaultdict(list)
    answers: list[LocalAnswer] = []
    pushed: list[Pushed] = []
    releases: list[tuple[int, int]] = []  # (wall ms before the call, wall ms after it)
    rng = random.Random(14)

    async def main() -> ClaimClient:
        async with ClaimClient(addresses, watch=True, connections_per_node=2) as client:
            assert client.watch is not None
            observe(client.watch, cid, answers, pushed)

            # The launch, with double taps, and a growth reshard while it runs.
            launch = []
            for i in range(USERS):
                launch.append(claim(client, history, cid, f"u{i}", f"r{i}", replies))
                if i % DOUBLE_TAP_EVERY == 0:
                    launch.append(claim(client, history, cid, f"u{i}", f"r{i}", replies))
            rng.shuffle(launch)
            reshard = asyncio.to_thread(admin.Reshard, pb.ReshardRequest(campaign_id=cid, shards=4),
                                        timeout=60)
            resharded, *_ = await asyncio.gather(reshard, *launch)
            assert resharded.to_shards == 4
            await client.watch.wait_for(cid, SOLD_OUT, min_epoch=resharded.shard_epoch)

            # Latecomers in waves; resends of launch requests; a release in the middle.
            granted = [op for op in history.ops if op.outcome == "GRANTED"]
            assert len({op.user_id for op in granted}) == VOUCHERS
            giving_back = rng.sample(sorted({(op.user_id, op.voucher_id) for op in granted}), RELEASED)

            async def release() -> None:
                await asyncio.sleep(WAVES * WAVE_PAUSE_S / 3)
                for user, voucher in giving_back:
                    before = int(time.time() * 1000)
                    done = await asyncio.to_thread(redeem.Release, pb.ReleaseRequest(
                        campaign_id=cid, user_id=user, voucher_id=voucher), timeout=10)
                    releases.append((before, int(time.time() * 1000)))
                    assert done.released, done.detail

            releaser = asyncio.create_task(release())
            waves = []
            for w in range(WAVES):
                batch = [claim(client, history, cid, f"late{w}-{k}", f"late{w}-{k}", replies)
                         for k in range(WAVE)]
                i = rng.randrange(USERS)
                batch.append(claim(client, history, cid, f"u{i}", f"r{i}", replies))  # a resend
                waves.append(asyncio.gather(*batch))
                await asyncio.sleep(WAVE_PAUSE_S)
            await asyncio.gather(*waves)
            await releaser
            return client

    client = asyncio.run(main())

    # ---- the history against Redis (every call has ended: nothing can write any more)
    with redis.Redis(port=server.port, decode_responses=True) as r:
        state = read_final_state(r, cid)
    report = check_against(history.for_campaign(cid), effective(state, RELEASED))
    assert report.ok, report.summary()
    assert report.lost == 0 and report.duplicates == 0 and report.oversold == 0
    assert state.granted == VOUCHERS + RELEASED, "the released stock was not granted again"
    assert admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30).ok

    # ---- replays: a request sent again after a GRANTED reply gets that voucher again, from a node
    # (one answered SOLD_OUT may be granted later, when returned stock is claimable: it wrote nothing)
    for ops in by_request(history.ops).values():
        granted = [op for op in ops if op.outcome == "GRANTED"]
        if not granted:
            continue
        first = min(granted, key=lambda op: op.t_complete or 0)
        for op in ops:
            if op.t_invoke > (first.t_complete or 0):
                assert (op.outcome, op.voucher_id) == ("GRANTED", first.voucher_id), (first, op)
    for got in replies.values():
        if any(g.outcome == pb.OUTCOME_GRANTED for g in got):
            assert all(g.detail != LOCAL_DETAIL for g in got), got
    resends = [ops for ops in by_request(history.ops).values() if len(ops) > 1]
    assert len(resends) >= USERS // DOUBLE_TAP_EVERY
    for i in range(USERS):  # every launch request went to a node, so its replays go there too
        assert all(g.detail != LOCAL_DETAIL for g in replies[(f"u{i}", f"r{i}")]), f"u{i}"

    # ---- every local answer came while the last pushed state was SOLD_OUT and trusted
    assert client.answered_locally == len(answers) > 0
    assert client.answered_locally == sum(1 for g in replies.values() for r in g if r.detail == LOCAL_DETAIL)
    for a in answers:
        assert a.phase == SOLD_OUT and a.at < a.trusted_until, a
        last = [p for p in pushed if p.at <= a.at][-1]
        assert last.phase == SOLD_OUT and last.sequence == a.sequence, (a, last)

    # ---- the promise: no local SOLD_OUT while a node could have granted the claim
    grant_times = sorted(int(raw.split("|")[1]) for raw in grant_records(server, cid))
    assert len(grant_times) == VOUCHERS + RELEASED
    assert len(releases) == RELEASED
    for a in answers:
        granted_after = sum(1 for g in grant_times if g > a.wall_ms)
        returned_late = sum(1 for _, after in releases if after > a.wall_ms - RETURN_DELAY_MS)
        assert granted_after <= returned_late, (
            f"a local SOLD_OUT at {a.wall_ms} ms, then {granted_after} grants, but only {returned_late} "
            f"vouchers came back later than {RETURN_DELAY_MS} ms before it")
    # the release happened while the client answered locally, and its stock still reached a user
    first_release = releases[0][0]
    assert any(a.wall_ms < first_release for a in answers)
    assert max(grant_times) > first_release


def by_request(ops: list[Op]) -> dict[tuple[str, str], list[Op]]:
    out: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in ops:
        out[(op.user_id, op.request_id)].append(op)
    return out


def grant_records(server: EmbeddedRedis, cid: str) -> list[str]:
    """Every stored grant's record, "voucher|granted_at_ms|channel", over the current shards."""
    from claimcore.store.keyspace import shard_keys

    with redis.Redis(port=server.port, decode_responses=True) as r:
        slots = read_final_state(r, cid).shard_slots
        return [raw for s in range(slots) for raw in r.hvals(shard_keys(cid, s).reqs)]
