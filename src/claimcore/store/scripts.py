"""The Lua scripts of lua/*.lua as objects that know their SHA.

A script is sent with EVALSHA; when Redis answers NOSCRIPT (after a restart, a
failover or SCRIPT FLUSH: the script cache is volatile) it is loaded again and
the call repeated once. Works with redis.asyncio.Redis and RedisCluster; on a
cluster every script call goes through cluster_calls.eval_on_cluster, so the
stock moves of borrowing and resharding get the same redirection handling and
replica acknowledgements as claims.

What several scripts share (lua/_*.lua: the Redis clock, the epoch check, grant and order
records, a voucher's use) is written once and pasted in by `-- #include NAME` lines, not kept
in a Redis Functions library: every call stays one EVALSHA of a self-contained script, which
eval_on_cluster pipelines per master like any other; the SHA is taken over the assembled
source, so a changed helper changes the SHA of every script that uses it; and there is no
FUNCTION LOAD to repeat on every master after each restart or failover (NOSCRIPT reloads the
one script a call needs). The price: a call defines its script's helpers again (about 0.05 µs
each on the server).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from claimcore.store.cluster_calls import eval_on_cluster

INCLUDE = "-- #include "


def _source(name: str) -> str:
    """A script's text, each `-- #include _helpers` line replaced by lua/_helpers.lua, itself
    included the same way (shared helpers travel inside every script that uses them: one
    EVALSHA, nothing to load first)."""
    text = resources.files("claimcore.store.lua").joinpath(f"{name}.lua").read_text()
    lines = text.splitlines(keepends=True)
    return "".join(_source(line[len(INCLUDE):].strip()) if line.startswith(INCLUDE) else line
                   for line in lines)


class LuaScript:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._eval(client, keys, args)
        except NoScriptError:
            await client.script_load(self.source)
            return await self._eval(client, keys, args)

    async def _eval(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        if not isinstance(client, RedisCluster):
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        # The cluster path follows MOVED/ASK/TRYAGAIN, reloads on NOSCRIPT itself (but for
        # CLAIMCORE_CLUSTER_PIPELINING=0), and WAITs for replicas when the node asks for it.
        (reply,) = await eval_on_cluster(client, self, [(keys, args)])
        if isinstance(reply, Exception):
            raise reply
        return reply

CLAIM = LuaScript("claim")
INIT_SHARD = LuaScript("init_shard")
CREATE_CAMPAIGN = LuaScript("create_campaign")
LEND = LuaScript("lend")
CREDIT = LuaScript("credit")
FENCE = LuaScript("fence")
EXPORT = LuaScript("export")
ADOPT = LuaScript("adopt")
FORGET = LuaScript("forget")
LOOKUP = LuaScript("lookup")
LOCK = LuaScript("lock")
BEGIN_RESHARD = LuaScript("begin_reshard")
REDEEM = LuaScript("redeem")
REVERSE = LuaScript("reverse")
ELIGIBILITY = LuaScript("eligibility")
HOLDS = LuaScript("holds")
RECYCLE = LuaScript("recycle")
STACK = LuaScript("stack")
ARCHIVE = LuaScript("archive")
ALL = (CLAIM, INIT_SHARD, CREATE_CAMPAIGN, LEND, CREDIT,
       FENCE, EXPORT, ADOPT, FORGET, LOOKUP, LOCK, BEGIN_RESHARD, REDEEM, REVERSE,
       ELIGIBILITY, HOLDS, RECYCLE, STACK, ARCHIVE)
