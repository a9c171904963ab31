"""Borrowing stock between shards (lend.lua, credit.lua and RedisInventory's borrow, settle_leases
and figures) against the session's real redis-server: stock is conserved at every step, borrow
answers 0 only when the campaign is really empty, and a borrower that dies mid-move is settled
exactly once. Where another node's borrower must act at one given moment, a real client with a
hook lets it, deterministically.

Every test uses its own campaign id; results are compared with exact values.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from lua_support import T0, config, conserved

from claimcore._fast import shard_of
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store import scripts
from claimcore.store.inventory import BORROW_CHUNK, Figures, RedisInventory
from claimcore.store.keyspace import shard_keys
from claimcore.store.replies import BorrowContention, ClaimItem, Code
from conftest import new_campaign_id
from support import run, users_on

# ------------------------------------------------------------------ 1. borrowing and conservation


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


# ------------------------------------------------------------------ 2. crash mid-move


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
