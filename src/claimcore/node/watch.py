"""WatchCampaigns: each watched campaign's state, computed once per change, pushed to every watcher.

One task (`CampaignStates.run`) keeps the state of every campaign somebody watches on this node:
- every READ_EVERY_S it reads each watched campaign's config (pause flag, shard-map epoch) and,
  unless the sold-out cache already follows it, its figures: a campaign found empty is handed to
  the sold-out cache (`SoldOutCache.mark`), whose checks then decide (soldout.py). One read per
  campaign for all its watchers: a watcher costs no Redis read.
- every POLL_S it derives each state from what the node already holds (the config's window by the
  node's clock, the pause flag, the sold-out snapshot and how long it may answer), and when a
  state changed, or a sold-out state was confirmed again by a check (a heartbeat), or KEEPALIVE_S
  passed, it builds one CampaignState and offers it to every watcher of the campaign.
A watcher holds only the latest state per campaign (a dict: at most MAX_WATCHED entries), so a
slow reader skips states, never queues them, and costs the node nothing more.

Sold out is only ever said with `sold_out_valid_for_ms`: what is left, when the state is written,
of the window in which the node's own snapshot may answer SOLD_OUT (`Snapshot.answer_until`, at
most SNAPSHOT_TRUST_MS = 1.5 s after the start of the check that found the campaign empty). Stock
that comes back after that check's start is claimable only RETURN_DELAY_MS = 2 s after it came
back, so a client that stops answering locally when that validity runs out (less its margin)
stops before anyone can be granted the returning stock. docs/architecture.md, "The pushed
campaign state", has the delay bounds and the whole argument.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from dataclasses import dataclass, field

import grpc

from claimcore import validation as v
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.node.errors import grpc_errors
from claimcore.node.soldout import SoldOutCache
from claimcore.security import auth, scope
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RETURN_DELAY_MS, RedisInventory
from claimcore.v1 import claims_pb2 as pb

log = logging.getLogger(__name__)

MAX_WATCHED = 100      # campaign ids per WatchCampaigns stream
POLL_S = 0.1           # states derived again (in-process: no Redis)
READ_EVERY_S = 0.25    # each watched campaign's config and figures read again (shared by all watchers)
KEEPALIVE_S = 2.0      # every state is sent again at least this often (clients spot a silent stream)
REWRITE_AFTER_S = 0.02  # a sold-out state waiting longer than this to be written gets its validity cut

Phase = int  # a pb.CampaignPhase value


@dataclass
class _Watched:
    """One watched campaign: what the reads found and the state last offered."""

    config: CampaignConfig
    watchers: set[Watcher] = field(default_factory=set)
    paused: bool = False
    read_at: float = -math.inf       # monotonic time of the last read's start
    reading: asyncio.Task[None] | None = None
    phase: Phase = pb.CAMPAIGN_PHASE_UNSPECIFIED
    epoch: int = -1
    answer_until: float = 0.0        # the sold-out validity last offered (monotonic)
    returning_until: float = 0.0     # STOCK_RETURNING shown until then (monotonic)
    sent_at: float = -math.inf       # monotonic time of the last state offered
    state: tuple[pb.CampaignState, float] | None = None  # the last state and when it was made


class Watcher:
    """One stream: the latest state per campaign, waiting to be written."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[pb.CampaignState, float]] = {}
        self.wake = asyncio.Event()

    def offer(self, state: pb.CampaignState, made: float) -> None:
        self.latest[state.campaign_id] = (state, made)  # replaces an unwritten older one
        self.wake.set()

    def take(self) -> list[tuple[pb.CampaignState, float]]:
        self.wake.clear()
        states, self.latest = list(self.latest.values()), {}
        return states


def watched_ids(ids: list[str]) -> list[str]:
    """The request's ids, checked, each once, in their order."""
    if not 1 <= len(ids) <= MAX_WATCHED:
        raise v.InvalidInput(f"campaign_ids holds 1 to {MAX_WATCHED} ids, not {len(ids)}")
    for i, cid in enumerate(ids):
        v.check_id(f"campaign_ids[{i}]", cid, v.CAMPAIGN_ID)
    return list(dict.fromkeys(ids))


def fresh(state: pb.CampaignState, made: float) -> pb.CampaignState:
    """The state as it may be written now: a sold-out state's validity less the time it waited."""
    waited = time.monotonic() - made
    if state.phase != pb.CAMPAIGN_PHASE_SOLD_OUT or waited <= REWRITE_AFTER_S:
        return state
    late = pb.CampaignState()
    late.CopyFrom(state)
    late.sold_out_valid_for_ms = max(0, state.sold_out_valid_for_ms - math.ceil(waited * 1000))
    late.observed_at_ms = now_ms()
    return late


class CampaignStates:
    def __init__(self, inventory: RedisInventory, campaigns: CampaignCache, soldout: SoldOutCache,
                 poll_s: float = POLL_S, read_every_s: float = READ_EVERY_S) -> None:
        self.inventory = inventory
        self.campaigns = campaigns
        self.soldout = soldout
        self.poll_s = poll_s
        self.read_every_s = read_every_s
        self._watched: dict[str, _Watched] = {}
        self._sequence = itertools.count(1)
        self._closing = False

    # ---------------------------------------------------------------- the RPC

    async def serve(self, request: pb.WatchCampaignsRequest, context: grpc.aio.ServicerContext) -> None:
        """ClaimService.WatchCampaigns: the current states at once, then every new one, until the
        caller goes away. Bad input is refused before anything is watched."""
        watcher = Watcher()
        entries: list[_Watched] = []
        # Authenticated at the door (pipeline.authenticated), which runs the whole stream as
        # its caller: OPEN on a node without credentials.
        caller = auth.current()
        async with grpc_errors(context):
            configs = [await self.campaigns.require(cid) for cid in watched_ids(list(request.campaign_ids))]
            for config in configs:
                if caller.channel is not None:
                    scope.require_open_to(config, caller.channel)  # a channel watches only its campaigns
            for config in configs:
                entries.append(self._subscribe(config, watcher))
        try:
            for entry in entries:  # the first read of a newly watched campaign, shared with its watchers
                if entry.state is None and entry.reading is not None:
                    await asyncio.shield(entry.reading)
                if entry.state is None:
                    self._publish(entry, time.monotonic())
                if entry.state is not None:
                    watcher.offer(*entry.state)
            while not self._closing:
                await watcher.wake.wait()
                for state, made in watcher.take():
                    await context.write(pb.WatchCampaignsResponse(state=fresh(state, made)))
        finally:
            for entry in entries:
                self._unsubscribe(entry, watcher)

    def _subscribe(self, config: CampaignConfig, watcher: Watcher) -> _Watched:
        entry = self._watched.get(config.campaign_id)
        if entry is None:
            entry = self._watched[config.campaign_id] = _Watched(config)
            entry.reading = asyncio.get_running_loop().create_task(self._read(entry))
        entry.watchers.add(watcher)
        return entry

    def _unsubscribe(self, entry: _Watched, watcher: Watcher) -> None:
        entry.watchers.discard(watcher)
        if not entry.watchers and self._watched.get(entry.config.campaign_id) is entry:
            del self._watched[entry.config.campaign_id]  # nobody watches it: no more reads

    def close(self) -> None:
        """The node is draining: end every stream now (status OK), so that their clients subscribe
        to another node at once instead of holding the drain for its whole grace period."""
        self._closing = True
        for entry in self._watched.values():
            for watcher in entry.watchers:
                watcher.wake.set()

    @property
    def watchers(self) -> int:
        """Streams open now (for tests and metrics)."""
        return len({w for entry in self._watched.values() for w in entry.watchers})

    # ---------------------------------------------------------------- the one task

    async def run(self) -> None:
        """Background task: read what is due, derive every state, offer what changed."""
        while True:
            await asyncio.sleep(self.poll_s)
            now = time.monotonic()
            for entry in list(self._watched.values()):
                if entry.reading is None and now - entry.read_at >= self.read_every_s:
                    entry.reading = asyncio.get_running_loop().create_task(self._read(entry))
                self._publish(entry, now)

    async def _read(self, entry: _Watched) -> None:
        """The campaign's config and pause flag; its figures, unless the sold-out cache follows it."""
        entry.read_at = time.monotonic()
        try:
            status = await self.inventory.load_campaign(entry.config.campaign_id)
            if status is not None:
                entry.config, entry.paused = status.config, status.paused
                if self.soldout.snapshot(entry.config.campaign_id) is None:
                    figures = await self.inventory.figures(entry.config)
                    if figures.total_remaining == 0 and not figures.lease_records:
                        self.soldout.mark(entry.config)  # its checks decide (soldout.py)
        except Exception as exc:  # noqa: BLE001 - Redis may be away: the states keep, sold out lapses
            log.warning("watch read of %s failed: %s", entry.config.campaign_id, exc,
                        extra={"campaign": entry.config.campaign_id})
        finally:
            entry.reading = None
        self._publish(entry, time.monotonic())  # what the read changed goes out now, not a tick later

    def _phase(self, entry: _Watched, now: float) -> tuple[Phase, float]:
        """The campaign's phase now and, when sold out, until when (monotonic) that may be said."""
        config = entry.config
        if config.starts_at_ms or config.ends_at_ms:
            wall = now_ms()
            if wall < config.starts_at_ms:
                return pb.CAMPAIGN_PHASE_NOT_STARTED, 0.0
            if config.ends_at_ms and wall >= config.ends_at_ms:
                return pb.CAMPAIGN_PHASE_ENDED, 0.0
        if entry.paused:
            return pb.CAMPAIGN_PHASE_PAUSED, 0.0
        snapshot = self.soldout.snapshot(config.campaign_id)
        if snapshot is not None and not snapshot.paused and now < snapshot.answer_until:
            return pb.CAMPAIGN_PHASE_SOLD_OUT, snapshot.answer_until
        came_back = snapshot is None or not self.soldout.is_sold_out(config.campaign_id)
        if entry.phase == pb.CAMPAIGN_PHASE_SOLD_OUT and came_back:
            # The sold-out cache reopened it (stock seen again), dropped a snapshot whose grants
            # moved (a returned voucher was granted), or a round is due: stock is back.
            entry.returning_until = now + RETURN_DELAY_MS / 1000
        if now < entry.returning_until:
            return pb.CAMPAIGN_PHASE_STOCK_RETURNING, 0.0
        return pb.CAMPAIGN_PHASE_OPEN, 0.0

    def _publish(self, entry: _Watched, now: float) -> None:
        """Offer the campaign's state to its watchers if it changed, was confirmed, or is due again."""
        phase, answer_until = self._phase(entry, now)
        if (phase == entry.phase and entry.config.epoch == entry.epoch and answer_until == entry.answer_until
                and now - entry.sent_at < KEEPALIVE_S):
            return
        wall = now_ms()
        state = pb.CampaignState(
            campaign_id=entry.config.campaign_id, phase=phase, shard_epoch=entry.config.epoch,
            sequence=next(self._sequence), observed_at_ms=wall,
            sold_out_valid_for_ms=max(0, math.floor((answer_until - now) * 1000)) if answer_until else 0,
            stock_back_by_ms=(wall + math.ceil((entry.returning_until - now) * 1000)
                              if phase == pb.CAMPAIGN_PHASE_STOCK_RETURNING else 0),
        )
        entry.phase, entry.epoch, entry.answer_until = phase, entry.config.epoch, answer_until
        entry.sent_at = now
        entry.state = (state, now)
        for watcher in entry.watchers:
            watcher.offer(state, now)
