"""claim.lua through RedisInventory, against the session's real redis-server (conftest
`redis_server`): grants and the records they write, sold-out shards, the per-user limit,
idempotency by (user, request id), and the window and pause with the order of the checks.

Every test uses its own campaign id; results are compared with exact values, and "nothing
changed" is proved with a dump of Redis taken before and after.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from lua_support import T0, config, get_request, state_of

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store.inventory import Figures, RedisInventory
from claimcore.store.keyspace import shard_keys, voucher_prefix
from claimcore.store.replies import (
    ClaimItem,
    Code,
    ItemResult,
    Record,
    ShardMissing,
    parse_record,
    request_field,
)
from conftest import new_campaign_id, redis_dump
from support import run, users_on

# ------------------------------------------------------------------ 1. grant


def test_grant_writes_vouchers_stock_and_records(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("grant")
    cfg = config(cid, inventory=12, shards=4)
    u1, u2, u3 = users_on(1, 4, 3)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        assert await inv.create_campaign(cfg) is True
        first = await inv.claim(cid, 1, T0, [ClaimItem(u1, "r1", "web"), ClaimItem(u2, "r2", "")])
        second = await inv.claim(cid, 1, T0 + 7, [ClaimItem(u3, "r3", "app")])
        lookups = (
            await get_request(inv, cid, 1, u1, "r1"),
            await get_request(inv, cid, 1, u1, "nope"),
            await get_request(inv, cid, 1, u2, "r1"),     # r1 is u1's request, not u2's
            await get_request(inv, cid, 1, u3, "r3"),
            await inv.lookup(cid, 1, u2),
            await inv.lookup(cid, 1, "nobody"),
            sorted(await inv.all_records(cfg, 1)),
            await inv.figures(cfg),
        )
        return first, second, lookups

    first, second, lookups = run(redis_server, fn)
    v1, v2, v3 = f"{cid}-1-1", f"{cid}-1-2", f"{cid}-1-3"
    assert voucher_prefix(cid, 1) == f"{cid}-1-"
    assert first == (1, [ItemResult(1, v1, T0), ItemResult(1, v2, T0)])
    assert second == (0, [ItemResult(1, v3, T0 + 7)])

    keys = shard_keys(cid, 1)
    assert state_of(redis_client, cid, 1) == {
        "stock": "0", "seq": "3", "granted": "3", "limit": "1", "starts": "0", "ends": "0", "paused": "0",
        "elig": "",
    }
    reqs = redis_client.hgetall(keys.reqs)
    assert request_field(u1, "r1") == f"{u1}|r1"
    assert reqs == {
        f"{u1}|r1": f"{v1}|{T0}|web",
        f"{u2}|r2": f"{v2}|{T0}|",
        f"{u3}|r3": f"{v3}|{T0 + 7}|app",
    }
    assert parse_record(f"{u1}|r1", reqs[f"{u1}|r1"]) == Record(u1, "r1", v1, T0, "web")
    assert parse_record(f"{u2}|r2", reqs[f"{u2}|r2"]) == Record(u2, "r2", v2, T0, "")
    assert redis_client.hgetall(keys.users) == {
        u1: f"1|{v1}|{T0}|r1", u2: f"1|{v2}|{T0}|r2", u3: f"1|{v3}|{T0 + 7}|r3",
    }
    # the other shards are untouched
    for s in (0, 2, 3):
        assert state_of(redis_client, cid, s)["stock"] == "3"
        assert state_of(redis_client, cid, s)["seq"] == "0"
        assert redis_client.exists(shard_keys(cid, s).reqs, shard_keys(cid, s).users) == 0

    req1, missing, wrong_user, found3, user2, nobody, records, fig = lookups
    assert req1 == Record(u1, "r1", v1, T0, "web")
    assert missing is None
    assert wrong_user is None
    assert found3 == Record(u3, "r3", v3, T0 + 7, "app")
    assert user2 == [Record(u2, "r2", v2, T0, "")]
    assert nobody == []
    assert records == sorted([Record(u1, "r1", v1, T0, "web"), Record(u2, "r2", v2, T0, ""),
                              Record(u3, "r3", v3, T0 + 7, "app")])
    assert fig == Figures(remaining=[3, 0, 3, 3], granted=[0, 3, 0, 0], in_leases=0)


def test_full_batch_of_1000_grants_in_one_call(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    """The header allows 1000 triples: all granted, written by one HSET each (unpack of 2000 values)."""
    cid = new_campaign_id("big")
    cfg = config(cid, inventory=1000, shards=1)
    items = [ClaimItem(f"user{i}", f"req{i}", "c") for i in range(1000)]

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        return await inv.claim(cid, 0, T0, items)

    left, results = run(redis_server, fn)
    assert left == 0
    assert results == [ItemResult(1, f"{cid}-0-{i + 1}", T0) for i in range(1000)]
    assert redis_client.hlen(shard_keys(cid, 0).reqs) == 1000
    assert redis_client.hget(shard_keys(cid, 0).reqs, "user999|req999") == f"{cid}-0-1000|{T0}|c"
    assert redis_client.hlen(shard_keys(cid, 0).users) == 1000
    assert redis_client.hget(shard_keys(cid, 0).users, "user999") == f"1|{cid}-0-1000|{T0}|req999"


# ------------------------------------------------------------------ 2. sold out


def test_empty_shard_answers_4_and_writes_nothing(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("empty")
    cfg = config(cid, inventory=4, shards=2)  # 2 per shard
    a, b, c, d = users_on(0, 2, 4)

    async def setup(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        return await inv.claim(cid, 0, T0, [ClaimItem(a, "ra", ""), ClaimItem(b, "rb", "")])

    assert run(redis_server, setup) == (0, [ItemResult(1, f"{cid}-0-1", T0), ItemResult(1, f"{cid}-0-2", T0)])
    before = redis_dump(redis_client, cid)

    async def claims(inv: RedisInventory, client: Any) -> Any:
        alone = await inv.claim(cid, 0, T0 + 1, [ClaimItem(c, "rc", "")])
        mixed = await inv.claim(cid, 0, T0 + 2, [
            ClaimItem(d, "rd", "x"),     # empty
            ClaimItem(a, "ra", ""),      # replay still answered
            ClaimItem(b, "rb2", ""),     # user at limit: 3 before 4
            ClaimItem(c, "ra", ""),      # a's request id, but c's own new claim: empty too
            ClaimItem(c, "rc", ""),      # still empty
        ])
        with pytest.raises(ShardMissing):
            await inv.claim(cid, 2, T0, [ClaimItem(c, "rc", "")])  # no shard 2
        return alone, mixed

    alone, mixed = run(redis_server, claims)
    assert alone == (0, [ItemResult(4, "", 0)])
    assert mixed == (0, [
        ItemResult(4, "", 0),
        ItemResult(2, f"{cid}-0-1", T0),
        ItemResult(3, f"{cid}-0-2", T0),
        ItemResult(4, "", 0),
        ItemResult(4, "", 0),
    ])
    assert redis_dump(redis_client, cid) == before
    # the other shard still has its stock: EMPTY is per shard
    assert state_of(redis_client, cid, 1)["stock"] == "2"


# ------------------------------------------------------------------ 3. per-user limit


def test_duplicate_user_gets_already_claimed_with_first_voucher(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("dup")
    cfg = config(cid, inventory=10, shards=1)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        first = await inv.claim(cid, 0, T0, [ClaimItem("alice", "r1", "web")])
        second = await inv.claim(cid, 0, T0 + 50, [ClaimItem("alice", "r2", "web")])
        # through another channel: at the limit too, but not shown that channel's voucher
        other = await inv.claim(cid, 0, T0 + 60, [ClaimItem("alice", "r3", "app")])
        return (first, second, other, await get_request(inv, cid, 0, "alice", "r2"),
                await inv.lookup(cid, 0, "alice"))

    first, second, other, r2, alice = run(redis_server, fn)
    v1 = f"{cid}-0-1"
    assert first == (9, [ItemResult(1, v1, T0)])
    assert second == (9, [ItemResult(3, v1, T0)])
    assert other == (9, [ItemResult(3, "", 0)])
    assert r2 is None
    assert alice == [Record("alice", "r1", v1, T0, "web")]
    assert state_of(redis_client, cid, 0)["granted"] == "1"


def test_per_user_limit_3(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("lim")
    cfg = config(cid, inventory=20, shards=2, per_user_limit=3)
    user = users_on(1, 2, 1)[0]

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        out = [await inv.claim(cid, 1, T0 + i, [ClaimItem(user, f"r{i}", "c")]) for i in range(1, 5)]
        batch = await inv.claim(cid, 1, T0 + 9, [ClaimItem(user, "r5", "c"), ClaimItem(user, "r2", "c")])
        return out, batch, await inv.lookup(cid, 1, user)

    out, batch, records = run(redis_server, fn)
    v = [f"{cid}-1-{i}" for i in (1, 2, 3)]
    assert out == [
        (9, [ItemResult(1, v[0], T0 + 1)]),
        (8, [ItemResult(1, v[1], T0 + 2)]),
        (7, [ItemResult(1, v[2], T0 + 3)]),
        (7, [ItemResult(3, v[2], T0 + 3)]),  # latest voucher
    ]
    assert batch == (7, [ItemResult(3, v[2], T0 + 3), ItemResult(2, v[1], T0 + 2)])
    assert records == [Record(user, f"r{i}", v[i - 1], T0 + i, "c") for i in (1, 2, 3)]
    assert redis_client.hget(shard_keys(cid, 1).users, user) == f"3|{v[2]}|{T0 + 3}|r1,r2,r3"
    assert redis_client.hlen(shard_keys(cid, 1).reqs) == 3


# ------------------------------------------------------------------ 4. idempotency


def test_replay_and_same_request_id_from_another_user(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    """The idempotency key is (user, request_id): a replay changes nothing; the same request id
    from another user is that user's own new claim."""
    cid = new_campaign_id("replay")
    cfg = config(cid, inventory=5, shards=1, per_user_limit=2)

    async def grant(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        return await inv.claim(cid, 0, T0, [ClaimItem("bob", "rq", "web")])

    v1, v2 = f"{cid}-0-1", f"{cid}-0-2"
    assert run(redis_server, grant) == (4, [ItemResult(1, v1, T0)])
    before = redis_dump(redis_client, cid)

    async def replay(inv: RedisInventory, client: Any) -> Any:
        return (await inv.claim(cid, 0, T0 + 1000, [ClaimItem("bob", "rq", "web")]),
                await inv.claim(cid, 0, T0 + 1000, [ClaimItem("bob", "rq", "other-channel")]))

    same, other = run(redis_server, replay)
    assert same == (4, [ItemResult(2, v1, T0)])  # the first grant's time, not now
    # From another channel: not that channel's grant to see (OTHER_CHANNEL, no voucher id).
    assert other == (4, [ItemResult(Code.OTHER_CHANNEL, "", 0)])
    assert redis_dump(redis_client, cid) == before

    async def other_user(inv: RedisInventory, client: Any) -> Any:
        eve = await inv.claim(cid, 0, T0 + 1000, [ClaimItem("eve", "rq", "app")])
        again = await inv.claim(cid, 0, T0 + 2000, [ClaimItem("eve", "rq", "app"),
                                                    ClaimItem("bob", "rq", "web")])
        return (eve, again, await get_request(inv, cid, 0, "bob", "rq"),
                await get_request(inv, cid, 0, "eve", "rq"))

    eve, again, bob_rec, eve_rec = run(redis_server, other_user)
    assert eve == (3, [ItemResult(1, v2, T0 + 1000)])
    assert again == (3, [ItemResult(2, v2, T0 + 1000), ItemResult(2, v1, T0)])  # each replays its own
    assert bob_rec == Record("bob", "rq", v1, T0, "web")
    assert eve_rec == Record("eve", "rq", v2, T0 + 1000, "app")
    keys = shard_keys(cid, 0)
    assert redis_client.hgetall(keys.reqs) == {"bob|rq": f"{v1}|{T0}|web", "eve|rq": f"{v2}|{T0 + 1000}|app"}
    assert redis_client.hgetall(keys.users) == {"bob": f"1|{v1}|{T0}|rq", "eve": f"1|{v2}|{T0 + 1000}|rq"}
    assert state_of(redis_client, cid, 0)["granted"] == "2"


def test_idempotency_within_one_batch(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("batch")
    cfg = config(cid, inventory=10, shards=1)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        return await inv.claim(cid, 0, T0, [
            ClaimItem("u1", "a", "c1"),   # granted 1
            ClaimItem("u1", "a", "c1"),   # same request again: replay of 1
            ClaimItem("u2", "b", ""),     # granted 2
            ClaimItem("u2", "c", ""),     # same user, new request: at limit, voucher 2
            ClaimItem("u3", "b", ""),     # u2's request id, but (u3, b) is a new claim: granted 3
            ClaimItem("u3", "b", ""),     # replay of u3's own b (voucher 3), not u2's
            ClaimItem("u2", "b", "x"),    # u2's b from another channel: not that channel's grant
            ClaimItem("u3", "d", ""),     # u3 at limit: voucher 3
            ClaimItem("u4", "c", ""),     # c of u2 was refused, and is u2's anyway: granted 4
        ])

    left, results = run(redis_server, fn)
    assert left == 6
    assert results == [
        ItemResult(1, f"{cid}-0-1", T0),
        ItemResult(2, f"{cid}-0-1", T0),
        ItemResult(1, f"{cid}-0-2", T0),
        ItemResult(3, f"{cid}-0-2", T0),
        ItemResult(1, f"{cid}-0-3", T0),
        ItemResult(2, f"{cid}-0-3", T0),
        ItemResult(Code.OTHER_CHANNEL, "", 0),
        ItemResult(3, f"{cid}-0-3", T0),
        ItemResult(1, f"{cid}-0-4", T0),
    ]
    keys = shard_keys(cid, 0)
    assert redis_client.hgetall(keys.reqs) == {
        "u1|a": f"{cid}-0-1|{T0}|c1", "u2|b": f"{cid}-0-2|{T0}|",
        "u3|b": f"{cid}-0-3|{T0}|", "u4|c": f"{cid}-0-4|{T0}|",
    }
    assert redis_client.hgetall(keys.users) == {
        "u1": f"1|{cid}-0-1|{T0}|a", "u2": f"1|{cid}-0-2|{T0}|b",
        "u3": f"1|{cid}-0-3|{T0}|b", "u4": f"1|{cid}-0-4|{T0}|c",
    }
    assert state_of(redis_client, cid, 0) == {
        "stock": "6", "seq": "4", "granted": "4", "limit": "1", "starts": "0", "ends": "0", "paused": "0",
        "elig": "",
    }


def test_same_request_id_from_users_on_other_and_same_shards(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    """proto: Claim is 'Idempotent by (campaign_id, user_id, request_id)'. Request ids come from many
    independent apps, so "shared" from alice (shard 0), bob (shard 1) and carol (shard 0, like alice)
    names three claims: three different vouchers, and each user's replay returns that user's own."""
    cid = new_campaign_id("xrid")
    cfg = config(cid, inventory=8, shards=2)  # 4 per shard
    alice, carol, dave, erin = users_on(0, 2, 4, "a")
    bob = users_on(1, 2, 1, "b")[0]

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        first = [
            await inv.claim(cid, 0, T0, [ClaimItem(alice, "shared", "a")]),
            await inv.claim(cid, 1, T0 + 1, [ClaimItem(bob, "shared", "b")]),
            await inv.claim(cid, 0, T0 + 2, [ClaimItem(carol, "shared", "c")]),
            # two users of one shard with the same id in one batch, then both replayed in the next
            await inv.claim(cid, 0, T0 + 3, [ClaimItem(dave, "dup", ""), ClaimItem(erin, "dup", "")]),
        ]
        replays = [
            await inv.claim(cid, 0, T0 + 100, [ClaimItem(carol, "shared", "c"),
                                               ClaimItem(alice, "shared", "a"),
                                               ClaimItem(erin, "dup", ""), ClaimItem(dave, "dup", "")]),
            await inv.claim(cid, 1, T0 + 100, [ClaimItem(bob, "shared", "b")]),
        ]
        lookups = [
            await get_request(inv, cid, 0, alice, "shared"),
            await get_request(inv, cid, 1, bob, "shared"),
            await get_request(inv, cid, 0, carol, "shared"),
            await get_request(inv, cid, 0, bob, "shared"),   # bob's claim lives on shard 1
            await get_request(inv, cid, 1, alice, "shared"),
        ]
        return first, replays, lookups, await inv.figures(cfg)

    first, replays, lookups, fig = run(redis_server, fn)
    a, c, d, e = (f"{cid}-0-{i}" for i in (1, 2, 3, 4))
    b = f"{cid}-1-1"
    assert first == [
        (3, [ItemResult(1, a, T0)]),
        (3, [ItemResult(1, b, T0 + 1)]),
        (2, [ItemResult(1, c, T0 + 2)]),
        (0, [ItemResult(1, d, T0 + 3), ItemResult(1, e, T0 + 3)]),
    ]
    assert replays == [
        (0, [ItemResult(2, c, T0 + 2), ItemResult(2, a, T0),
             ItemResult(2, e, T0 + 3), ItemResult(2, d, T0 + 3)]),
        (3, [ItemResult(2, b, T0 + 1)]),
    ]
    assert lookups == [
        Record(alice, "shared", a, T0, "a"),
        Record(bob, "shared", b, T0 + 1, "b"),
        Record(carol, "shared", c, T0 + 2, "c"),
        None,
        None,
    ]
    assert redis_client.hgetall(shard_keys(cid, 0).reqs) == {
        f"{alice}|shared": f"{a}|{T0}|a", f"{carol}|shared": f"{c}|{T0 + 2}|c",
        f"{dave}|dup": f"{d}|{T0 + 3}|", f"{erin}|dup": f"{e}|{T0 + 3}|",
    }
    assert redis_client.hgetall(shard_keys(cid, 1).reqs) == {f"{bob}|shared": f"{b}|{T0 + 1}|b"}
    assert fig == Figures(remaining=[0, 3], granted=[4, 1], in_leases=0)


def test_granted_at_of_15_digits_is_stored_and_replayed_exactly(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    """Lua formats numbers with %.14g: 10**14 + 7 as a number would be written '1.0000000000001e+14'."""
    cid = new_campaign_id("bigts")
    cfg = config(cid, inventory=5, shards=1)
    at = 10**14 + 7

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        grant = await inv.claim(cid, 0, at, [ClaimItem("u1", "r1", "web")])
        again = await inv.claim(cid, 0, at + 1000, [ClaimItem("u1", "r1", "web"),
                                                    ClaimItem("u1", "r2", "web")])
        return (grant, again, await get_request(inv, cid, 0, "u1", "r1"), await inv.lookup(cid, 0, "u1"),
                await inv.all_records(cfg, 0))

    grant, again, rec, user_recs, records = run(redis_server, fn)
    v = f"{cid}-0-1"
    assert grant == (4, [ItemResult(1, v, at)])
    assert again == (4, [ItemResult(2, v, at), ItemResult(3, v, at)])  # replay and at-limit answers
    assert rec == Record("u1", "r1", v, at, "web")
    assert user_recs == [rec] and records == [rec]
    keys = shard_keys(cid, 0)
    assert redis_client.hget(keys.reqs, "u1|r1") == f"{v}|100000000000007|web"
    assert redis_client.hget(keys.users, "u1") == f"1|{v}|100000000000007|r1"


# ------------------------------------------------------------------ 5. window and pause


def test_window_pause_and_check_order(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("win")
    starts, ends = T0, T0 + 10_000
    cfg = config(cid, inventory=20, shards=1, starts_at_ms=starts, ends_at_ms=ends)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        out: dict[str, Any] = {}

        async def one(label: str, now: int, user: str, rid: str) -> None:
            out[label] = (await inv.claim(cid, 0, now, [ClaimItem(user, rid, "")]))[1][0]

        await one("before", starts - 1, "u1", "r1")
        await one("at_start", starts, "u1", "r1")
        await one("last_ms", ends - 1, "u2", "r2")
        await one("at_end", ends, "u3", "r3")
        await one("after", ends + 5_000, "u3", "r3")
        await one("replay_after_end", ends + 5_000, "u1", "r1")
        await one("limit_after_end", ends + 5_000, "u1", "r1b")
        await one("others_rid_after_end", ends + 5_000, "u3", "r1")  # u1's id: u3's own claim
        await inv.set_paused(cfg, True)
        out["status_paused"] = (await inv.load_campaign(cid)).paused
        await one("paused", starts + 1, "u4", "r4")
        await one("replay_paused", starts + 1, "u2", "r2")
        await one("limit_paused", starts + 1, "u2", "r2b")
        await one("others_rid_paused", starts + 1, "u4", "r2")
        await inv.set_paused(cfg, False)
        out["status_resumed"] = (await inv.load_campaign(cid)).paused
        await one("resumed", starts + 2, "u4", "r4")
        return out

    out = run(redis_server, fn)
    v1, v2, v3 = f"{cid}-0-1", f"{cid}-0-2", f"{cid}-0-3"
    assert out == {
        "before": ItemResult(5, "", 0),
        "at_start": ItemResult(1, v1, starts),
        "last_ms": ItemResult(1, v2, ends - 1),
        "at_end": ItemResult(6, "", 0),
        "after": ItemResult(6, "", 0),
        "replay_after_end": ItemResult(2, v1, starts),
        "limit_after_end": ItemResult(3, v1, starts),
        "others_rid_after_end": ItemResult(6, "", 0),
        "status_paused": True,
        "paused": ItemResult(7, "", 0),
        "replay_paused": ItemResult(2, v2, ends - 1),
        "limit_paused": ItemResult(3, v2, ends - 1),
        "others_rid_paused": ItemResult(7, "", 0),
        "status_resumed": False,
        "resumed": ItemResult(1, v3, starts + 2),
    }
    assert state_of(redis_client, cid, 0)["granted"] == "3"
    assert state_of(redis_client, cid, 0)["paused"] == "0"


def test_closed_comes_before_empty_and_limit_before_closed(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    """Order: replay, user limit, window/pause, stock. An empty, paused shard says 7, not 4."""
    cid = new_campaign_id("order")
    cfg = config(cid, inventory=1, shards=1, ends_at_ms=T0 + 100)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        grant = await inv.claim(cid, 0, T0, [ClaimItem("u1", "r1", "")])
        empty = await inv.claim(cid, 0, T0, [ClaimItem("u2", "r2", "")])
        ended = await inv.claim(cid, 0, T0 + 100, [ClaimItem("u2", "r2", "")])
        await inv.set_paused(cfg, True)
        paused = await inv.claim(cid, 0, T0, [ClaimItem("u2", "r2", ""), ClaimItem("u1", "r9", "")])
        return grant, empty, ended, paused

    grant, empty, ended, paused = run(redis_server, fn)
    assert grant == (0, [ItemResult(1, f"{cid}-0-1", T0)])
    assert empty == (0, [ItemResult(4, "", 0)])
    assert ended == (0, [ItemResult(6, "", 0)])
    assert paused == (0, [ItemResult(7, "", 0), ItemResult(3, f"{cid}-0-1", T0)])
