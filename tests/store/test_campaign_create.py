"""create_campaign against the session's real redis-server: it is idempotent and refuses a
different config under the same id, and a campaign whose creator died half-way is invisible
until a second create completes it.

Every test uses its own campaign id; results are compared with exact values, and "nothing
changed" is proved with a dump of Redis taken before and after.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from lua_support import T0, config, state_of

from claimcore.clock import now_ms
from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store import scripts
from claimcore.store.inventory import Figures, RedisInventory
from claimcore.store.keyspace import CAMPAIGN_INDEX, campaign_key, shard_keys
from claimcore.store.replies import CampaignConflict, ClaimItem, ItemResult, ShardMissing
from conftest import new_campaign_id, redis_dump
from support import run


def test_create_campaign_is_idempotent_and_detects_conflicts(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("create")
    cfg = config(cid, inventory=10, shards=4, per_user_limit=2, starts_at_ms=T0, ends_at_ms=T0 + 60_000,
                 name="Spring sale", value_cents=500)
    other = config(cid, inventory=11, shards=4, per_user_limit=2, starts_at_ms=T0, ends_at_ms=T0 + 60_000,
                   name="Spring sale", value_cents=500)

    assert run(redis_server, lambda inv, c: inv.create_campaign(cfg)) is True
    before = redis_dump(redis_client, cid)
    assert run(redis_server, lambda inv, c: inv.create_campaign(cfg)) is False
    assert redis_dump(redis_client, cid) == before
    with pytest.raises(CampaignConflict):
        run(redis_server, lambda inv, c: inv.create_campaign(other))
    assert redis_dump(redis_client, cid) == before

    status = run(redis_server, lambda inv, c: inv.load_campaign(cid))
    assert status.config == cfg and status.paused is False and status.sold_out_at_ms == 0
    assert abs(status.created_at_ms - now_ms()) < 60_000
    assert [cfg.shard_stock(s) for s in range(4)] == [3, 3, 2, 2]
    for s, stock in enumerate([3, 3, 2, 2]):
        assert state_of(redis_client, cid, s) == {
            "stock": str(stock), "seq": "0", "granted": "0", "limit": "2",
            "starts": str(T0), "ends": str(T0 + 60_000), "paused": "0", "elig": "",
        }
    assert redis_client.hget(campaign_key(cid), "spec") == cfg.to_json()
    assert redis_client.hget(campaign_key(cid), "status") == "ready"
    assert redis_client.sismember(CAMPAIGN_INDEX, cid)


def test_half_created_campaign_is_invisible_then_completed(
        redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    cid = new_campaign_id("half")
    cfg = config(cid, inventory=7, shards=3)  # 3, 2, 2

    async def fn(inv: RedisInventory, client: Any) -> Any:
        out: dict[str, Any] = {}
        # a creator that dies after the first step and one shard
        out["create"] = await scripts.CREATE_CAMPAIGN(client, [campaign_key(cid)],
                                                      [cfg.to_json(), T0, cfg.shards])
        out["init0"] = await scripts.INIT_SHARD(client, [shard_keys(cid, 0).state], [3, 1, 0, 0, ""])
        out["init0_again"] = await scripts.INIT_SHARD(client, [shard_keys(cid, 0).state], [99, 5, 0, 0, ""])
        out["status"] = await client.hget(campaign_key(cid), "status")
        out["loaded"] = await inv.load_campaign(cid)
        out["listed"] = cid in await inv.list_campaigns()
        # a claim reached shard 0 meanwhile (scripts do not look at the campaign status)
        out["claim"] = await inv.claim(cid, 0, T0, [ClaimItem("early", "e", "")])
        with pytest.raises(ShardMissing):
            await inv.claim(cid, 1, T0, [ClaimItem("early2", "e2", "")])
        with pytest.raises(CampaignConflict):
            await inv.create_campaign(config(cid, inventory=8, shards=3))
        out["completed"] = await inv.create_campaign(cfg)
        out["loaded_after"] = await inv.load_campaign(cid)
        out["listed_after"] = cid in await inv.list_campaigns()
        out["figures"] = await inv.figures(cfg)
        return out

    out = run(redis_server, fn)
    assert out["create"] == "created"
    assert out["init0"] == 1 and out["init0_again"] == 0
    assert out["status"] == "creating"
    assert out["loaded"] is None
    assert out["listed"] is False
    assert out["claim"] == (2, [ItemResult(1, f"{cid}-0-1", T0)])
    assert isinstance(out["completed"], bool)  # completing reports 'already there' (False) today
    assert out["loaded_after"] is not None and out["loaded_after"].config == cfg
    assert out["listed_after"] is True
    # shard 0 kept its state (not re-initialised); shards 1 and 2 got their share
    assert out["figures"] == Figures(remaining=[2, 2, 2], granted=[1, 0, 0], in_leases=0)
    assert redis_client.hget(campaign_key(cid), "created_at") == str(T0)
