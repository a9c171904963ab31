"""The node's campaign cache against a real Redis: hits, misses, bounded memory."""

import asyncio

import redis.asyncio as aioredis

from claimcore.campaign import CampaignConfig
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from conftest import new_campaign_id


def test_unknown_ids_cannot_grow_the_cache_without_bound():
    # A Redis of its own: the session's is shared with the session's node, whose background reads
    # would land in the command count below.
    async def main(redis_server: EmbeddedRedis) -> tuple[int, CampaignConfig | None, int]:
        client = aioredis.Redis(port=redis_server.port, decode_responses=True)
        try:
            inventory = RedisInventory(client)
            config = CampaignConfig(campaign_id=new_campaign_id(), inventory=10, shards=2)
            await inventory.create_campaign(config)
            cache = CampaignCache(inventory, max_entries=50)
            assert await cache.get(config.campaign_id) == config
            for i in range(500):
                assert await cache.get(f"nobody-{i}") is None
                assert len(cache._entries) <= 50
            commands_before = (await client.info("stats"))["total_commands_processed"]
            found = await cache.get(config.campaign_id)
            commands_after = (await client.info("stats"))["total_commands_processed"]
            return len(cache._entries), found, commands_after - commands_before
        finally:
            await client.aclose()

    with EmbeddedRedis() as own:
        size, found, commands = asyncio.run(main(own))
    assert size <= 50
    assert found is not None and found.inventory == 10
    assert commands <= 2  # at most one reload (plus the INFO call itself)
