"""The sold-out cache: once a campaign is empty, answer without Redis.

After sold out no grant can happen, so the set of grants is frozen. The node
loads it once (a snapshot, bounded by the inventory) and then answers claims
locally with exactly what claim.lua would say, in its order: a replay of a
granted request gets its voucher (ALREADY_CLAIMED without it if another
channel made the grant), a user at the limit ALREADY_CLAIMED, then PAUSED,
NOT_STARTED, ENDED, and everyone else SOLD_OUT. A campaign that checks
eligibility sends the claims that would reach that check to Redis (see
`Snapshot.answer`).

The snapshot is only trusted while Redis agrees. Every check reloads the
campaign's current shard map (a reshard may have added shards) and compares
the live figures of all its shards with the snapshot: stock, recycled stock
still waiting out its delay, a lease in transit or an uncredited round that
is due all reopen the campaign; if the number of grants moved, the snapshot
is reloaded.

A negative answer is only given while the node can rule out a grant of that
request: within SNAPSHOT_TRUST_MS of the start of the last check that found
the campaign empty, and before the next round's release time by Redis's
clock. Past either, claims go to Redis. A replay found in the snapshot is
answered at any time: grant records are never deleted.
Until a snapshot is loaded, claims still go to Redis (which answers them
correctly), only without the borrow attempt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.store.inventory import RETURN_DELAY_MS, RedisInventory
from claimcore.store.replies import ClaimItem, Code, ItemResult

log = logging.getLogger(__name__)

SNAPSHOT_LIMIT = 2_000_000  # grants; beyond this the node keeps asking Redis
REFRESH_S = 1.0             # how often every sold-out campaign is checked against Redis

# How long after the start of its last successful check a snapshot may still answer negatively
# (defect 8). Recycled stock waits inventory.RETURN_DELAY_MS (2000) by its shard's Redis clock
# before claim.lua can grant it, and a check that did not see it was sent before it came back, so
# the snapshot stops answering from that check at least 500 ms before anyone can be granted that
# stock: the retry of such a grant made on another node always reaches Redis here. Two bounds:
#   REFRESH_S + the checks' jitter (a busy event loop, a slow read) < SNAPSHOT_TRUST_MS, or the
#     snapshot lapses between checks (claims then go to Redis: slower, never wrong);
#   SNAPSHOT_TRUST_MS < RETURN_DELAY_MS - that jitter, with room for Redis's clock being slewed.
SNAPSHOT_TRUST_MS = 1500
assert REFRESH_S * 1000 < SNAPSHOT_TRUST_MS < RETURN_DELAY_MS, "the bounds above"
# A round is credited when shard 0's Redis clock reaches its release time (credit.lua). The node
# estimates that clock as Redis TIME read in the check + the node's monotonic time since the read
# was sent (an estimate never behind Redis), and stops answering this much before the release:
# room for the two clocks running at slightly different rates, or Redis's being slewed.
ROUND_MARGIN_MS = 250

OTHER_CHANNEL = ItemResult(Code.OTHER_CHANNEL, "", 0)
PAUSED = ItemResult(Code.PAUSED, "", 0)
NOT_STARTED = ItemResult(Code.NOT_STARTED, "", 0)
ENDED = ItemResult(Code.ENDED, "", 0)
SOLD_OUT = ItemResult(Code.SOLD_OUT, "", 0)


@dataclass
class Snapshot:
    """The grants as Redis stores them (keyspace.py), parsed only when asked, and what the last
    check found: the pause flag, whether eligibility is checked, until when to answer."""

    granted: int
    reqs: dict[str, str] = field(default_factory=dict)   # "user|request_id" -> "voucher|at|channel"
    users: dict[str, str] = field(default_factory=dict)  # user -> "count|voucher|at|rids"
    paused: bool = False
    checks_eligibility: bool = False
    answer_until: float = 0.0  # monotonic seconds: negative answers only before this

    def answer(self, config: CampaignConfig, item: ClaimItem) -> ItemResult | None:
        """claim.lua's answer, or None: ask Redis."""
        record = self.reqs.get(f"{item.user_id}|{item.request_id}")
        if record is not None:  # granted: true for ever, whenever last checked
            voucher, at, channel = record.split("|", 2)
            if channel != item.channel_id:
                return OTHER_CHANNEL  # a channel never learns another channel's grant
            return ItemResult(Code.REPLAY, voucher, int(at))
        if time.monotonic() >= self.answer_until:
            return None  # not checked recently enough to rule out a grant of this request
        held = self.users.get(item.user_id)
        if held is not None:
            count, voucher, at, rids = held.split("|", 3)
            if int(count) >= config.per_user_limit:
                last = self.reqs.get(f"{item.user_id}|{rids.rsplit(',', 1)[-1]}", "")
                if last.split("|", 2)[-1] != item.channel_id:  # another channel's voucher: not shown
                    return ItemResult(Code.ALREADY_CLAIMED, "", 0)
                return ItemResult(Code.ALREADY_CLAIMED, voucher, int(at))
        if self.checks_eligibility:
            # The eligibility records are not loaded: a deny or allow list can be as large as the
            # users, and an update changes no figure a check could compare, so a copy would go
            # stale unseen. Claims that reach the eligibility check go to Redis (answered there
            # at once: the shards are empty, so they cost one batched script call, no borrow).
            return None
        if self.paused:
            return PAUSED
        if config.starts_at_ms or config.ends_at_ms:  # the window, judged as claim.lua does
            now = now_ms()
            if now < config.starts_at_ms:
                return NOT_STARTED
            if config.ends_at_ms and now >= config.ends_at_ms:
                return ENDED
        return SOLD_OUT


@dataclass
class _Entry:
    config: CampaignConfig
    snapshot: Snapshot | None = None
    loading: bool = False
    # What the latest check that found the campaign empty saw (checks may overlap):
    checked_at: float = -math.inf    # its start, monotonic seconds
    granted: int = -1
    paused: bool = False
    checks_eligibility: bool = False
    answer_until: float = 0.0        # its verdict: monotonic time negative answers end
    round_due_at: float = math.inf   # monotonic time the next round may be credited


class SoldOutCache:
    def __init__(self, inventory: RedisInventory, refresh_s: float = REFRESH_S) -> None:
        self.inventory = inventory
        self.refresh_s = refresh_s
        self._entries: dict[str, _Entry] = {}

    def is_sold_out(self, campaign_id: str) -> bool:
        """Whether claims that find their shard empty skip the borrow (the batcher asks). Not once
        a round may be due: its stock is credited into shard 0 and spread from there."""
        entry = self._entries.get(campaign_id)
        return entry is not None and time.monotonic() < entry.round_due_at

    def snapshot(self, campaign_id: str) -> Snapshot | None:
        entry = self._entries.get(campaign_id)
        return None if entry is None else entry.snapshot

    def mark(self, config: CampaignConfig) -> None:
        """Called by the batcher when nothing is left to borrow. Each check reloads the map."""
        if config.campaign_id in self._entries:
            return
        entry = self._entries[config.campaign_id] = _Entry(config)
        asyncio.get_running_loop().create_task(self._first_load(entry))

    async def _first_load(self, entry: _Entry) -> None:
        try:
            await self.inventory.mark_sold_out(entry.config.campaign_id, now_ms())
        except Exception:  # noqa: BLE001 - the figure is informative only
            log.warning("could not record sold_out_at for %s", entry.config.campaign_id,
                        extra={"campaign": entry.config.campaign_id})
        await self._refresh(entry)

    def _reopen(self, entry: _Entry, why: str) -> None:
        if self._entries.get(entry.config.campaign_id) is entry:
            del self._entries[entry.config.campaign_id]
            log.info("campaign %s %s: reopened", entry.config.campaign_id, why,
                     extra={"campaign": entry.config.campaign_id})

    async def _check(self, entry: _Entry) -> None:
        """Reopen, keep, or (re)load the snapshot, from the live figures of the current map."""
        started = time.monotonic()  # before any read: what the reads miss happened after this
        status = await self.inventory.load_campaign(entry.config.campaign_id)
        if status is None:
            self._reopen(entry, "is gone")
            return
        config = entry.config = status.config  # the current map: a reshard may have added shards
        if config.rounds:
            await self.inventory.release_due_rounds(config)  # no claim may reach Redis to do it
        round_due_at = await self._next_round_due(config)
        figures = await self.inventory.figures(config)
        checks_eligibility = (bool(config.eligibility_rule())
                              or await self.inventory.has_eligibility_data(config))
        # total_remaining counts recycled stock still waiting out its delay: reopen now, before
        # any node can grant it. An uncredited lease is stock on its way somewhere.
        if figures.total_remaining > 0 or figures.lease_records:
            self._reopen(entry, "has stock again")
            return
        if started <= entry.checked_at:
            return  # checks may overlap: the one that started last decides
        entry.checked_at = started
        entry.granted = sum(figures.granted)
        entry.paused = status.paused
        entry.checks_eligibility = checks_eligibility
        entry.round_due_at = round_due_at
        entry.answer_until = min(started + SNAPSHOT_TRUST_MS / 1000, round_due_at)
        snapshot = entry.snapshot
        if snapshot is None or snapshot.granted != entry.granted:
            entry.snapshot = None
            if entry.granted > SNAPSHOT_LIMIT or entry.loading:
                return
            snapshot = await self._load(entry, config, entry.granted)
            if snapshot is None:
                return
        self._install(entry, snapshot)

    @staticmethod
    def _install(entry: _Entry, snapshot: Snapshot) -> None:
        """Answer from `snapshot` by the latest check's verdict, if that check counted its grants
        (a load outlived by a check that found more grants is dropped: that check's load follows)."""
        if snapshot.granted != entry.granted:
            return
        snapshot.paused = entry.paused
        snapshot.checks_eligibility = entry.checks_eligibility
        snapshot.answer_until = entry.answer_until
        entry.snapshot = snapshot

    async def _load(self, entry: _Entry, config: CampaignConfig, granted: int) -> Snapshot | None:
        """Every grant record of the map's shards; None if they moved while being read."""
        entry.loading = True
        try:
            snapshot = Snapshot(granted)
            for shard in range(config.shard_slots):  # records move with their users
                reqs, users = await self.inventory.raw_grants(config, shard)
                snapshot.reqs.update(reqs)
                snapshot.users.update(users)
            return snapshot if len(snapshot.reqs) == granted else None  # a reshard moved some
        finally:
            entry.loading = False

    async def _next_round_due(self, config: CampaignConfig) -> float:
        """The monotonic time from which the next uncredited round may be credited, by shard 0's
        Redis clock (credit.lua's judge) less ROUND_MARGIN_MS; inf without one."""
        pending = await self.inventory.uncredited_rounds(config)
        if not pending:
            return math.inf
        sent = time.monotonic()
        redis_now = await self.inventory.shard_clock_ms(config.campaign_id, 0)
        return sent + (min(pending) - redis_now - ROUND_MARGIN_MS) / 1000

    async def run(self) -> None:
        """Background task: re-check every sold-out campaign every refresh_s, all at once and on a
        fixed beat (a slow check must not push the next one past SNAPSHOT_TRUST_MS)."""
        beat = time.monotonic()
        while True:
            beat = max(beat + self.refresh_s, time.monotonic())
            await asyncio.sleep(beat - time.monotonic())
            await asyncio.gather(*(self._refresh(entry) for entry in list(self._entries.values())))

    async def _refresh(self, entry: _Entry) -> None:
        try:
            await self._check(entry)
        except Exception as exc:  # noqa: BLE001 - Redis may be away; try again later
            log.warning("sold-out refresh of %s failed: %s", entry.config.campaign_id, exc,
                        extra={"campaign": entry.config.campaign_id})

