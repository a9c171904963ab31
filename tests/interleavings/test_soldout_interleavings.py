"""The sold-out snapshot against everything that can change under it (issue 12, defects 7, 8, 14).

Real redis-server, real nodes (LocalNode), real gRPC. A node answers claims of a sold-out campaign
from its snapshot without Redis; these tests change the world under it and check that it never
answers what claim.lua would not:
- a growth reshard, then stock back on a new shard (defect 7);
- stock back, granted on another node, then the retry of that grant here (defect 8), also for a
  round released by Redis's clock while this node's clock is behind;
- a replay from another channel, through Redis and through the snapshot (defect 14);
- PAUSED and NOT_ELIGIBLE, in claim.lua's order.
Nothing here waits a fixed time for a result: every wait polls for a state, with a deadline.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from claimcore._fast import shard_of
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.security.access import Access
from claimcore.store.keyspace import shard_keys
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from conftest import LocalNode, new_campaign_id
from support import keygen

T = TypeVar("T")
BEHIND_MS = 3000  # node `late`'s clock is this far behind


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    """A Redis of this module's own: counting script calls must see only these nodes'."""
    with EmbeddedRedis() as s:
        yield s


@pytest.fixture(scope="module")
def client(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    c = redis.Redis(port=server.port, decode_responses=True)
    yield c
    c.close()


@pytest.fixture(scope="module")
def nodes(server: EmbeddedRedis) -> Iterator[dict[str, LocalNode]]:
    """Two nodes with true clocks, and one whose clock is BEHIND_MS behind."""
    started = {"a": LocalNode(server.url, "--recycle-every-s", "0"),
               "b": LocalNode(server.url, "--recycle-every-s", "0"),
               "late": LocalNode(server.url, "--recycle-every-s", "0",
                                 env={"CLAIMCORE_TEST_CLOCK_OFFSET_MS": str(-BEHIND_MS)})}
    try:
        for n in started.values():
            n.start()
        yield started
    finally:
        for n in started.values():
            n.stop()


class Stubs:
    def __init__(self, node: LocalNode, key: str = "") -> None:
        channel = Access(api_key=key).channel(node.address)
        self.claims = pb_grpc.ClaimServiceStub(channel)
        self.admin = pb_grpc.AdminServiceStub(channel)
        self.redeem = pb_grpc.RedeemServiceStub(channel)

    def claim(self, cid: str, user: str, rid: str = "r", channel: str = "") -> pb.ClaimResponse:
        return self.claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid,
                                                 channel_id=channel), timeout=10)


@pytest.fixture(scope="module")
def a(nodes) -> Stubs:
    return Stubs(nodes["a"])


@pytest.fixture(scope="module")
def b(nodes) -> Stubs:
    return Stubs(nodes["b"])


def create(stubs: Stubs, **fields: object) -> str:
    cid = new_campaign_id("so")
    stubs.admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(campaign_id=cid, **fields)),
                               timeout=10)
    return cid


def script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def until(what: Callable[[], T], ok: Callable[[T], bool], within_s: float = 15) -> T:
    """Call `what` until its reply is ok (every 20 ms), for at most within_s; the last reply."""
    deadline = time.monotonic() + within_s
    reply = what()
    while not ok(reply) and time.monotonic() < deadline:
        time.sleep(0.02)
        reply = what()
    return reply


def answered_locally(stubs: Stubs, client: redis.Redis, cid: str, user: str) -> tuple[pb.ClaimResponse, bool]:
    before = script_calls(client)
    reply = stubs.claim(cid, user, "probe")
    return reply, script_calls(client) == before


def snapshot_answers(stubs: Stubs, client: redis.Redis, cid: str) -> None:
    """Wait until the node answers a newcomer SOLD_OUT from its snapshot, without a script call."""
    count = iter(range(1_000_000))

    def probe() -> tuple[pb.ClaimResponse, bool]:
        return answered_locally(stubs, client, cid, f"probe{next(count)}")

    deadline = time.monotonic() + 15
    reply, local = probe()
    while not (local and reply.outcome == pb.OUTCOME_SOLD_OUT) and time.monotonic() < deadline:
        time.sleep(0.05)
        reply, local = probe()
    assert local and reply.outcome == pb.OUTCOME_SOLD_OUT, short_name(pb.Outcome, reply.outcome)


def users_on(shards: int, wanted: Callable[[int], bool], n: int, prefix: str = "u") -> list[str]:
    found = []
    i = 0
    while len(found) < n:
        if wanted(shard_of(f"{prefix}{i}", shards)):
            found.append(f"{prefix}{i}")
        i += 1
    return found


def test_stock_back_on_a_shard_a_growth_reshard_made_reopens_the_campaign(a, client):
    """Defect 7: the node's checks read the campaign's current map, not the one it sold out on."""
    mover = users_on(4, lambda s: s >= 2, 1, "m")[0]  # on a shard the growth makes
    stayers = users_on(4, lambda s: s < 2, 3, "s")
    cid = create(a, inventory=4, shards=2)
    vouchers = {u: a.claim(cid, u) for u in [mover, *stayers]}
    assert all(r.outcome == pb.OUTCOME_GRANTED for r in vouchers.values())
    assert a.claim(cid, "late").outcome == pb.OUTCOME_SOLD_OUT
    snapshot_answers(a, client, cid)

    grown = a.admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=4), timeout=60)
    assert grown.to_shards == 4 and grown.moved_users >= 1
    released = a.redeem.Release(pb.ReleaseRequest(campaign_id=cid, user_id=mover,
                                                  voucher_id=vouchers[mover].voucher.voucher_id), timeout=10)
    assert released.released

    late = until(lambda: a.claim(cid, "late"), lambda r: r.outcome != pb.OUTCOME_SOLD_OUT)
    assert late.outcome == pb.OUTCOME_GRANTED
    assert a.claim(cid, "later").outcome == pb.OUTCOME_SOLD_OUT
    assert a.admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30).ok


def test_the_retry_of_a_grant_made_on_another_node_gets_its_voucher(a, b, client):
    """Defect 8: stock comes back, node b grants it, the caller retries on node a, which holds a
    sold-out snapshot: a answers the retry with the grant, whenever its own check runs. Node b
    never sold out at first, so it asks Redis at once: before the fix b granted the stock the
    moment it came back, while a's snapshot still answered SOLD_OUT until its next check."""
    users = ["x1", "x2", "x3"]
    cid = create(a, inventory=3, shards=2)
    vouchers = {u: a.claim(cid, u).voucher.voucher_id for u in users}
    assert all(vouchers.values())
    assert a.claim(cid, "nobody").outcome == pb.OUTCOME_SOLD_OUT
    for n, user in enumerate(users[:2]):
        snapshot_answers(a, client, cid)
        assert a.redeem.Release(pb.ReleaseRequest(campaign_id=cid, user_id=user, voucher_id=vouchers[user]),
                                timeout=10).released
        latecomer = f"late{n}"
        first = until(lambda u=latecomer: b.claim(cid, u), lambda r: r.outcome == pb.OUTCOME_GRANTED)
        retry = a.claim(cid, latecomer)
        assert first.outcome == pb.OUTCOME_GRANTED
        assert retry.outcome == pb.OUTCOME_GRANTED, f"round {n}: {short_name(pb.Outcome, retry.outcome)}"
        assert retry.voucher.voucher_id == first.voucher.voucher_id
        # sold out again: a goes back to its snapshot
        until(lambda rid=f"again{n}": a.claim(cid, "nobody", rid), lambda r: r.outcome == pb.OUTCOME_SOLD_OUT)


def test_a_round_is_seen_by_redis_time_on_a_node_whose_clock_is_behind(nodes, b, client):
    """Defect 8, rounds: the round is credited when Redis's clock reaches its time; a node whose
    clock is behind stops answering from its snapshot by then, not by its own clock."""
    late = Stubs(nodes["late"])
    release_at = client.time()[0] * 1000 + 8000  # by Redis's clock: time to sell out first
    cid = create(b, inventory=4, shards=2, rounds=[pb.Round(release_at_ms=release_at, amount=2)])
    assert b.claim(cid, "p").outcome == pb.OUTCOME_GRANTED
    assert late.claim(cid, "q").outcome == pb.OUTCOME_GRANTED
    for stubs in (b, late):
        assert stubs.claim(cid, "nobody").outcome == pb.OUTCOME_SOLD_OUT
        snapshot_answers(stubs, client, cid)

    first = until(lambda: b.claim(cid, "eager"), lambda r: r.outcome == pb.OUTCOME_GRANTED)
    retry = late.claim(cid, "eager")
    assert first.outcome == pb.OUTCOME_GRANTED
    assert retry.outcome == pb.OUTCOME_GRANTED and retry.voucher.voucher_id == first.voucher.voucher_id
    assert late.claim(cid, "other").outcome == pb.OUTCOME_GRANTED  # the round's second voucher


def test_a_replay_from_another_channel_learns_nothing_through_redis_or_the_snapshot(a, client):
    """Defect 14: a replay answers as recorded, to the channel that was granted only."""
    cid = create(a, inventory=2, shards=2)
    granted = a.claim(cid, "ann", "r1", channel="web")
    assert granted.outcome == pb.OUTCOME_GRANTED and granted.voucher.channel_id == "web"
    for where in ("redis", "snapshot"):
        if where == "snapshot":
            assert a.claim(cid, "bob").outcome == pb.OUTCOME_GRANTED
            assert a.claim(cid, "cy").outcome == pb.OUTCOME_SOLD_OUT
            snapshot_answers(a, client, cid)
        before = script_calls(client)
        other = a.claim(cid, "ann", "r1", channel="app")
        same = a.claim(cid, "ann", "r1", channel="web")
        assert (script_calls(client) == before) == (where == "snapshot")
        assert other.outcome == pb.OUTCOME_ALREADY_CLAIMED and not other.HasField("voucher"), where
        assert same.outcome == pb.OUTCOME_GRANTED and same.voucher == granted.voucher, where


@pytest.fixture(scope="module")
def secured(server: EmbeddedRedis) -> Iterator[tuple[LocalNode, dict[str, str]]]:
    keys = {"admin": keygen("--admin"), "web": keygen("--channel", "web"), "app": keygen("--channel", "app")}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "credentials.toml"
        path.write_text(f"[admin]\n{keys['admin'][1]}\n\n[channels.web]\n{keys['web'][1]}\n\n"
                        f"[channels.app]\n{keys['app'][1]}\n")
        node = LocalNode(server.url, "--credentials", str(path), "--recycle-every-s", "0").start()
        try:
            yield node, {name: key for name, (key, _) in keys.items()}
        finally:
            node.stop()


def test_channels_see_only_their_own_grants_in_replays_and_get_claim(secured, client):
    """Defect 14 with channel keys: the replay and GetClaim both hide another channel's grant."""
    node, keys = secured
    admin, web, app = Stubs(node, keys["admin"]), Stubs(node, keys["web"]), Stubs(node, keys["app"])
    cid = create(admin, inventory=1, shards=1)
    granted = web.claim(cid, "ann", "r1")
    assert granted.outcome == pb.OUTCOME_GRANTED and granted.voucher.channel_id == "web"
    assert web.claim(cid, "bob").outcome == pb.OUTCOME_SOLD_OUT
    for _ in ("redis or snapshot", "snapshot"):
        other = app.claim(cid, "ann", "r1")
        assert other.outcome == pb.OUTCOME_ALREADY_CLAIMED and not other.HasField("voucher")
        assert web.claim(cid, "ann", "r1").voucher == granted.voucher
        assert not app.claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="ann", request_id="r1"),
                                       timeout=10).found
        assert not app.claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="ann"), timeout=10).found
        mine = web.claims.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="ann"), timeout=10)
        assert [v.voucher_id for v in mine.vouchers] == [granted.voucher.voucher_id]
        snapshot_answers(web, client, cid)


def test_the_snapshot_answers_paused_like_claim_lua_and_without_redis(a, client):
    cid = create(a, inventory=2, shards=2)
    granted = a.claim(cid, "ann")
    assert a.claim(cid, "al").outcome == pb.OUTCOME_GRANTED
    assert a.claim(cid, "bob").outcome == pb.OUTCOME_SOLD_OUT
    snapshot_answers(a, client, cid)
    a.admin.PauseCampaign(pb.PauseCampaignRequest(campaign_id=cid), timeout=10)
    until(lambda: a.claim(cid, "cy"), lambda r: r.outcome == pb.OUTCOME_PAUSED)
    for n in range(20):
        reply, local = answered_locally(a, client, cid, f"p{n}")
        assert reply.outcome == pb.OUTCOME_PAUSED and local
    limited, local = answered_locally(a, client, cid, "ann")  # the limit comes before the pause
    assert local and limited.outcome == pb.OUTCOME_ALREADY_CLAIMED
    assert limited.voucher.voucher_id == granted.voucher.voucher_id
    a.admin.ResumeCampaign(pb.ResumeCampaignRequest(campaign_id=cid), timeout=10)
    cy = until(lambda: a.claim(cid, "cy"), lambda r: r.outcome == pb.OUTCOME_SOLD_OUT)
    assert cy.outcome == pb.OUTCOME_SOLD_OUT


def test_the_snapshot_leaves_eligibility_to_redis(a, client):
    """A campaign with eligibility data: a denied user hears NOT_ELIGIBLE after sold out too."""
    cid = create(a, inventory=2, shards=2)
    a.admin.UpdateEligibility(pb.UpdateEligibilityRequest(campaign_id=cid, records=[
        pb.EligibilityRecord(user_id="denied", denied=True)]), timeout=10)
    assert a.claim(cid, "ann").outcome == a.claim(cid, "al").outcome == pb.OUTCOME_GRANTED
    assert a.claim(cid, "bob").outcome == pb.OUTCOME_SOLD_OUT
    loaded = until(lambda: answered_locally(a, client, cid, "ann"), lambda r: r[1])  # the snapshot is in
    assert loaded[1] and loaded[0].outcome == pb.OUTCOME_ALREADY_CLAIMED
    for _ in range(3):
        assert a.claim(cid, "denied").outcome == pb.OUTCOME_NOT_ELIGIBLE
        assert a.claim(cid, "cy").outcome == pb.OUTCOME_SOLD_OUT
        replay, local = answered_locally(a, client, cid, "ann")
        assert replay.outcome == pb.OUTCOME_ALREADY_CLAIMED and local  # the limit comes before eligibility


def test_a_snapshot_its_checks_cannot_confirm_stops_answering_negatively(a, client):
    """Defect 8's rule itself: a snapshot answers SOLD_OUT only shortly after a check confirmed it.
    Here every check fails (a key the figures read is made unreadable): within SNAPSHOT_TRUST_MS the
    newcomers' claims go to Redis, which answers them, while a replay found in the snapshot is still
    answered locally (a grant record is never taken back)."""
    cid = create(a, inventory=2, shards=2)
    granted = a.claim(cid, "ann")
    assert a.claim(cid, "al").outcome == pb.OUTCOME_GRANTED
    assert a.claim(cid, "bob").outcome == pb.OUTCOME_SOLD_OUT
    snapshot_answers(a, client, cid)
    broken = shard_keys(cid, 0).leases
    client.set(broken, "not a hash")  # figures() now fails: no check can confirm the snapshot
    try:
        count = iter(range(1_000_000))
        asked = until(lambda: answered_locally(a, client, cid, f"n{next(count)}"), lambda r: not r[1])
        assert not asked[1] and asked[0].outcome == pb.OUTCOME_SOLD_OUT
        limited, local = answered_locally(a, client, cid, "ann")  # another request: Redis decides
        assert not local and limited.outcome == pb.OUTCOME_ALREADY_CLAIMED
        before = script_calls(client)
        assert a.claim(cid, "ann", "r") == granted and script_calls(client) == before
    finally:
        client.delete(broken)
    snapshot_answers(a, client, cid)  # checks confirm it again
