"""The Lua scripts and RedisInventory against a real redis-server.

Everything here talks to the session's redis-server (conftest `redis_server`)
or, for the cluster checks, to a private single-node Redis Cluster. Every test
uses its own campaign id; results are compared with exact values, and "nothing
changed" is proved with a dump of Redis taken before and after.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.store import scripts
from claimcore.store.inventory import BORROW_CHUNK, Figures, RedisInventory
from claimcore.store.keyspace import CAMPAIGN_INDEX, campaign_key, shard_keys, voucher_prefix
from claimcore.store.replies import (
    BorrowContention,
    CampaignConflict,
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

T0 = 1_700_000_000_000  # a realistic unix-ms instant, used as "now" where the test controls time

# ------------------------------------------------------------------ helpers


def conserved(fig: Figures, inventory: int) -> bool:
    return sum(fig.remaining) + fig.in_leases + sum(fig.granted) == inventory


def state_of(client: redis.Redis, cid: str, shard: int) -> dict[str, str]:
    return client.hgetall(shard_keys(cid, shard).state)


def config(cid: str, inventory: int, shards: int, **kw: Any) -> CampaignConfig:
    return CampaignConfig(campaign_id=cid, inventory=inventory, shards=shards, **kw)


async def get_request(inv: RedisInventory, cid: str, shard: int, user: str, rid: str) -> Record | None:
    found = await inv.lookup(cid, shard, user, rid)
    return found[0] if found else None


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


# ------------------------------------------------------------------ 6. NOSCRIPT


def test_scripts_reload_after_script_flush(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    for script in scripts.ALL:
        assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()
        assert redis_client.script_load(script.source) == script.sha

    cid = new_campaign_id("flush")
    cfg = config(cid, inventory=6, shards=2)
    users0, users1 = users_on(0, 2, 4), users_on(1, 2, 1)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        out = []
        await client.script_flush()
        out.append(await client.script_exists(*(s.sha for s in scripts.ALL)))
        out.append(await inv.create_campaign(cfg))     # CREATE_CAMPAIGN + INIT_SHARD reload
        await client.script_flush()
        out.append(await inv.claim(cid, 0, T0, [ClaimItem(u, "r" + u, "") for u in users0[:3]]))
        out.append(await client.script_exists(scripts.CLAIM.sha))
        await client.script_flush()
        out.append(await inv.claim(cid, 0, T0, [ClaimItem(users0[3], "x", "")]))
        await client.script_flush()
        out.append(await inv.borrow(cfg, 0, 1))        # LEND + CREDIT reload
        await client.script_flush()
        out.append(await inv.claim(cid, 0, T0 + 1, [ClaimItem(users0[3], "x", "")]))
        out.append(await inv.claim(cid, 1, T0 + 2, [ClaimItem(users1[0], "y", "")]))
        out.append(await inv.figures(cfg))
        return out

    out = run(redis_server, fn)
    assert out[0] == [False] * len(scripts.ALL)
    assert out[1] is True
    assert out[2] == (0, [ItemResult(1, f"{cid}-0-{i}", T0) for i in (1, 2, 3)])
    assert out[3] == [True]
    assert out[4] == (0, [ItemResult(4, "", 0)])
    assert out[5] == 1   # donor shard 1 has 3: gives max(1, min(64, 3 // 2)) = 1
    assert out[6] == (0, [ItemResult(1, f"{cid}-0-4", T0 + 1)])
    assert out[7] == (1, [ItemResult(1, f"{cid}-1-1", T0 + 2)])
    assert out[8] == Figures(remaining=[0, 1], granted=[4, 1], in_leases=0)


def test_scripts_reload_after_redis_restart(tmp_path: Any) -> None:
    """A restart empties the script cache but (AOF) keeps the data: grants survive, claims go on."""
    server = EmbeddedRedis(appendfsync="always", data_dir=str(tmp_path)).start()
    try:
        cid = new_campaign_id("restart")
        cfg = config(cid, inventory=3, shards=1)

        async def before(inv: RedisInventory, client: Any) -> Any:
            await inv.create_campaign(cfg)
            return await inv.claim(cid, 0, T0, [ClaimItem("u1", "r1", "")])

        async def after(inv: RedisInventory, client: Any) -> Any:
            exists = await client.script_exists(scripts.CLAIM.sha)
            claimed = await inv.claim(cid, 0, T0 + 1, [ClaimItem("u1", "r1", ""), ClaimItem("u2", "r2", "")])
            return exists, claimed, await inv.load_campaign(cid)

        assert run(server, before) == (2, [ItemResult(1, f"{cid}-0-1", T0)])
        server.stop()
        server.start()
        exists, claimed, status = run(server, after)
        assert exists == [False]
        assert claimed == (1, [ItemResult(2, f"{cid}-0-1", T0), ItemResult(1, f"{cid}-0-2", T0 + 1)])
        assert status is not None and status.config == cfg
    finally:
        server.stop()


# ------------------------------------------------------------------ 7. slots


def test_every_shard_lives_in_one_slot_and_shards_spread() -> None:
    cid = "slots-campaign-7"
    shards = 16
    campaign_slot = key_slot(campaign_key(cid).encode())
    assert campaign_slot == key_slot(cid.encode())
    shard_slots = []
    for s in range(shards):
        keys = shard_keys(cid, s)
        slots = {key_slot(k.encode()) for k in keys}
        assert slots == {key_slot(f"{cid}:{s}".encode())}, (s, keys)
        shard_slots.append(slots.pop())
    assert campaign_slot not in shard_slots
    assert len(set(shard_slots)) >= 12
    assert key_slot(CAMPAIGN_INDEX.encode()) not in {campaign_slot, *shard_slots}
    # the five keys of keyspace.py's header, in order
    suffixes = [k.rsplit(":", 1)[1] for k in shard_keys(cid, 3)]
    assert suffixes == ["state", "users", "reqs", "leases", "credited", "log", "redeem", "elig", "eligcalls"]


def test_script_headers_declare_single_slot_keys() -> None:
    """Each script names its KEYS in the header; all are keys of one shard (or the campaign key)."""
    expected = {
        "claim": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:log", "cc:{C:s}:elig"],
        "credit": ["cc:{C:s}:state", "cc:{C:s}:credited"],
        "lend": ["cc:{C:d}:state", "cc:{C:d}:leases"],
        "init_shard": ["cc:{C:s}:state"],
        "create_campaign": ["cc:{C}:campaign"],
        "fence": ["cc:{C:s}:state"],
        "adopt": ["cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:elig", "cc:{C:s}:state"],
        "export": ["cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:elig"],
        "forget": ["cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:elig"],
        "eligibility": ["cc:{C:s}:state", "cc:{C:s}:elig", "cc:{C:s}:eligcalls"],
        "holds": ["cc:{sn:b}:sns"],
        "stack": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:log"],
        "recycle": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:log"],
        "redeem": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:log"],
        "reverse": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem", "cc:{C:s}:log"],
        "lookup": ["cc:{C:s}:state", "cc:{C:s}:users", "cc:{C:s}:reqs", "cc:{C:s}:redeem"],
        "lock": ["cc:{C}:reshard"],
        "begin_reshard": ["cc:{C}:campaign"],
    }
    for script in scripts.ALL:
        declared = [line.split()[2] for line in script.source.splitlines() if line.startswith("-- KEYS[")]
        assert declared == expected[script.name]
        assert len({k[k.index("{"):k.index("}") + 1] for k in declared}) == 1
        assert script.source.startswith("#!lua\n")  # shebang: Redis 7 refuses undeclared cross-slot keys


@pytest.fixture(scope="module")
def cluster_server() -> Iterator[EmbeddedRedis]:
    """A single-node Redis Cluster holding all 16384 slots: it refuses cross-slot scripts."""
    data = tempfile.mkdtemp(prefix="claimcore-cluster-")
    # the cluster bus port defaults to port + 10000, which may be taken or above 65535: pick it
    server = EmbeddedRedis(data_dir=data, extra_args=[
        "--cluster-enabled", "yes", "--cluster-config-file", f"{data}/nodes.conf",
        "--cluster-port", str(free_port())]).start()
    try:
        client = redis.Redis(port=server.port, decode_responses=True)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 15
        while client.cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "cluster did not become ok"
            time.sleep(0.05)
        client.close()
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def test_whole_inventory_runs_on_redis_cluster(cluster_server: EmbeddedRedis) -> None:
    """Every call of RedisInventory works on a cluster, so no script touches two slots."""
    cid = new_campaign_id("cluster")
    shards = 16
    cfg = config(cid, inventory=64, shards=shards)  # 4 per shard

    async def main() -> Any:
        plain = redis.asyncio.Redis(port=cluster_server.port, decode_responses=True)
        client = RedisCluster(host="127.0.0.1", port=cluster_server.port, decode_responses=True)
        try:
            # the control: this server does refuse a script that strays into another slot
            k0, k1 = shard_keys(cid, 0).state, shard_keys(cid, 1).state
            with pytest.raises(redis.ResponseError, match="same slot"):
                await plain.eval("#!lua\nreturn redis.call('EXISTS', ARGV[1])", 1, k0, k1)
            with pytest.raises(redis.ResponseError, match="slot"):
                await plain.eval("#!lua\nreturn 1", 2, k0, k1)

            inv = RedisInventory(client)
            assert await inv.create_campaign(cfg) is True
            assert await inv.create_campaign(cfg) is False
            granted = 0
            for s in range(shards):
                users = users_on(s, shards, 5, f"c{s}-")
                _, res = await inv.claim(cid, s, T0, [ClaimItem(u, f"q-{u}", "") for u in users])
                assert [r.code for r in res] == [1, 1, 1, 1, 4]
                granted += 4
            # all empty now: put a lease in flight by hand, then let borrow settle and move it
            await client.hset(shard_keys(cid, 5).state, "stock", 3)  # restock shard 5 (test only)
            taken, left, _ = await scripts.LEND(client, [shard_keys(cid, 5).state, shard_keys(cid, 5).leases],
                                                [3, "lease-x", 9, T0, 0])
            assert (taken, left) == (3, 0)
            mid = await inv.figures(cfg)
            moved = await inv.borrow(cfg, 0, 1)
            after_borrow = await inv.figures(cfg)
            _, res = await inv.claim(cid, 0, T0, [ClaimItem(users_on(0, shards, 6, "c0-")[5], "late", "")])
            await inv.set_paused(cfg, True)
            status = await inv.load_campaign(cid)
            user = users_on(3, shards, 1, "c3-")[0]
            return (mid, moved, after_borrow, res, status.paused, await inv.lookup(cid, 3, user),
                    await get_request(inv, cid, 3, user, f"q-{user}"), len(await inv.all_records(cfg, 3)),
                    await inv.settle_leases(cfg), await inv.figures(cfg), await inv.list_campaigns())
        finally:
            await client.aclose()
            await plain.aclose()

    (mid, moved, after_borrow, res, paused, user_records, found, n3, settled, final,
     listed) = asyncio.run(main())
    assert mid.in_leases == 3 and mid.remaining == [0] * shards
    # nothing to lend, so borrow settles the lease (3 into shard 9), then takes
    # max(1, min(64, 3 // 2)) = 1 from shard 9
    assert moved == 1
    assert after_borrow.in_leases == 0
    assert after_borrow.remaining == [1] + [0] * 8 + [2] + [0] * 6
    assert res == [ItemResult(1, f"{cid}-0-5", T0)]
    assert paused is True
    assert len(user_records) == 1 and found == user_records[0]
    assert n3 == 4
    assert settled == 0
    assert final.in_leases == 0 and sum(final.granted) == 65 and sum(final.remaining) == 2
    assert cid in listed


# ------------------------------------------------------------------ 8. borrowing and conservation


def test_borrow_moves_stock_and_conserves(redis_server: EmbeddedRedis) -> None:
    cid = new_campaign_id("borrow")
    cfg = config(cid, inventory=100, shards=4)
    log: list[tuple[str, Any]] = []

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)

        async def check(step: str) -> Figures:
            fig = await inv.figures(cfg)
            assert conserved(fig, 100), (step, fig)
            return fig

        await check("created")
        users0 = users_on(0, 4, 30, "z")
        results = []
        for u in users0:
            _, (r,) = await inv.claim(cid, 0, T0, [ClaimItem(u, "r-" + u, "")])
            results.append(r.code)
            await check(f"claim {u}")
            if r.code == Code.EMPTY:
                break
        log.append(("drain0", results))
        moved = await inv.borrow(cfg, 0, 5)
        log.append(("borrow", (moved, await check("borrow"))))

        # now everything, users spread over all shards, borrowing on EMPTY like the batcher
        codes: Counter[int] = Counter()
        vouchers = []
        sold_out = 0
        i = 0
        while sold_out < 20:
            user = f"spread{i}"
            i += 1
            shard = shard_of(user, 4)
            while True:
                _, (r,) = await inv.claim(cid, shard, T0, [ClaimItem(user, "r-" + user, "")])
                await check(f"claim {user}")
                if r.code != Code.EMPTY:
                    codes[r.code] += 1
                    vouchers.append(r.voucher_id)
                    break
                got = await inv.borrow(cfg, shard, 1)
                await check(f"borrow for {user}")
                if not got:
                    sold_out += 1
                    break
        log.append(("spread", codes))
        log.append(("unique", len(set(vouchers)) == len(vouchers)))
        log.append(("final", await check("final")))
        log.append(("borrow_each", [await inv.borrow(cfg, s, 1) for s in range(4)]))
        return log

    out = dict(run(redis_server, fn))
    assert out["drain0"] == [1] * 25 + [4]
    # donors 1, 2, 3 hold 25 each; the first gives max(5, min(BORROW_CHUNK, 25 // 2)) = 12
    assert BORROW_CHUNK == 64
    assert out["borrow"] == (12, Figures(remaining=[12, 13, 25, 25], granted=[25, 0, 0, 0], in_leases=0))
    assert out["spread"] == Counter({1: 75})
    assert out["unique"] is True
    assert out["final"] == Figures(remaining=[0, 0, 0, 0], granted=out["final"].granted, in_leases=0)
    assert sum(out["final"].granted) == 100
    assert out["borrow_each"] == [0, 0, 0, 0]


def test_borrow_from_missing_or_empty_campaign_returns_0(redis_server: EmbeddedRedis) -> None:
    cid = new_campaign_id("nob")
    cfg = config(cid, inventory=2, shards=2)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        not_created = await inv.borrow(cfg, 0, 1)
        keys1 = shard_keys(cid, 1)
        lend_missing = await scripts.LEND(client, [keys1.state, keys1.leases], [5, "l", 0, T0, 0])
        await inv.create_campaign(cfg)
        own_stock = await inv.borrow(cfg, 0, 1)  # shard 1 gives its 1 unit
        return not_created, lend_missing, own_stock, await inv.figures(cfg), await client.exists(
            shard_keys(cid, 1).leases)

    not_created, lend_missing, moved, fig, leases = run(redis_server, fn)
    assert not_created == 0
    assert lend_missing == [0, 0, 0]
    assert moved == 1
    assert fig == Figures(remaining=[2, 0], granted=[0, 0], in_leases=0)
    assert leases == 1  # the lease record stays, marked credited (a resent LEND must find it)


class StealingClient(redis.asyncio.Redis):
    """A real client to the real server, with one hook: `before_lend` runs just before each of this
    client's lend.lua calls. It lets a second borrower act at exactly that moment, deterministically."""

    before_lend: Callable[[str], Awaitable[None]] | None = None

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:  # type: ignore[override]
        if sha == scripts.LEND.sha and self.before_lend is not None:
            await self.before_lend(keys_and_args[0])
        return await super().evalsha(sha, numkeys, *keys_and_args)


def test_borrow_does_not_report_empty_while_stock_moves(redis_server: EmbeddedRedis) -> None:
    """0 from borrow means 'the campaign is empty' (the batcher answers SOLD_OUT). Here 4 vouchers
    exist all along: each time A picks a donor, another node's borrower moves that donor's stock
    to the third shard first. Acceptable answers: > 0, or BorrowContention (retryable); not 0."""
    cid = new_campaign_id("steal")
    cfg = config(cid, inventory=6, shards=3)  # 2 per shard

    async def main() -> Any:
        a_client = StealingClient(port=redis_server.port, decode_responses=True)
        b_client = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
        try:
            a, b = RedisInventory(a_client), RedisInventory(b_client)
            await b.create_campaign(cfg)
            assert (await b.claim(cid, 0, T0, [ClaimItem("x", "x", ""), ClaimItem("y", "y", "")]))[0] == 0
            steals: list[tuple[int, int, int]] = []

            async def steal(donor_state_key: str) -> None:
                donor = next(s for s in (1, 2) if shard_keys(cid, s).state == donor_state_key)
                other = 3 - donor
                steals.append((donor, other, await b.borrow(cfg, other, 4)))

            a_client.before_lend = steal
            try:
                got: int | None = await a.borrow(cfg, 0, 1)
            except BorrowContention:
                got = None
            fig = await b.figures(cfg)
            a_client.before_lend = None  # the other borrower stops: A's retry gets stock
            return got, steals, fig, await a.borrow(cfg, 0, 1), await b.figures(cfg)
        finally:
            await a_client.aclose()
            await b_client.aclose()

    got, steals, fig, retry, after = asyncio.run(main())
    assert steals[:2] == [(1, 2, 2), (2, 1, 4)]
    assert fig.total_remaining == 4 and conserved(fig, 6)
    assert got is None or got > 0  # was 0 after two rounds, although 4 vouchers were there all along
    assert retry > 0 and after.remaining[0] == retry and conserved(after, 6)


# ------------------------------------------------------------------ 9. crash mid-move


class InterleavingClient(redis.asyncio.Redis):
    """A real client to the real server whose pipelines first run the next queued hook: it lets
    another node's borrower act between the two reads of figures(), deterministically."""

    hooks: list[Callable[[], Awaitable[None]] | None]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute, hooks = pipe.execute, self.hooks

        async def hooked_execute(raise_on_error: bool = True) -> Any:
            hook = hooks.pop(0) if hooks else None
            if hook is not None:
                await hook()
            return await execute(raise_on_error)

        pipe.execute = hooked_execute  # type: ignore[method-assign]
        return pipe


def test_borrow_sees_a_lease_credited_between_the_reads_of_figures(redis_server: EmbeddedRedis) -> None:
    """figures() reads stock and leases, then the credited sets. The last voucher is moved by another
    node twice, each move credited exactly between those two reads: it is then counted nowhere in
    in_leases, yet borrow must not answer 0 (sold out), because it saw the lease records."""
    cid = new_campaign_id("race")
    cfg = config(cid, inventory=3, shards=3)  # 1 per shard
    k = [shard_keys(cid, s) for s in range(3)]

    async def main() -> tuple[int, Figures]:
        a_client = InterleavingClient(port=redis_server.port, decode_responses=True)
        a_client.hooks = []
        other = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
        try:
            a = RedisInventory(a_client)
            await a.create_campaign(cfg)
            await a.claim(cid, 0, T0, [ClaimItem("x0", "r", "")])
            await a.claim(cid, 2, T0, [ClaimItem("x2", "r", "")])
            await scripts.LEND(other, [k[1].state, k[1].leases], [1, "L1", 2, T0, 0])  # in transit 1 -> 2

            async def credit_l1() -> None:
                await scripts.CREDIT(other, [k[2].state, k[2].credited], ["L1", 1])
                await other.hdel(k[1].leases, "L1")

            async def lend_l2() -> None:
                await scripts.LEND(other, [k[2].state, k[2].leases], [1, "L2", 1, T0, 0])

            async def credit_l2() -> None:
                await scripts.CREDIT(other, [k[1].state, k[1].credited], ["L2", 1])
                await other.hdel(k[2].leases, "L2")

            a_client.hooks[:] = [None, credit_l1, lend_l2, credit_l2]
            got = await a.borrow(cfg, 0, 1)
            a_client.hooks[:] = []
            return got, await a.figures(cfg)
        finally:
            await a_client.aclose()
            await other.aclose()

    got, after = asyncio.run(main())
    assert got == 1
    assert after.remaining == [1, 0, 0] and after.in_leases == 0 and sum(after.granted) == 2


def test_crash_between_lend_and_credit_is_settled_once(redis_server: EmbeddedRedis,
                                                       redis_client: redis.Redis) -> None:
    cid = new_campaign_id("crash")
    cfg = config(cid, inventory=100, shards=4)
    d1, d2 = shard_keys(cid, 1), shard_keys(cid, 2)
    t0 = shard_keys(cid, 0)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        out: dict[str, Any] = {}
        await inv.create_campaign(cfg)
        # a borrower for shard 0 takes 10 from shard 1, then dies before crediting
        out["lend"] = await scripts.LEND(client, [d1.state, d1.leases], [10, "L1", 0, T0, 0])
        out["lease"] = await client.hgetall(d1.leases)
        out["mid"] = await inv.figures(cfg)
        out["settle"] = await inv.settle_leases(cfg)
        out["settled"] = await inv.figures(cfg)
        # a late credit of the same lease (the dead borrower's retry) changes nothing
        out["credit_again"] = await scripts.CREDIT(client, [t0.state, t0.credited], ["L1", 10])
        out["after_again"] = await inv.figures(cfg)
        # a borrower that dies after crediting but before deleting the lease
        out["lend2"] = await scripts.LEND(client, [d2.state, d2.leases], [40, "L2", 0, T0 + 1, 0])
        out["credit2"] = await scripts.CREDIT(client, [t0.state, t0.credited], ["L2", 25])
        out["credit2_again"] = await scripts.CREDIT(client, [t0.state, t0.credited], ["L2", 25])
        out["settle2"] = await inv.settle_leases(cfg)
        out["final"] = await inv.figures(cfg)
        out["credited"] = sorted(await client.smembers(t0.credited))
        out["settle_nothing"] = await inv.settle_leases(cfg)
        return out

    out = run(redis_server, fn)
    assert out["lend"] == [10, 15, 0]
    assert out["lease"] == {"L1": f"0|10|{T0}"}
    assert out["mid"] == Figures(remaining=[25, 15, 25, 25], granted=[0] * 4, in_leases=10,
                                lease_records=1)
    assert conserved(out["mid"], 100)
    assert out["settle"] == 10
    assert out["settled"] == Figures(remaining=[35, 15, 25, 25], granted=[0] * 4, in_leases=0)
    assert out["credit_again"] == [0, 35]
    assert out["after_again"] == out["settled"]
    assert out["lend2"] == [25, 0, 0]         # shard 2 only had 25
    assert out["credit2"] == [1, 60]
    assert out["credit2_again"] == [0, 60]
    assert out["settle2"] == 25             # the lease is marked credited; its stock is not added again
    assert out["final"] == Figures(remaining=[60, 15, 0, 25], granted=[0] * 4, in_leases=0)
    assert conserved(out["final"], 100)
    assert out["credited"] == ["L1", "L2"]
    assert out["settle_nothing"] == 0
    # Lease records stay, marked credited, so a LEND resent however late finds its lease.
    assert redis_client.hgetall(d1.leases) == {"L1": "0|10|-|C"}
    assert redis_client.hgetall(d2.leases) == {"L2": "0|25|-|C"}


def test_credit_to_missing_shard_is_refused(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("nodest")
    keys = shard_keys(cid, 0)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        with pytest.raises(redis.ResponseError, match="destination shard missing"):
            await scripts.CREDIT(client, [keys.state, keys.credited], ["L", 5])

    run(redis_server, fn)
    assert redis_client.exists(keys.state, keys.credited) == 0


def test_figures_conserve_between_credit_and_lease_delete(redis_server: EmbeddedRedis) -> None:
    """inventory.py: 'Conservation, for every campaign at every moment'. _credit runs CREDIT, then
    HDEL of the lease: in between (or forever, if the borrower dies there) the sum is too high."""
    cid = new_campaign_id("dbl")
    cfg = config(cid, inventory=100, shards=4)
    d1, t0 = shard_keys(cid, 1), shard_keys(cid, 0)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        await scripts.LEND(client, [d1.state, d1.leases], [10, "L", 0, T0, 0])
        await scripts.CREDIT(client, [t0.state, t0.credited], ["L", 10])
        return await inv.figures(cfg)

    fig = run(redis_server, fn)
    # was Figures(remaining=[35, 15, 25, 25], granted=[0, 0, 0, 0], in_leases=10): sum 110
    assert fig == Figures(remaining=[35, 15, 25, 25], granted=[0, 0, 0, 0], in_leases=0, lease_records=1)
    assert conserved(fig, 100), fig


# ------------------------------------------------------------------ 10. create_campaign


def test_create_campaign_is_idempotent_and_detects_conflicts(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("create")
    cfg = config(cid, inventory=10, shards=4, per_user_limit=2, starts_at_ms=T0, ends_at_ms=T0 + 60_000,
                 name="Spring sale", value_cents=500)
    other = config(cid, inventory=11, shards=4, per_user_limit=2, starts_at_ms=T0, ends_at_ms=T0 + 60_000,
                   name="Spring sale", value_cents=500)

    assert run(redis_server, lambda inv, c: inv.create_campaign(cfg)) is True
    before = redis_dump(redis_client, cid)
    assert run(redis_server, lambda inv, c: inv.create_campaign(cfg)) is False
    assert redis_dump(redis_client, cid) == before
    with pytest.raises(CampaignConflict):
        run(redis_server, lambda inv, c: inv.create_campaign(other))
    assert redis_dump(redis_client, cid) == before

    status = run(redis_server, lambda inv, c: inv.load_campaign(cid))
    assert status.config == cfg and status.paused is False and status.sold_out_at_ms == 0
    assert abs(status.created_at_ms - now_ms()) < 60_000
    assert [cfg.shard_stock(s) for s in range(4)] == [3, 3, 2, 2]
    for s, stock in enumerate([3, 3, 2, 2]):
        assert state_of(redis_client, cid, s) == {
            "stock": str(stock), "seq": "0", "granted": "0", "limit": "2",
            "starts": str(T0), "ends": str(T0 + 60_000), "paused": "0", "elig": "",
        }
    assert redis_client.hget(campaign_key(cid), "spec") == cfg.to_json()
    assert redis_client.hget(campaign_key(cid), "status") == "ready"
    assert redis_client.sismember(CAMPAIGN_INDEX, cid)


def test_half_created_campaign_is_invisible_then_completed(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("half")
    cfg = config(cid, inventory=7, shards=3)  # 3, 2, 2

    async def fn(inv: RedisInventory, client: Any) -> Any:
        out: dict[str, Any] = {}
        # a creator that dies after the first step and one shard
        out["create"] = await scripts.CREATE_CAMPAIGN(client, [campaign_key(cid)],
                                                      [cfg.to_json(), T0, cfg.shards])
        out["init0"] = await scripts.INIT_SHARD(client, [shard_keys(cid, 0).state], [3, 1, 0, 0, ""])
        out["init0_again"] = await scripts.INIT_SHARD(client, [shard_keys(cid, 0).state], [99, 5, 0, 0, ""])
        out["status"] = await client.hget(campaign_key(cid), "status")
        out["loaded"] = await inv.load_campaign(cid)
        out["listed"] = cid in await inv.list_campaigns()
        # a claim reached shard 0 meanwhile (scripts do not look at the campaign status)
        out["claim"] = await inv.claim(cid, 0, T0, [ClaimItem("early", "e", "")])
        with pytest.raises(ShardMissing):
            await inv.claim(cid, 1, T0, [ClaimItem("early2", "e2", "")])
        with pytest.raises(CampaignConflict):
            await inv.create_campaign(config(cid, inventory=8, shards=3))
        out["completed"] = await inv.create_campaign(cfg)
        out["loaded_after"] = await inv.load_campaign(cid)
        out["listed_after"] = cid in await inv.list_campaigns()
        out["figures"] = await inv.figures(cfg)
        return out

    out = run(redis_server, fn)
    assert out["create"] == "created"
    assert out["init0"] == 1 and out["init0_again"] == 0
    assert out["status"] == "creating"
    assert out["loaded"] is None
    assert out["listed"] is False
    assert out["claim"] == (2, [ItemResult(1, f"{cid}-0-1", T0)])
    assert isinstance(out["completed"], bool)  # completing reports 'already there' (False) today
    assert out["loaded_after"] is not None and out["loaded_after"].config == cfg
    assert out["listed_after"] is True
    # shard 0 kept its state (not re-initialised); shards 1 and 2 got their share
    assert out["figures"] == Figures(remaining=[2, 2, 2], granted=[1, 0, 0], in_leases=0)
    assert redis_client.hget(campaign_key(cid), "created_at") == str(T0)


# ------------------------------------------------------------------ 11. concurrency


def test_concurrent_claims_with_borrowing(redis_server: EmbeddedRedis) -> None:
    """64 tasks, 2,000 claims from 500 users (retries, repeats) against 300 vouchers on 4 shards."""
    cid = new_campaign_id("conc")
    cfg = config(cid, inventory=300, shards=4)
    rng = random.Random(20240611)
    users = [f"cu{i}" for i in range(500)]
    order = users + [rng.choice(users) for _ in range(1500)]
    rng.shuffle(order)
    last_rid: dict[str, str] = {}
    claims: list[tuple[str, str]] = []
    for user in order:
        rid = last_rid[user] if user in last_rid and rng.random() < 0.3 else uuid.uuid4().hex
        last_rid[user] = rid
        claims.append((user, rid))
    results: list[ItemResult | None] = [None] * len(claims)
    left_when_empty: list[int] = []  # total_remaining seen right after each borrow() == 0

    async def fn(inv: RedisInventory, client: Any) -> Any:
        await inv.create_campaign(cfg)
        pending = list(range(len(claims)))[::-1]

        async def worker() -> None:
            while pending:
                i = pending.pop()
                user, rid = claims[i]
                shard = shard_of(user, cfg.shards)
                while True:
                    _, (res,) = await inv.claim(cid, shard, now_ms(), [ClaimItem(user, rid, "w")])
                    if res.code != Code.EMPTY:
                        break
                    try:
                        if await inv.borrow(cfg, shard, 1):
                            continue
                    except BorrowContention:  # retryable (UNAVAILABLE): the caller tries again
                        continue
                    # 0 means sold out: stock never comes back, so none may be left now
                    left_when_empty.append((await inv.figures(cfg)).total_remaining)
                    res = ItemResult(Code.SOLD_OUT, "", 0)
                    break
                results[i] = res

        await asyncio.gather(*(worker() for _ in range(64)))
        records = [r for s in range(cfg.shards) for r in await inv.all_records(cfg, s)]
        return await inv.figures(cfg), records

    fig, records = run(redis_server, fn)
    assert all(r is not None for r in results)
    assert left_when_empty and set(left_when_empty) == {0}
    codes = Counter(r.code for r in results)
    assert set(codes) <= {Code.GRANTED, Code.REPLAY, Code.ALREADY_CLAIMED, Code.SOLD_OUT}
    granted = [(claims[i][0], r) for i, r in enumerate(results) if r.code == Code.GRANTED]
    assert len(granted) == 300 == min(300, len(set(order)))
    assert max(Counter(u for u, _ in granted).values()) == 1           # no user granted twice
    assert len({r.voucher_id for _, r in granted}) == 300             # voucher ids unique
    assert fig == Figures(remaining=[0, 0, 0, 0], granted=fig.granted, in_leases=0)
    assert sum(fig.granted) == 300
    # what Redis recorded is exactly what the callers were told
    by_user = {u: r for u, r in granted}
    granted_requests = {claims[i] for i, r in enumerate(results) if r.code == Code.GRANTED}
    assert sorted((r.user_id, r.voucher_id) for r in records) == sorted((u, r.voucher_id) for u, r in granted)
    for s in range(cfg.shards):  # seq numbers per shard are 1..granted, no gap, no repeat
        seqs = sorted(int(r.voucher_id.rsplit("-", 1)[1]) for r in records if shard_of(r.user_id, 4) == s)
        assert seqs == list(range(1, fig.granted[s] + 1))
        assert all(r.voucher_id.startswith(voucher_prefix(cid, s)) for r in records
                   if shard_of(r.user_id, 4) == s)
    # every other answer agrees with the grant
    for (user, rid), r in zip(claims, results, strict=True):
        if r.code in (Code.REPLAY, Code.ALREADY_CLAIMED):
            assert r.voucher_id == by_user[user].voucher_id
        if r.code == Code.REPLAY:
            assert (user, rid) in granted_requests
    # a user without a voucher only ever heard SOLD_OUT (one with a voucher may hear it too,
    # from a claim that ran concurrently with its granted one and lost the last unit to it)
    answers: dict[str, set[int]] = defaultdict(set)
    for (user, _), r in zip(claims, results, strict=True):
        answers[user].add(r.code)
    unlucky = [u for u in answers if u not in by_user]
    assert len(unlucky) == 200
    assert all(answers[u] == {Code.SOLD_OUT} for u in unlucky)


def test_threads_calling_claim_script_directly(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    """64 threads, sync clients, raw EVALSHA on claim.lua: per shard, grants = min(stock, its users)."""
    cid = new_campaign_id("thr")
    cfg = config(cid, inventory=300, shards=4)  # 75 per shard
    run(redis_server, lambda inv, c: inv.create_campaign(cfg))
    sha = redis_client.script_load(scripts.CLAIM.source)
    assert sha == scripts.CLAIM.sha
    rng = random.Random(7)
    users = [f"tu{i}" for i in range(500)]
    work = users + [rng.choice(users) for _ in range(1500)]
    rng.shuffle(work)
    pool = redis.ConnectionPool(port=redis_server.port, decode_responses=True, max_connections=64)

    def claim(i: int) -> tuple[str, int, str]:
        user = work[i]
        shard = shard_of(user, 4)
        keys = shard_keys(cid, shard)
        client = redis.Redis(connection_pool=pool)
        reply = client.evalsha(sha, 5, *keys.claim,
                               now_ms(), voucher_prefix(cid, shard), 0, 0, user, f"req{i}", "")
        return user, int(reply[1]), reply[2]

    with ThreadPoolExecutor(64) as ex:
        out = list(ex.map(claim, range(len(work))))
    pool.disconnect()

    per_shard_users: dict[int, set[str]] = defaultdict(set)
    for u in users:
        per_shard_users[shard_of(u, 4)].add(u)
    grants = [(u, v) for u, code, v in out if code == 1]
    assert {code for _, code, _ in out} <= {1, 3, 4}
    assert len({u for u, _ in grants}) == len(grants)
    assert len({v for _, v in grants}) == len(grants)
    for s in range(4):
        n = sum(1 for u, _ in grants if shard_of(u, 4) == s)
        assert n == min(75, len(per_shard_users[s])), s
        assert state_of(redis_client, cid, s)["granted"] == str(n)
        assert int(state_of(redis_client, cid, s)["stock"]) == 75 - n


# ------------------------------------------------------------------ 12. model


N_SHARDS = 3
USER_POOL = [f"m{i}" for i in range(12)]
USERS_BY_SHARD = {s: [u for u in USER_POOL if shard_of(u, N_SHARDS) == s] for s in range(N_SHARDS)}
RIDS = [f"r{i}" for i in range(10)]
CHANNELS = ["", "web"]
STARTS, ENDS = T0, T0 + 1000


class ShardModel:
    """claim.lua, in Python: one shard's state and records."""

    def __init__(self, stock: int, limit: int) -> None:
        self.stock, self.seq, self.granted, self.limit = stock, 0, 0, limit
        self.paused = False
        self.reqs: dict[tuple[str, str], tuple[str, int, str]] = {}   # (user, rid) -> voucher, at, channel
        self.users: dict[str, tuple[int, str, int, list[str]]] = {}

    def claim(self, prefix: str, now: int, items: list[ClaimItem]) -> tuple[int, list[ItemResult]]:
        closed = 7 if self.paused else 5 if now < STARTS else 6 if now >= ENDS else 0
        out = []
        for user, rid, chan in items:
            rec = self.reqs.get((user, rid))
            if rec is not None:  # a replay; from another channel it is not the caller's grant
                out.append(ItemResult(2, rec[0], rec[1]) if rec[2] == chan else ItemResult(9, "", 0))
                continue
            count, vid, at, rids = self.users.get(user, (0, "", 0, []))
            if count >= self.limit:  # the latest voucher, if the caller's channel issued it
                mine = self.reqs[(user, rids[-1])][2] == chan
                out.append(ItemResult(3, vid, at) if mine else ItemResult(3, "", 0))
            elif closed:
                out.append(ItemResult(closed, "", 0))
            elif self.stock <= 0:
                out.append(ItemResult(4, "", 0))
            else:
                self.stock -= 1
                self.seq += 1
                self.granted += 1
                vid = f"{prefix}{self.seq}"
                self.reqs[(user, rid)] = (vid, now, chan)
                self.users[user] = (count + 1, vid, now, [*rids, rid])
                out.append(ItemResult(1, vid, now))
        return self.stock, out

    def redis_form(self) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        state = {"stock": str(self.stock), "seq": str(self.seq), "granted": str(self.granted),
                 "limit": str(self.limit), "starts": str(STARTS), "ends": str(ENDS),
                 "paused": "1" if self.paused else "0", "elig": ""}
        users = {u: f"{c}|{v}|{a}|{','.join(r)}" for u, (c, v, a, r) in self.users.items()}
        reqs = {request_field(u, rid): f"{v}|{a}|{ch}" for (u, rid), (v, a, ch) in self.reqs.items()}
        return state, users, reqs


def test_model_matches_redis(redis_server: EmbeddedRedis) -> None:
    port = redis_server.port

    class ClaimMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.client = self.loop.run_until_complete(self._connect())
            self.inv = RedisInventory(self.client)
            self.leases: dict[str, tuple[int, int, int]] = {}   # crashed lends: id -> donor, dest, amount

        async def _connect(self) -> redis.asyncio.Redis:
            return redis.asyncio.Redis(port=port, decode_responses=True)

        def do(self, aw: Awaitable[Any]) -> Any:
            return self.loop.run_until_complete(aw)

        def teardown(self) -> None:
            self.do(self.client.aclose())
            self.loop.close()

        @initialize(inventory=st.integers(N_SHARDS, 12), limit=st.integers(1, 3))
        def create(self, inventory: int, limit: int) -> None:
            self.cid = new_campaign_id("model")
            self.cfg = config(self.cid, inventory, N_SHARDS, per_user_limit=limit,
                              starts_at_ms=STARTS, ends_at_ms=ENDS)
            assert self.do(self.inv.create_campaign(self.cfg)) is True
            self.shards = [ShardModel(self.cfg.shard_stock(s), limit) for s in range(N_SHARDS)]

        @rule(data=st.data())
        def claim(self, data: st.DataObject) -> None:
            shard = data.draw(st.integers(0, N_SHARDS - 1), label="shard")
            items = data.draw(st.lists(st.builds(
                ClaimItem, st.sampled_from(USERS_BY_SHARD[shard]), st.sampled_from(RIDS),
                st.sampled_from(CHANNELS)), min_size=1, max_size=6), label="items")
            now = data.draw(st.integers(STARTS - 200, ENDS + 199), label="now")
            expected = self.shards[shard].claim(voucher_prefix(self.cid, shard), now, items)
            assert self.do(self.inv.claim(self.cid, shard, now, items)) == expected

        @rule(user=st.sampled_from(USER_POOL), rid=st.sampled_from(RIDS))
        def lookup(self, user: str, rid: str) -> None:
            shard = shard_of(user, N_SHARDS)
            m = self.shards[shard]
            rec = m.reqs.get((user, rid))
            expected = Record(user, rid, *rec) if rec else None
            assert self.do(get_request(self.inv, self.cid, shard, user, rid)) == expected
            held = [Record(user, r, *m.reqs[(user, r)]) for r in m.users.get(user, (0, "", 0, []))[3]]
            assert self.do(self.inv.lookup(self.cid, shard, user)) == held

        @rule(paused=st.booleans())
        def pause(self, paused: bool) -> None:
            self.do(self.inv.set_paused(self.cfg, paused))
            for m in self.shards:
                m.paused = paused

        @rule(donor=st.integers(0, N_SHARDS - 1), dest=st.integers(0, N_SHARDS - 1), want=st.integers(1, 4))
        def lend_and_crash(self, donor: int, dest: int, want: int) -> None:
            if donor == dest:
                return
            lease = uuid.uuid4().hex
            keys = shard_keys(self.cid, donor)
            taken = min(want, self.shards[donor].stock)
            got = self.do(scripts.LEND(self.client, [keys.state, keys.leases], [want, lease, dest, T0, 0]))
            assert got == [taken, self.shards[donor].stock - taken, 0]
            if taken:
                self.shards[donor].stock -= taken
                self.leases[lease] = (donor, dest, taken)

        def _settle(self) -> int:
            total = 0
            for _, dest, amount in self.leases.values():
                self.shards[dest].stock += amount
                total += amount
            self.leases.clear()
            return total

        @rule()
        def settle(self) -> None:
            assert self.do(self.inv.settle_leases(self.cfg)) == self._settle()

        @rule(dest=st.integers(0, N_SHARDS - 1), need=st.integers(1, 5))
        def borrow(self, dest: int, need: int) -> None:
            # inventory.borrow, as documented: largest donors first, each giving at least
            # min(BORROW_CHUNK, half its stock); then the destination's own stock; then
            # leases in transit are settled and the scan repeated
            expected = 0
            for _ in range(10):
                remaining = [m.stock for m in self.shards]
                donors = sorted((s for s in range(N_SHARDS) if s != dest and remaining[s] > 0),
                                key=lambda s: -remaining[s])
                moved = 0
                for d in donors:
                    want = max(need - moved, min(BORROW_CHUNK, remaining[d] // 2))
                    taken = min(want, self.shards[d].stock)
                    self.shards[d].stock -= taken
                    self.shards[dest].stock += taken
                    moved += taken
                    if moved >= need:
                        break
                if moved:
                    expected = moved
                    break
                if remaining[dest]:
                    expected = remaining[dest]
                    break
                if self.leases:
                    self._settle()
                    continue
                break  # nothing anywhere: expected stays 0
            assert self.do(self.inv.borrow(self.cfg, dest, need)) == expected

        @invariant()
        def redis_matches_model(self) -> None:
            if not hasattr(self, "cfg"):
                return
            pipe = self.client.pipeline(transaction=False)
            for s in range(N_SHARDS):
                keys = shard_keys(self.cid, s)
                pipe.hgetall(keys.state)
                pipe.hgetall(keys.users)
                pipe.hgetall(keys.reqs)
                pipe.hgetall(keys.leases)
            replies = self.do(pipe.execute())
            for s, m in enumerate(self.shards):
                state, users, reqs, leases = replies[4 * s: 4 * s + 4]
                assert (state, users, reqs) == m.redis_form(), s
                # credited leases are kept (marked C): only those in transit are in the model
                in_transit = {lid: raw for lid, raw in leases.items() if not raw.endswith("|C")}
                assert in_transit == {lid: f"{dest}|{amount}|{T0}"
                                      for lid, (donor, dest, amount) in self.leases.items() if donor == s}
            fig = self.do(self.inv.figures(self.cfg))
            assert fig.remaining == [m.stock for m in self.shards]
            assert fig.in_leases == sum(a for _, _, a in self.leases.values())
            assert conserved(fig, self.cfg.inventory)

    run_state_machine_as_test(ClaimMachine, settings=settings(
        max_examples=100, stateful_step_count=30, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck)))
