"""A model of the store, checked against the session's real redis-server by a hypothesis state
machine: claim.lua written again in Python (ShardModel), driven by random claims, lookups,
pauses, lends whose borrower crashes, settles and borrows. After every step each shard's hashes
in Redis equal the model's, and stock is conserved.

Every run uses its own campaign id; results are compared with exact values.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

import redis.asyncio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from lua_support import T0, config, conserved, get_request

from claimcore._fast import shard_of
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store import scripts
from claimcore.store.inventory import BORROW_CHUNK, RedisInventory
from claimcore.store.keyspace import shard_keys, voucher_prefix
from claimcore.store.replies import ClaimItem, ItemResult, Record, request_field
from conftest import new_campaign_id

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
