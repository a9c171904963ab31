"""Later rounds: parts of a campaign's inventory held back until their release time.

A campaign's `rounds` list (release_at_ms, amount); what they do not hold is
claimable from the start. At a round's time its amount is credited into
shard 0, once (credit.lua, with the id "round-<k>" recorded in the shard's
credited set, which is also what tells the figures the round is out), then
spread over the live shards through the usual leases.

Three things release a due round, whichever comes first, all idempotent:
every node's keeper (every RELEASE_EVERY_S), a borrower that finds the
campaign empty, and a sold-out node's 1 s check. Sold-out snapshots stop
answering at a round's time, so claims reach the new stock.
"""

from __future__ import annotations

import asyncio
import logging

from claimcore.clock import now_ms
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory

log = logging.getLogger(__name__)

RELEASE_EVERY_S = 0.2


async def release_forever(inventory: RedisInventory, campaigns: CampaignCache,
                          every_s: float = RELEASE_EVERY_S) -> None:
    """Background task of a node: release the due rounds of the campaigns it serves."""
    released: set[tuple[str, int]] = set()  # (campaign, round) known to be out: no need to ask
    while True:
        await asyncio.sleep(every_s)
        now = now_ms()
        for config in campaigns.cached():
            due = [k for k in config.due_rounds(now) if (config.campaign_id, k) not in released]
            if not due:
                continue
            try:
                amount = await inventory.release_due_rounds(config)
                released.update((config.campaign_id, k) for k in due)
                if amount:
                    log.info("released %d vouchers of %s's rounds %s", amount, config.campaign_id, due)
            except Exception as exc:  # noqa: BLE001 - Redis may be away, or the map stale: next time
                log.warning("releasing rounds of %s failed: %s", config.campaign_id, exc,
                            extra={"campaign": config.campaign_id})
