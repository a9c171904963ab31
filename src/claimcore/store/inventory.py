"""The inventory store: campaign state in Redis, changed only by Lua scripts.

Conservation, for every campaign at every moment:

    sum(shard stock + returning) + sum(lease amounts) + sum(shard granted)
        == inventory + sum(shard recycled) - held for later rounds

Claims move stock to granted inside one shard (claim.lua). Borrowing moves
stock between shards in two steps that are each atomic: lend.lua turns donor
stock into a lease, credit.lua adds it to the destination exactly once, then
the lease is deleted. A borrower that dies between the steps leaves a lease
that anyone can settle (credit is idempotent), so stock is never lost, never
created, and never stranded for longer than it takes to notice the lease.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from claimcore._fast import pack_claims, shard_of, unpack_claim_reply
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.store import scripts
from claimcore.store.cluster_calls import eval_on_cluster
from claimcore.store.keyspace import (
    ARCHIVED_INDEX,
    CAMPAIGN_INDEX,
    campaign_key,
    round_lease,
    shard_keys,
    voucher_prefix,
)
from claimcore.store.replies import (
    ArchiveCode,
    BorrowContention,
    CampaignConflict,
    ClaimItem,
    ItemResult,
    Record,
    ShardMoving,
    StaleMap,
    lease_credited,
    parse_lease,
    parse_record,
    refusal,
)


@dataclass
class CampaignStatus:
    config: CampaignConfig
    paused: bool
    created_at_ms: int
    sold_out_at_ms: int
    resharding: bool = False
    archived: bool = False


@dataclass
class Gauges:
    """One campaign as the node's gauges show it (`RedisInventory.gauges`)."""

    created_at_ms: int
    sold_out_at_ms: int          # 0 while not sold out
    slots: int                   # shard slots Redis holds (a reshard may have added some)
    stock: list[int | None]      # per shard read; None: that shard holds no state
    granted: int


@dataclass
class Figures:
    remaining: list[int]   # per shard: claimable now (stock, and recycled stock whose delay is over)
    granted: list[int]     # per shard
    in_leases: int         # stock in transit between shards (leases not yet credited)
    lease_records: int = 0  # lease records not yet marked credited: 0 means nothing in transit
    held: int = 0          # inventory of rounds not released yet (not claimable)
    returning: list[int] = field(default_factory=list)  # per shard: recycled, claimable after its delay

    def __post_init__(self) -> None:
        if not self.returning:
            self.returning = [0] * len(self.remaining)

    @property
    def total_remaining(self) -> int:
        return sum(self.remaining) + sum(self.returning) + self.in_leases


# Recycled stock waits this long (by the shard's Redis clock) before a claim may take it, so every
# node's sold-out snapshot has seen it first (soldout.py): lua/_returning.lua's RETURN_DELAY_MS.
RETURN_DELAY_MS = 2000
RETURNING = ("returning", "returning_at", "returning_next", "returning_next_at")  # all, and its parts
BORROW_CHUNK = 64        # a donor gives at least min(this, half its stock)
EMPTY_CHECK_ROUNDS = 2   # full scans that must agree before "sold out"
MAX_BORROW_ROUNDS = 50   # then give up with BorrowContention (a retryable error)


# campaign, shard, epoch of the map, items, and until when category holds are trusted (0 = none)
ClaimCall = tuple[str, int, int, list[ClaimItem], int]


def _claim_result(call: ClaimCall, reply: Any) -> tuple[int, list[ItemResult]] | Exception:
    if isinstance(reply, Exception):
        return reply
    status = int(reply[0])
    if status < 0:
        return refusal(call[0], call[1], reply)
    return unpack_claim_reply(reply, ItemResult)


class RedisInventory:
    def __init__(self, client: Any) -> None:
        self.redis = client

    # ------------------------------------------------------------ claims

    async def claim(
        self, campaign_id: str, shard: int, now: int, items: list[ClaimItem], epoch: int = 0
    ) -> tuple[int, list[ItemResult]]:
        """Run claim.lua for a batch on one shard: (stock left, one result per item)."""
        (reply,) = await self.claim_many([(campaign_id, shard, epoch, items, 0)], now)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def claim_many(
        self, calls: list[ClaimCall], now: int
    ) -> list[tuple[int, list[ItemResult]] | Exception]:
        """claim.lua once per (campaign, shard, epoch, items), all in one pipelined round trip.

        Each call is atomic on its own shard; a failed call (its shard missing or
        refusing the caller's epoch, a script error) is returned in its place,
        while a broken connection raises.
        """
        replies = await self._run_claims(calls, now)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # the script cache is volatile (restart, failover, SCRIPT FLUSH)
            await self.redis.script_load(scripts.CLAIM.source)
            retried = await self._run_claims([calls[i] for i in missing], now)
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        return [_claim_result(call, reply) for call, reply in zip(calls, replies, strict=True)]

    async def _run_claims(self, calls: list[ClaimCall], now: int) -> list[Any]:
        """Raw replies (or errors) of claim.lua, one per call, in one round trip."""
        if isinstance(self.redis, RedisCluster):
            return await eval_on_cluster(self.redis, scripts.CLAIM, [
                (shard_keys(cid, shard).claim,
                 (now, voucher_prefix(cid, shard), epoch, trusted, *(x for item in items for x in item)))
                for cid, shard, epoch, items, trusted in calls
            ])
        # The flush is packed in one go by the Cython codec (redis-py would spend
        # ~4 us of Python per argument) and written on a pooled connection.
        packed = pack_claims(scripts.CLAIM.sha, [
            (*shard_keys(cid, shard).claim, voucher_prefix(cid, shard), str(epoch), str(trusted), items)
            for cid, shard, epoch, items, trusted in calls
        ], now)
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            replies: list[Any] = []
            for _ in calls:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # one script failed; the others still answer
                    replies.append(exc)
        except BaseException:
            await conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            await pool.release(conn)
        return replies

    async def borrow(self, config: CampaignConfig, dest: int, need: int) -> int:
        """Move up to `need` (or more, in chunks) stock into shard `dest`.

        Returns how much arrived; 0 means the campaign is empty: EMPTY_CHECK_ROUNDS
        scans of every shard found no stock and no lease record, leases found
        on the way having been settled. A stock unit moving between shards can
        slip past one scan (read at its destination before the credit, at its
        donor after the lease is gone), never past the next one.
        """
        empty_rounds = 0
        for _ in range(MAX_BORROW_ROUNDS):
            figures = await self.figures(config)
            donors = sorted(  # retired shards too: a reshard may still be draining one
                (s for s in range(config.shard_slots) if s != dest and figures.remaining[s] > 0),
                key=lambda s: -figures.remaining[s],
            )
            moved = 0
            for donor in donors:
                want = max(need - moved, min(BORROW_CHUNK, figures.remaining[donor] // 2))
                moved += await self.move_stock(config, donor, dest, want)
                if moved >= need:
                    break
            if moved:
                return moved
            if figures.remaining[dest] > 0:
                return figures.remaining[dest]  # someone credited us meanwhile
            if figures.lease_records:
                # Judge by the one pipelined read, not by in_leases: a lease
                # credited after that read would be counted nowhere.
                await self.settle_leases(config)
                continue
            if any(figures.remaining):
                continue  # other borrowers took the stock we saw: look again
            if figures.held and await self.release_due_rounds(config):
                continue  # a later round's time has come: its stock is in now
            if any(figures.returning):
                return 0  # recycled stock, claimable only after its delay: nothing to take yet
            empty_rounds += 1
            if empty_rounds == EMPTY_CHECK_ROUNDS:
                # "Nothing left" holds only for the current map: a reshard may have put stock on
                # shards this (older) map does not scan. Then route again by the new one.
                status = await self.load_campaign(config.campaign_id)
                if status is not None and status.config.epoch != config.epoch:
                    raise StaleMap(config.campaign_id, status.config.epoch)
                return 0
        raise BorrowContention(f"{config.campaign_id}: stock kept moving for {MAX_BORROW_ROUNDS} rounds")

    async def move_stock(self, config: CampaignConfig, donor: int, dest: int, want: int) -> int:
        """Move up to `want` stock from donor to dest; a donor on a newer map raises StaleMap."""
        lease_id = uuid.uuid4().hex
        dk = shard_keys(config.campaign_id, donor)
        taken, _, donor_epoch = await scripts.LEND(
            self.redis, [dk.state, dk.leases], [want, lease_id, dest, now_ms(), config.epoch]
        )
        taken = int(taken)
        if taken:
            await self._credit(config.campaign_id, donor, dest, lease_id, taken)
        elif int(donor_epoch) > config.epoch:
            raise StaleMap(config.campaign_id, int(donor_epoch))
        return taken

    async def _credit(self, campaign_id: str, donor: int, dest: int, lease_id: str, amount: int) -> None:
        tk = shard_keys(campaign_id, dest)
        await scripts.CREDIT(self.redis, [tk.state, tk.credited], [lease_id, amount])
        # Kept, marked credited, not deleted: a LEND resent after this must find its lease.
        await self.redis.hset(shard_keys(campaign_id, donor).leases, lease_id, f"{dest}|{amount}|-|C")

    async def settle_leases(self, config: CampaignConfig) -> int:
        """Complete every lease in transit (a borrower may have died mid-move)."""
        settled = 0
        for donor in range(config.shard_slots):
            leases = await self.redis.hgetall(shard_keys(config.campaign_id, donor).leases)
            for lease_id, raw in leases.items():
                if lease_credited(raw):
                    continue
                dest, amount = parse_lease(raw)
                await self._credit(config.campaign_id, donor, dest, lease_id, amount)
                settled += amount
        return settled

    async def spread_stock(self, config: CampaignConfig) -> int:
        """Even out the stock of the live shards and drain retired ones; returns stock moved.

        Moves go through leases (move_stock), so they race safely with claims and
        borrowers: the evening out is approximate, the draining is not.
        """
        moved = 0
        figures = await self.figures(config)
        base, extra = divmod(sum(figures.remaining), config.shards)
        want = [base + (1 if s < extra else 0) if s < config.shards else 0 for s in range(config.shard_slots)]
        have = figures.remaining
        surplus = {s: have[s] - want[s] for s in range(config.shard_slots) if have[s] > want[s]}
        deficit = {s: want[s] - have[s] for s in range(config.shards) if have[s] < want[s]}
        for donor, spare in surplus.items():
            for dest in list(deficit):
                if spare <= 0:
                    break
                got = await self.move_stock(config, donor, dest, min(spare, deficit[dest]))
                moved += got
                spare -= got
                deficit[dest] -= got
                if deficit[dest] <= 0:
                    del deficit[dest]
        for retired in range(config.shards, config.shard_slots):  # must end empty, whatever claims did
            while got := await self.move_stock(config, retired, retired % config.shards, 1 << 30):
                moved += got
        return moved

    # ------------------------------------------------------------ rounds

    async def release_due_rounds(self, config: CampaignConfig) -> int:
        """Credit every round whose time has come into shard 0, once each (credit.lua's credited
        set is the record), and spread it over the shards; returns the stock released now."""
        due = config.due_rounds(await self.redis_time_ms())  # Redis's clock, as credit.lua checks
        if not due:
            return 0
        keys = shard_keys(config.campaign_id, 0)
        done = await self.redis.smismember(keys.credited, [round_lease(k) for k in due])
        released = 0
        for k, already in zip(due, done, strict=True):
            if not already:
                release_at, amount = config.rounds[k]
                credited, _ = await scripts.CREDIT(self.redis, [keys.state, keys.credited],
                                                   [round_lease(k), amount, release_at])
                released += amount if int(credited) else 0
        if released and config.shards > 1:
            await self.spread_stock(config)
        return released

    # ------------------------------------------------------------ figures

    async def figures(self, config: CampaignConfig) -> Figures:
        """Stock and grants per shard, and stock in transit.

        A lease already credited but not yet deleted is in its destination's
        stock: it is left out of in_leases, so nothing is counted twice. The
        credited sets are read after the stock, so a lease credited in between
        is momentarily counted nowhere: fine for reporting, which is why
        decisions about emptiness look at lease_records instead.
        """
        cid = config.campaign_id
        pipe = self.redis.pipeline(transaction=False)
        for s in range(config.shard_slots):
            keys = shard_keys(cid, s)
            pipe.hmget(keys.state, "stock", "granted", *RETURNING)
            pipe.hgetall(keys.leases)
        replies = await pipe.execute()
        remaining, granted, returning, leases = [], [], [], []
        redis_now = None
        for s in range(config.shard_slots):
            stock, grants, *slots = replies[2 * s]
            remaining.append(int(stock or 0))
            granted.append(int(grants or 0))
            returning.append(0)
            newer = int(slots[2] or 0)  # lua/_returning.lua: the total, and its newer part
            for amount, due_at in ((int(slots[0] or 0) - newer, slots[1]), (newer, slots[3])):
                if amount:
                    # Claimable already if its delay is over by Redis's clock (claim.lua and lend.lua
                    # fold it in when they next run there): a borrower may take it now.
                    redis_now = redis_now or await self.redis_time_ms()
                    if redis_now >= int(due_at or 0):
                        remaining[s] += amount
                    else:
                        returning[s] += amount
            for lease_id, raw in replies[2 * s + 1].items():
                if not lease_credited(raw):
                    leases.append((lease_id, *parse_lease(raw)))
        in_leases = 0
        if leases:
            pipe = self.redis.pipeline(transaction=False)
            for lease_id, dest, _ in leases:
                pipe.sismember(shard_keys(cid, dest).credited, lease_id)
            credited = await pipe.execute()
            in_leases = sum(amount for (_, _, amount), done in zip(leases, credited, strict=True)
                            if not done)
        held = 0
        if config.rounds:
            credited = await self.redis.smismember(shard_keys(cid, 0).credited,
                                                   [round_lease(k) for k in range(len(config.rounds))])
            held = sum(amount for (_, amount), done in zip(config.rounds, credited, strict=True) if not done)
        return Figures(remaining, granted, in_leases, len(leases), held, returning)

    async def redis_time_ms(self) -> int:
        """Now by Redis's clock (the one that judges expiry and recycled stock), in ms."""
        reply = await self.redis.time()
        if isinstance(reply, dict):  # a cluster may answer per node: any master's clock will do
            reply = next(iter(reply.values()))
        seconds, micros = reply
        return int(seconds) * 1000 + int(micros) // 1000

    async def shard_clock_ms(self, campaign_id: str, shard: int) -> int:
        """Now by the Redis clock of the server holding this shard (in a cluster, its master's):
        the clock that judges what happens on that shard (credit.lua's rounds), in ms."""
        key = shard_keys(campaign_id, shard).state
        if isinstance(self.redis, RedisCluster):
            await self.redis.initialize()  # the slot map (a no-op once read)
            reply = await self.redis.time(target_nodes=self.redis.get_node_from_key(key))
        else:
            reply = await self.redis.time()
        if isinstance(reply, dict):
            reply = next(iter(reply.values()))
        seconds, micros = reply
        return int(seconds) * 1000 + int(micros) // 1000

    async def uncredited_rounds(self, config: CampaignConfig) -> list[int]:
        """The release times (ms) of the campaign's later rounds not yet credited into shard 0."""
        if not config.rounds:
            return []
        credited = await self.redis.smismember(
            shard_keys(config.campaign_id, 0).credited, [round_lease(k) for k in range(len(config.rounds))])
        return [at for (at, _), done in zip(config.rounds, credited, strict=True) if not done]

    async def has_eligibility_data(self, config: CampaignConfig) -> bool:
        """Whether any shard holds eligibility records (then claim.lua checks every user)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(config.shard_slots):
            pipe.hget(shard_keys(config.campaign_id, shard).state, "eligdata")
        return any(flag == "1" for flag in await pipe.execute())

    async def gauges(self, wanted: list[tuple[CampaignConfig, int]]) -> list[Gauges]:
        """For each (campaign, shard slots to read): what the node's gauges show, in one pipelined
        round trip (node/metrics.py samples this about once a second)."""
        pipe = self.redis.pipeline(transaction=False)
        for config, slots in wanted:
            pipe.hmget(campaign_key(config.campaign_id), "created_at", "sold_out_at", "slots")
            for s in range(slots):
                pipe.hmget(shard_keys(config.campaign_id, s).state, "stock", "granted")
        replies = iter(await pipe.execute())
        out = []
        for _, slots in wanted:
            created, sold_out_at, seen_slots = next(replies)
            shards = [next(replies) for _ in range(slots)]
            out.append(Gauges(int(created or 0), int(sold_out_at or 0), int(seen_slots or 0),
                              [None if left is None else int(left) for left, _ in shards],
                              sum(int(grants or 0) for _, grants in shards)))
        return out

    # ------------------------------------------------------------ lookups

    async def lookup(self, campaign_id: str, shard: int, user_id: str, request_id: str = "",
                     epoch: int = 0) -> list[Record]:
        """The user's grant for request_id, or all their grants if request_id is ''.

        Raises StaleMap or ShardMoving like a claim: records move with their user.
        """
        keys = shard_keys(campaign_id, shard)
        reply = await scripts.LOOKUP(self.redis, [keys.state, keys.users, keys.reqs, keys.redeem],
                                     [epoch, user_id, request_id])
        if int(reply[0]) < 0:
            raise refusal(campaign_id, shard, reply)
        return [parse_record(reply[i], reply[i + 1]) for i in range(1, len(reply), 2)]

    async def order_record(self, campaign_id: str, user_id: str, order_id: str) -> str | None:
        """A user's order record in a campaign ('' if none), read by the campaign's current map and
        checked against its epoch, so a reshard moving the user cannot make it look absent.
        None if the campaign does not exist."""
        return await self._on_current_map(campaign_id, user_id, [order_id])

    async def holds_voucher(self, campaign_id: str, user_id: str) -> bool:
        """Whether the user was granted a voucher of the campaign, read as order_record is."""
        return bool(await self._on_current_map(campaign_id, user_id, []))

    async def _on_current_map(self, campaign_id: str, user_id: str, order: list[str]) -> Any:
        for _ in range(2000):  # a reshard's freeze lasts seconds at most: 5 ms steps, 10 s
            status = await self.load_campaign(campaign_id)
            if status is None:
                return None
            config = status.config
            shard = shard_of(user_id, config.shards)
            keys = shard_keys(campaign_id, shard)
            reply = await scripts.LOOKUP(self.redis, [keys.state, keys.users, keys.reqs, keys.redeem],
                                         [config.epoch, user_id, "", *order])
            if int(reply[0]) >= 0:
                return reply[1] if order else reply[1:]
            await asyncio.sleep(0.005)
        raise ShardMoving(campaign_id, -1)

    async def raw_grants(self, config: CampaignConfig, shard: int) -> tuple[dict[str, str], dict[str, str]]:
        """A shard's reqs and users hashes as stored, read in chunks (HSCAN) so
        Redis is never blocked long, and left unparsed: parsing 100,000 records
        into objects would cost the node's event loop about a second."""
        keys = shard_keys(config.campaign_id, shard)
        out: tuple[dict[str, str], dict[str, str]] = ({}, {})
        for key, target in zip((keys.reqs, keys.users), out, strict=True):
            cursor = 0
            while True:
                cursor, page = await self.redis.hscan(key, cursor, count=5000)
                target.update(page)
                if cursor == 0:
                    break
        return out

    async def all_records(self, config: CampaignConfig, shard: int) -> list[Record]:
        """Every grant of a shard, read in chunks so Redis is never blocked long."""
        return [
            parse_record(field, raw)
            async for field, raw in self.redis.hscan_iter(
                shard_keys(config.campaign_id, shard).reqs, count=2000
            )
        ]

    # ------------------------------------------------------------ campaigns

    async def create_campaign(self, config: CampaignConfig) -> bool:
        """Create (True) or confirm an identical existing campaign (False).

        Safe to repeat after a crash half-way: every step is idempotent, and
        the campaign is only visible (status ready) once all shards exist.
        """
        cid = config.campaign_id
        result = await scripts.CREATE_CAMPAIGN(
            self.redis, [campaign_key(cid)], [config.to_json(), now_ms(), config.shards]
        )
        if result == "different":
            raise CampaignConflict(cid)
        await asyncio.gather(
            *(
                scripts.INIT_SHARD(
                    self.redis,
                    [shard_keys(cid, s).state],
                    [config.shard_stock(s), config.per_user_limit,
                     config.starts_at_ms, config.ends_at_ms, config.eligibility_rule()],
                )
                for s in range(config.shards)
            )
        )
        if await self.redis.hget(campaign_key(cid), "status") == "creating":  # not once resharding
            await self.redis.hset(campaign_key(cid), "status", "ready")
        await self.redis.sadd(CAMPAIGN_INDEX, cid)
        return result == "created"

    async def load_campaign(self, campaign_id: str) -> CampaignStatus | None:
        """The campaign with its live shard map, or None if no ready campaign has this id."""
        spec, status, paused, created, sold_out, shards, epoch, slots, archived = await self.redis.hmget(
            campaign_key(campaign_id), "spec", "status", "paused", "created_at", "sold_out_at",
            "shards", "epoch", "slots", "archived",
        )
        if not spec or status not in ("ready", "resharding"):
            return None
        config = CampaignConfig.from_json(spec)
        if shards:
            config = config.with_map(int(shards), int(epoch or 0), int(slots or shards))
        return CampaignStatus(
            config, paused == "1", int(created or 0), int(sold_out or 0), status == "resharding",
            archived == "1",
        )

    async def list_campaigns(self, include_archived: bool = False) -> list[str]:
        """The ids of the campaigns, archived ones only with include_archived. The two index sets
        enumerate; each campaign's own flag decides (a move between the sets cut short by a crash
        shows nowhere wrong, and the next archive or unarchive of it finishes the move)."""
        ids = sorted(await self.redis.smembers(CAMPAIGN_INDEX) | await self.redis.smembers(ARCHIVED_INDEX))
        if include_archived or not ids:
            return ids
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hget(campaign_key(cid), "archived")
        return [cid for cid, flag in zip(ids, await pipe.execute(), strict=True) if flag != "1"]

    async def set_paused(self, config: CampaignConfig, paused: bool) -> bool:
        """Pause or resume on every shard; False (nothing changed) for a resume of an archived
        campaign. A pause writes the shards first, a resume the campaign's flag first (archive.lua,
        which refuses it once archived), so the campaign's flag never says paused while a shard
        grants: what archive.lua relies on."""
        cid = config.campaign_id
        if not paused:
            code = await scripts.ARCHIVE(self.redis, [campaign_key(cid)], ["resume", 0, 0])
            if ArchiveCode(int(code)) != ArchiveCode.DONE:
                return False
        flag = 1 if paused else 0
        pipe = self.redis.pipeline(transaction=False)
        for s in range(config.shard_slots):
            pipe.hset(shard_keys(cid, s).state, "paused", flag)
        if paused:
            pipe.hset(campaign_key(cid), "paused", flag)
        await pipe.execute()
        return True

    async def set_archived(self, config: CampaignConfig, archived: bool) -> ArchiveCode:
        """Archive (take off the lists) or unarchive a campaign: DONE, now or before, or REFUSED
        for an archive of a campaign open to claims. archive.lua decides, by the campaign's pause
        flag, its end by Redis's clock and sold_out read here first: no stock in any shard, none
        moving, returning or held for a round (a claim racing this only takes stock). A lease
        record not yet marked credited counts as stock moving: figures() may miss a lease credited
        while it reads, lease_records does not. The index sets follow the flag, in an order that
        never lists an archived campaign."""
        cid = config.campaign_id
        sold_out = 0
        if archived:
            figures = await self.figures(config)
            sold_out = int(figures.total_remaining == 0 and figures.held == 0 and figures.lease_records == 0)
        op = "archive" if archived else "unarchive"
        code = ArchiveCode(int(await scripts.ARCHIVE(
            self.redis, [campaign_key(cid)], [op, config.ends_at_ms, sold_out])))
        if code == ArchiveCode.DONE:
            into, out_of = (ARCHIVED_INDEX, CAMPAIGN_INDEX) if archived else (CAMPAIGN_INDEX, ARCHIVED_INDEX)
            await self.redis.sadd(into, cid)
            await self.redis.srem(out_of, cid)
        return code

    async def mark_sold_out(self, campaign_id: str, at_ms: int) -> None:
        """Record the first time any node found the campaign empty."""
        await self.redis.hsetnx(campaign_key(campaign_id), "sold_out_at", at_ms)
