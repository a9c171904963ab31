"""The front node's cache of campaign configs, read from Redis.

A found campaign is cached for `ttl_s`. Its spec never changes; its shard map
may (a reshard), and a node need not poll for that: the first script call on
the old map is refused as STALE and the node calls `reload`. An unknown id
is remembered for `negative_ttl_s`, which bounds how long another node may
answer NOT_FOUND for a campaign just created elsewhere.
Concurrent misses for one id share a single Redis read. The cache holds at
most `max_entries` ids: unknown ids come from callers, and a stream of random
ones must not grow the node's memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from claimcore.campaign import CampaignConfig
from claimcore.store.inventory import RedisInventory
from claimcore.store.replies import MAX_MOVING_S, MOVING_RETRY_S, ShardMoving, StaleMap

T = TypeVar("T")

RELOAD_TRIES = 50
RELOAD_PAUSE_S = 0.01


class CampaignNotFound(LookupError):
    """No ready campaign has this id."""


class CampaignCache:
    def __init__(
        self, inventory: RedisInventory, ttl_s: float = 30.0, negative_ttl_s: float = 0.5,
        max_entries: int = 10_000,
    ) -> None:
        self.inventory = inventory
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, CampaignConfig | None]] = {}
        self._loading: dict[str, asyncio.Future[CampaignConfig | None]] = {}

    async def get(self, campaign_id: str) -> CampaignConfig | None:
        entry = self._entries.get(campaign_id)
        if entry and entry[0] > time.monotonic():
            return entry[1]
        pending = self._loading.get(campaign_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CampaignConfig | None] = asyncio.get_running_loop().create_future()
        self._loading[campaign_id] = future
        try:
            status = await self.inventory.load_campaign(campaign_id)
            config = status.config if status else None
            self.put(campaign_id, config)
            future.set_result(config)
            return config
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._loading[campaign_id]

    async def require(self, campaign_id: str) -> CampaignConfig:
        """The campaign, or CampaignNotFound (NOT_FOUND to callers)."""
        config = await self.get(campaign_id)
        if config is None:
            raise CampaignNotFound(campaign_id)
        return config

    async def reload(self, campaign_id: str, min_epoch: int) -> CampaignConfig | None:
        """The campaign at shard-map epoch `min_epoch` or newer, read again from Redis."""
        config = None
        for _ in range(RELOAD_TRIES):
            entry = self._entries.get(campaign_id)
            if entry and entry[1] is not None and entry[1].epoch >= min_epoch:
                return entry[1]  # another waiter reloaded it already
            self._entries.pop(campaign_id, None)
            config = await self.get(campaign_id)
            if config is None or config.epoch >= min_epoch:
                return config
            await asyncio.sleep(RELOAD_PAUSE_S)  # joined a read made before the reshard: read again
        return config

    async def on_live_map(self, config: CampaignConfig, call: Callable[[CampaignConfig], Awaitable[T]]) -> T:
        """call(config), following a reshard: on STALE reload the map and call again, on
        MOVING wait and call again (for at most MAX_MOVING_S). For calls off the batcher's
        path (GetClaim, Redeem, Reverse): the batcher does the same for claims."""
        give_up = time.monotonic() + MAX_MOVING_S
        while True:
            try:
                return await call(config)
            except StaleMap as exc:
                reloaded = await self.reload(config.campaign_id, exc.epoch)
                if reloaded is None or reloaded.epoch < exc.epoch:
                    raise
                config = reloaded
            except ShardMoving:
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(MOVING_RETRY_S)

    def cached(self) -> list[CampaignConfig]:
        """The campaigns this node has found (and not forgotten)."""
        return [config for _, config in self._entries.values() if config is not None]

    def put(self, campaign_id: str, config: CampaignConfig | None) -> None:
        now = time.monotonic()
        if len(self._entries) >= self.max_entries:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now and e[1] is not None}
            if len(self._entries) >= self.max_entries:  # all live campaigns: start afresh
                self._entries.clear()
        ttl = self.ttl_s if config else self.negative_ttl_s
        self._entries[campaign_id] = (now + ttl, config)
