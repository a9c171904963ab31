"""Every script's sha is the SHA-1 of its source, and RedisInventory reloads the scripts after
SCRIPT FLUSH or a Redis restart (NOSCRIPT) and goes on: grants made before survive.

Each test runs on a real redis-server (the session's, or for the restart a private one with AOF)
and uses its own campaign id; results are compared with exact values.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis
from lua_support import T0, config

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store import scripts
from claimcore.store.inventory import Figures, RedisInventory
from claimcore.store.replies import ClaimItem, ItemResult
from conftest import new_campaign_id
from support import run, users_on


def test_scripts_reload_after_script_flush(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    for script in scripts.ALL:
        assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()
        assert redis_client.script_load(script.source) == script.sha

    cid = new_campaign_id("flush")
    cfg = config(cid, inventory=6, shards=2)
    users0, users1 = users_on(0, 2, 4), users_on(1, 2, 1)

    async def fn(inv: RedisInventory, client: Any) -> Any:
        out = []
        await client.script_flush()
        out.append(await client.script_exists(*(s.sha for s in scripts.ALL)))
        out.append(await inv.create_campaign(cfg))     # CREATE_CAMPAIGN + INIT_SHARD reload
        await client.script_flush()
        out.append(await inv.claim(cid, 0, T0, [ClaimItem(u, "r" + u, "") for u in users0[:3]]))
        out.append(await client.script_exists(scripts.CLAIM.sha))
        await client.script_flush()
        out.append(await inv.claim(cid, 0, T0, [ClaimItem(users0[3], "x", "")]))
        await client.script_flush()
        out.append(await inv.borrow(cfg, 0, 1))        # LEND + CREDIT reload
        await client.script_flush()
        out.append(await inv.claim(cid, 0, T0 + 1, [ClaimItem(users0[3], "x", "")]))
        out.append(await inv.claim(cid, 1, T0 + 2, [ClaimItem(users1[0], "y", "")]))
        out.append(await inv.figures(cfg))
        return out

    out = run(redis_server, fn)
    assert out[0] == [False] * len(scripts.ALL)
    assert out[1] is True
    assert out[2] == (0, [ItemResult(1, f"{cid}-0-{i}", T0) for i in (1, 2, 3)])
    assert out[3] == [True]
    assert out[4] == (0, [ItemResult(4, "", 0)])
    assert out[5] == 1   # donor shard 1 has 3: gives max(1, min(64, 3 // 2)) = 1
    assert out[6] == (0, [ItemResult(1, f"{cid}-0-4", T0 + 1)])
    assert out[7] == (1, [ItemResult(1, f"{cid}-1-1", T0 + 2)])
    assert out[8] == Figures(remaining=[0, 1], granted=[4, 1], in_leases=0)


def test_scripts_reload_after_redis_restart(tmp_path: Any) -> None:
    """A restart empties the script cache but (AOF) keeps the data: grants survive, claims go on."""
    server = EmbeddedRedis(appendfsync="always", data_dir=str(tmp_path)).start()
    try:
        cid = new_campaign_id("restart")
        cfg = config(cid, inventory=3, shards=1)

        async def before(inv: RedisInventory, client: Any) -> Any:
            await inv.create_campaign(cfg)
            return await inv.claim(cid, 0, T0, [ClaimItem("u1", "r1", "")])

        async def after(inv: RedisInventory, client: Any) -> Any:
            exists = await client.script_exists(scripts.CLAIM.sha)
            claimed = await inv.claim(cid, 0, T0 + 1, [ClaimItem("u1", "r1", ""), ClaimItem("u2", "r2", "")])
            return exists, claimed, await inv.load_campaign(cid)

        assert run(server, before) == (2, [ItemResult(1, f"{cid}-0-1", T0)])
        server.stop()
        server.start()
        exists, claimed, status = run(server, after)
        assert exists == [False]
        assert claimed == (1, [ItemResult(2, f"{cid}-0-1", T0), ItemResult(1, f"{cid}-0-2", T0 + 1)])
        assert status is not None and status.config == cfg
    finally:
        server.stop()
