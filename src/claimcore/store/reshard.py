"""Live resharding: change a campaign's shard count while it is being claimed.

A user's shard is shard_of(user, shards), and the shard holds the user's
records (per-user limit, idempotency). Changing the count moves some users
(jump hash moves the fewest: growing from N to M moves (M-N)/M of them, all to
the new shards; shrinking moves only the users of the retired shards). Their
records must move with them, and no shard may act on a user in the meantime.

The steps, each safe to repeat, so a reshard that dies half-way is finished
by running it again (a lock keeps two from running at once):

1. publish   the campaign hash gets the new map: shards M at epoch e+1
             (begin_reshard.lua). Nodes that reload from now on route by it.
2. fence     every shard ever made moves to epoch e+1 (fence.lua). claim.lua,
             lend.lua and lookup.lua refuse any other epoch, so a node on the
             old map gets STALE, reloads and routes again: it can never write
             to a shard a user has left. Shards that users move INTO are also
             frozen (MOVING): on growth only the new shards, so users who stay
             keep claiming; on shrink every remaining shard.
3. copy      each mover's records go to their new shard (adopt.lua, HSETNX),
             then are deleted from the old one. Nothing writes them meanwhile:
             old-map nodes are fenced, new-map nodes send movers to a frozen shard.
4. unfreeze  claims flow again everywhere; frozen_ms measures steps 2-4.
5. stock     retired shards are drained and stock is spread evenly over the
             new map, through leases (lend.lua/credit.lua): moved, never
             created or lost. Claims run meanwhile (a shard short of stock borrows).
6. finish    the campaign hash says ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignNotFound
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import campaign_key, reshard_lock_key, shard_keys

log = logging.getLogger(__name__)

LOCK_TTL_MS = 30_000
SCAN_PAGE = 2_000


class ReshardRefused(Exception):
    """An unfinished reshard to another count holds the campaign: finish that one first."""


class ReshardBusy(Exception):
    """Another reshard of this campaign is running now."""


@dataclass
class ReshardResult:
    campaign_id: str
    from_shards: int
    to_shards: int
    epoch: int
    moved_users: int = 0      # user records moved to another shard
    moved_records: int = 0    # grant records moved with them
    moved_stock: int = 0      # vouchers of stock moved between shards
    frozen_ms: int = 0        # how long some shard answered MOVING
    took_ms: int = 0
    resumed: bool = False     # finished a reshard that an earlier attempt left half-done


async def reshard(inventory: RedisInventory, campaign_id: str, shards: int) -> ReshardResult:
    """Change the campaign's shard count to `shards` (see the module doc)."""
    started = time.monotonic()
    status = await inventory.load_campaign(campaign_id)
    if status is None:
        raise CampaignNotFound(campaign_id)
    # validates the new count against the spec (1..MAX_SHARDS, at most inventory)
    status.config.with_map(shards, status.config.epoch, status.config.shard_slots)
    redis = inventory.redis
    async with _lock(redis, campaign_id):
        verdict, prev, now_shards, epoch, slots = await scripts.BEGIN_RESHARD(
            redis, [campaign_key(campaign_id)], [shards])
        if verdict == "missing":
            raise CampaignNotFound(campaign_id)
        if verdict == "busy":
            raise ReshardRefused(f"an unfinished reshard of {campaign_id} to {now_shards} shards holds it: "
                                 f"run it again with --shards {now_shards} first")
        old = status.config.with_map(int(prev), int(epoch) - (verdict != "same"), int(slots))
        new = status.config.with_map(int(now_shards), int(epoch), int(slots))
        result = ReshardResult(campaign_id, old.shards, new.shards, new.epoch, resumed=verdict == "resume")
        if verdict == "same":
            result.took_ms = _ms_since(started)
            return result
        frozen_at = time.monotonic()
        await _fence(inventory, new, old, status.paused)
        result.moved_users, result.moved_records = await _move_records(inventory, new)
        await _unfreeze(inventory, new)
        result.frozen_ms = _ms_since(frozen_at)
        # A pause or resume that raced with the fence may have missed new shards: apply it again.
        await inventory.set_paused(new, await redis.hget(campaign_key(campaign_id), "paused") == "1")
        result.moved_stock = await _spread_stock(inventory, new)
        await redis.hset(campaign_key(campaign_id), "status", "ready")
        await redis.hdel(campaign_key(campaign_id), "prev_shards")
    result.took_ms = _ms_since(started)
    return result


def _ms_since(t: float) -> int:
    return int((time.monotonic() - t) * 1000)


def receiving(new: CampaignConfig, old: CampaignConfig) -> list[int]:
    """The shards users may move into: frozen while the records move."""
    if new.shards > old.shards:
        return list(range(old.shards, new.shards))
    return list(range(new.shards))


async def _fence(inventory: RedisInventory, new: CampaignConfig, old: CampaignConfig, paused: bool) -> None:
    frozen = set(receiving(new, old))
    # New shards check eligibility records if any shard does: moved users bring theirs.
    flags = await asyncio.gather(*(inventory.redis.hget(shard_keys(new.campaign_id, s).state, "eligdata")
                                   for s in range(old.shard_slots)))
    eligdata = 1 if "1" in flags else 0
    await asyncio.gather(*(
        scripts.FENCE(inventory.redis, [shard_keys(new.campaign_id, s).state], [
            new.epoch, 1 if s in frozen else 0, new.per_user_limit, new.starts_at_ms, new.ends_at_ms,
            1 if paused else 0, new.eligibility_rule(), eligdata,
        ])
        for s in range(new.shard_slots)
    ))


async def _move_records(inventory: RedisInventory, new: CampaignConfig) -> tuple[int, int]:
    """Copy every user whose shard changed to the new one, then delete the old copy.

    Sources are scanned concurrently; a page of users costs four round trips
    and a handful of arguments, whatever its size: claims of movers wait for this.
    """
    counts = await asyncio.gather(*(_move_from(inventory, new, s) for s in range(new.shard_slots)))
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


async def _move_from(inventory: RedisInventory, new: CampaignConfig, source: int) -> tuple[int, int]:
    redis = inventory.redis
    src = shard_keys(new.campaign_id, source)
    users_moved = records_moved = 0
    # Users with grants are in `users`; users with only an eligibility record in `elig`.
    # A user in both is moved twice: the second time finds nothing left to copy.
    for scanned in (src.users, src.elig):
        cursor = 0
        while True:
            cursor, page = await redis.hscan(scanned, cursor, count=SCAN_PAGE)
            moved = await _move_page(inventory, new, source, page)
            users_moved += moved[0]
            records_moved += moved[1]
            if cursor == 0:
                break
    return users_moved, records_moved


async def _move_page(inventory: RedisInventory, new: CampaignConfig, source: int, page: dict[str, str]
                     ) -> tuple[int, int]:
    """Move the users of one scanned page whose shard changed: (users, grant records) moved."""
    redis = inventory.redis
    src = shard_keys(new.campaign_id, source)
    movers: dict[int, list[str]] = defaultdict(list)
    for user in page:
        target = shard_of(user, new.shards)
        if target != source:
            movers[target].append(user)
    if not movers:
        return 0, 0
    copies = await asyncio.gather(*(
        _copy(inventory, new.campaign_id, source, target, users) for target, users in movers.items()))
    # deleted only once copied: a crash in between leaves two copies, and the
    # rerun's HSETNX copy changes nothing before it deletes the old one
    await scripts.FORGET(redis, list(src.moving), [
        "\n".join(u for users in movers.values() for u in users),
        "\n".join(f for c in copies for f in c[2])])
    return sum(c[0] for c in copies), sum(c[1] for c in copies)


async def _copy(inventory: RedisInventory, campaign_id: str, source: int, target: int,
                users: list[str]) -> tuple[int, int, list[str]]:
    """Copy users' records from source to target: (users, grant records) newly written there,
    and the redemption fields copied (to delete at the source).

    Records travel as four text blobs (export.lua, adopt.lua), not as arguments.
    """
    src, dst = shard_keys(campaign_id, source), shard_keys(campaign_id, target)
    blobs = await scripts.EXPORT(inventory.redis, list(src.moving), ["\n".join(users)])
    written = await scripts.ADOPT(inventory.redis, [*dst.moving, dst.state], blobs)
    redeem_fields = [line.split("\t", 1)[0] for line in blobs[2].split("\n") if line]
    return int(written[0]), int(written[1]), redeem_fields


async def _unfreeze(inventory: RedisInventory, new: CampaignConfig) -> None:
    pipe = inventory.redis.pipeline(transaction=False)
    for s in range(new.shard_slots):  # thawed: a fence of this epoch resent later freezes nothing
        pipe.hset(shard_keys(new.campaign_id, s).state, mapping={"moving": 0, "thawed": new.epoch})
    await pipe.execute()


async def _spread_stock(inventory: RedisInventory, new: CampaignConfig) -> int:
    """Drain retired shards and even out the live ones (after settling leases made before the fence)."""
    await inventory.settle_leases(new)
    return await inventory.spread_stock(new)


@contextlib.asynccontextmanager
async def _lock(redis: object, campaign_id: str) -> AsyncIterator[None]:
    key, token = reshard_lock_key(campaign_id), uuid.uuid4().hex
    if not await scripts.LOCK(redis, [key], ["take", token, LOCK_TTL_MS]):
        raise ReshardBusy(f"another reshard of {campaign_id} is running")

    async def keep() -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_MS / 3000)
            if not await scripts.LOCK(redis, [key], ["extend", token, LOCK_TTL_MS]):
                log.warning("lost the reshard lock of %s: another reshard may run", campaign_id)

    keeper = asyncio.get_running_loop().create_task(keep())
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(Exception):
            await scripts.LOCK(redis, [key], ["release", token, LOCK_TTL_MS])

