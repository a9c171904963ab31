"""The sold-out cache: once a campaign is empty, answer without Redis.

After sold out no grant can happen, so the set of grants is frozen. The node
loads it once (a snapshot, bounded by the inventory) and then answers every
claim locally with exactly what claim.lua would say: a replay of a granted
request_id gets its voucher, a user at the limit gets ALREADY_CLAIMED, anyone
else SOLD_OUT.

The snapshot is only trusted while Redis agrees: every refresh compares the
campaign's live figures with it. If stock is back (a round released, vouchers
recycled, a lease settled) the campaign reopens; at a later round's release
time the snapshot stops answering at once; if the number of grants moved, the snapshot is reloaded.
Until a snapshot is loaded, claims still go to Redis (which answers them
correctly), only without the borrow attempt.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.inventory import ClaimItem, Code, ItemResult, RedisInventory

log = logging.getLogger(__name__)

SNAPSHOT_LIMIT = 2_000_000  # grants; beyond this the node keeps asking Redis


@dataclass
class Snapshot:
    """The grants as Redis stores them (keyspace.py), parsed only when asked."""

    granted: int
    reqs: dict[str, str] = field(default_factory=dict)   # "user|request_id" -> "voucher|at|channel"
    users: dict[str, str] = field(default_factory=dict)  # user -> "count|voucher|at|rids"

    def answer(self, config: CampaignConfig, item: ClaimItem) -> ItemResult:
        record = self.reqs.get(f"{item.user_id}|{item.request_id}")
        if record is not None:
            voucher, at, _ = record.split("|", 2)
            return ItemResult(Code.REPLAY, voucher, int(at))
        held = self.users.get(item.user_id)
        if held is not None:
            count, voucher, at, _ = held.split("|", 3)
            if int(count) >= config.per_user_limit:
                return ItemResult(Code.ALREADY_CLAIMED, voucher, int(at))
        if config.ends_at_ms and now_ms() >= config.ends_at_ms:
            return ItemResult(Code.ENDED, "", 0)
        return ItemResult(Code.SOLD_OUT, "", 0)


@dataclass
class _Entry:
    config: CampaignConfig
    snapshot: Snapshot | None = None
    loading: bool = False
    next_round_at: float = float("inf")  # unix ms of the next later round: the snapshot ends then

    def __post_init__(self) -> None:
        now = now_ms()
        self.next_round_at = min((at for at, _ in self.config.rounds if at > now), default=float("inf"))


class SoldOutCache:
    def __init__(self, inventory: RedisInventory, refresh_s: float = 1.0) -> None:
        self.inventory = inventory
        self.refresh_s = refresh_s
        self._entries: dict[str, _Entry] = {}

    def is_sold_out(self, campaign_id: str) -> bool:
        return campaign_id in self._entries

    def snapshot(self, campaign_id: str) -> Snapshot | None:
        entry = self._entries.get(campaign_id)
        if entry is None or now_ms() >= entry.next_round_at:  # a round's stock is due: ask Redis
            return None
        return entry.snapshot

    def mark(self, config: CampaignConfig) -> None:
        """Called by the batcher when nothing is left to borrow."""
        entry = self._entries.get(config.campaign_id)
        if entry is not None:
            if config.epoch > entry.config.epoch:  # resharded: read every shard of the new map
                entry.config = config
            return
        entry = self._entries[config.campaign_id] = _Entry(config)
        asyncio.get_running_loop().create_task(self._first_load(entry))

    async def _first_load(self, entry: _Entry) -> None:
        try:
            await self.inventory.mark_sold_out(entry.config.campaign_id, now_ms())
        except Exception:  # noqa: BLE001 - the figure is informative only
            log.warning("could not record sold_out_at for %s", entry.config.campaign_id,
                        extra={"campaign": entry.config.campaign_id})
        await self._check(entry)

    async def _check(self, entry: _Entry) -> None:
        """Reopen, keep, or (re)load the snapshot, from the live figures."""
        config = entry.config
        if config.rounds:
            await self.inventory.release_due_rounds(config)  # no claim may reach Redis to do it
        figures = await self.inventory.figures(config)
        if figures.total_remaining > 0 or figures.lease_records:  # stock left, or moving
            self._entries.pop(config.campaign_id, None)
            log.info("campaign %s has stock again: reopened", config.campaign_id,
                     extra={"campaign": config.campaign_id})
            return
        granted = sum(figures.granted)
        if entry.snapshot is not None and entry.snapshot.granted == granted:
            return
        entry.snapshot = None
        if granted > SNAPSHOT_LIMIT or entry.loading:
            return
        entry.loading = True
        try:
            snapshot = Snapshot(granted)
            for shard in range(config.shard_slots):  # records move with their users
                reqs, users = await self.inventory.raw_grants(config, shard)
                snapshot.reqs.update(reqs)
                snapshot.users.update(users)
            if len(snapshot.reqs) == granted:  # nothing moved while we read
                entry.snapshot = snapshot
        finally:
            entry.loading = False

    async def run(self) -> None:
        """Background task: re-check every sold-out campaign every refresh_s."""
        while True:
            await asyncio.sleep(self.refresh_s)
            for entry in list(self._entries.values()):
                try:
                    await self._check(entry)
                except Exception as exc:  # noqa: BLE001 - Redis may be away; try again later
                    log.warning("sold-out refresh of %s failed: %s", entry.config.campaign_id, exc,
                                extra={"campaign": entry.config.campaign_id})
