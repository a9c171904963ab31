"""Many claims at once against the session's real redis-server: 64 asyncio tasks through
RedisInventory (borrowing on EMPTY, as the batcher does) and 64 threads calling claim.lua
directly. No user is granted twice, voucher ids are unique, each shard grants no more than its
stock, and what Redis recorded is exactly what the callers were told.

Every test uses its own campaign id; the claim orders are seeded, so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from lua_support import config, state_of

from claimcore._fast import shard_of
from claimcore.clock import now_ms
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store import scripts
from claimcore.store.inventory import Figures, RedisInventory
from claimcore.store.keyspace import shard_keys, voucher_prefix
from claimcore.store.replies import BorrowContention, ClaimItem, Code, ItemResult
from conftest import new_campaign_id
from support import run


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
