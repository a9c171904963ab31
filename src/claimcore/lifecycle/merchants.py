"""The merchants allowed to redeem a campaign's vouchers.

Merchants are registered per campaign in the campaign's hash slot
(`cc:{C}:merchants`). The node checks the merchant before calling
redeem.lua, from a cache that lives MERCHANT_TTL_S: a merchant registered
through one node can redeem through any node within that time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from claimcore import validation as v
from claimcore.campaign import CampaignConfig
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import merchants_key

MERCHANT_TTL_S = 1.0


@dataclass(frozen=True)
class Merchant:
    campaign_id: str
    merchant_id: str
    name: str = ""
    category: str = ""
    region: str = ""

    def check(self) -> None:
        v.check_id("campaign_id", self.campaign_id, v.CAMPAIGN_ID)
        v.check_id("merchant_id", self.merchant_id, v.MERCHANT_ID)
        v.check_id("category", self.category, v.CATEGORY)
        if self.region:
            v.check_id("region", self.region, v.REGION)
        if len(self.name) > v.MAX_NAME or any(ord(c) < 32 or c == "|" for c in self.name):
            raise v.InvalidInput(f"name must be at most {v.MAX_NAME} printable characters, no '|'")

    def allowed_in(self, config: CampaignConfig) -> str:
        """'' if this merchant may redeem the campaign's vouchers, else why not."""
        if config.category and self.category != config.category:
            return f"merchant category {self.category!r} is not the campaign's {config.category!r}"
        if config.regions and self.region not in config.regions:
            return f"merchant region {self.region!r} is not among the campaign's regions"
        return ""


class Merchants:
    """The merchant registry of every campaign, read through this node's cache. One per node
    (Redemptions holds it), so a merchant registered through a node can redeem there at once."""

    def __init__(self, inventory: RedisInventory) -> None:
        self.inventory = inventory
        self._cached: dict[str, tuple[float, dict[str, Merchant]]] = {}

    async def register(self, config: CampaignConfig, merchant: Merchant) -> Merchant:
        merchant.check()
        why_not = merchant.allowed_in(config)
        if why_not:
            raise v.InvalidInput(why_not)
        await self.inventory.redis.hset(merchants_key(config.campaign_id), merchant.merchant_id,
                                        f"{merchant.category}|{merchant.region}|{merchant.name}")
        self._cached.pop(config.campaign_id, None)
        return merchant

    async def of_campaign(self, campaign_id: str, fresh: bool = False) -> dict[str, Merchant]:
        """The campaign's merchants by id; `fresh` reads them from Redis whatever the cache holds."""
        cached = self._cached.get(campaign_id)
        if cached and not fresh and cached[0] > time.monotonic():
            return cached[1]
        raw = await self.inventory.redis.hgetall(merchants_key(campaign_id))
        found = {}
        for merchant_id, record in raw.items():
            category, region, name = record.split("|", 2)
            found[merchant_id] = Merchant(campaign_id, merchant_id, name, category, region)
        self._cached[campaign_id] = (time.monotonic() + MERCHANT_TTL_S, found)
        return found
