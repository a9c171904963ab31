"""The ledger: every grant, redemption and reversal, appended to its shard's log in the same Lua call.

Each shard has a Redis stream `cc:{C:s}:log` (keyspace.py). claim.lua appends
one entry per call that granted anything, listing that call's grants (one
XADD per call, not per grant, keeps the hot path cheap):

    e=grant  t=<now_ms>  g="user<TAB>request_id<TAB>voucher<TAB>channel" lines

redeem.lua and reverse.lua append one entry per order:

    e=redeem   t u(ser) o(rder) m(erchant) a(mount) s(ubsidy) v(ouchers, comma) c(hannel) n(sn codes)
    e=reverse  t u o v(ouchers given back) x(vouchers kept: expired)

Because the entry is written by the script that makes the grants, the log
can never miss a grant or hold one that did not happen. Entries stay in the
shard that wrote them, also after a reshard moves the users' records.

Export reads the logs page by page. The cursor is the last entry id read per
shard, so an export resumes exactly where it stopped: each event once.
Reconcile recomputes the figures from the logs, merged into one time order
(a user's later events are on another shard after a reshard), and compares
them with the live counters.
"""

from __future__ import annotations

import base64
import heapq
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from claimcore import validation as v
from claimcore.campaign import CampaignConfig
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import shard_keys

MAX_PAGE = 10_000
DEFAULT_PAGE = 1_000
SCAN_PAGE = 1_000


@dataclass(frozen=True)
class Event:
    event_id: str
    kind: str
    shard: int
    at_ms: int
    user_id: str
    request_id: str = ""
    voucher_id: str = ""
    channel_id: str = ""
    order_id: str = ""
    merchant_id: str = ""
    order_amount_cents: int = 0
    subsidy_cents: int = 0
    sn_codes: tuple[str, ...] = ()
    returned: bool = False


def expand(shard: int, entry_id: str, fields: dict[str, str]) -> list[Event]:
    """The events of one log entry: one per voucher granted, redeemed, reversed, expired or released."""
    kind, at = fields.get("e", ""), int(fields.get("t", 0))
    eid = f"{shard}-{entry_id}-"
    if kind == "grant":
        out = []
        for i, line in enumerate(fields["g"].split("\n")):
            user, request_id, voucher, channel = line.split("\t")
            out.append(Event(eid + str(i), kind, shard, at, user, request_id, voucher, channel))
        return out
    if kind in ("expire", "release"):
        out = []
        for i, line in enumerate(fields["g"].split("\n")):
            user, voucher = line.split("\t")
            out.append(Event(eid + str(i), kind, shard, at, user, voucher_id=voucher))
        return out
    user, order = fields["u"], fields["o"]
    if kind == "redeem":
        vouchers = fields["v"].split(",")
        base, extra = divmod(int(fields["s"]), len(vouchers))  # the order's subsidy, shared out
        sns = tuple(x for x in fields.get("n", "").split(",") if x)
        return [Event(eid + str(i), kind, shard, at, user, voucher_id=v, channel_id=fields.get("c", ""),
                      order_id=order, merchant_id=fields["m"], order_amount_cents=int(fields["a"]),
                      subsidy_cents=base + (1 if i < extra else 0), sn_codes=sns)
                for i, v in enumerate(vouchers)]
    if kind == "reverse":
        back = [(v, True) for v in fields["v"].split(",") if v]
        kept = [(v, False) for v in fields["x"].split(",") if v]
        return [Event(eid + str(i), kind, shard, at, user, voucher_id=v, order_id=order, returned=r)
                for i, (v, r) in enumerate(back + kept)]
    raise ValueError(f"unknown ledger entry kind {kind!r} in shard {shard} entry {entry_id}")


# ------------------------------------------------------------------ cursors


def encode_cursor(positions: dict[int, str]) -> str:
    raw = json.dumps({str(s): p for s, p in sorted(positions.items())}, separators=(",", ":"))
    return "v1." + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[int, str]:
    """{} for ''; InvalidInput for anything that is not a cursor this module made."""
    if not cursor:
        return {}
    try:
        if not cursor.startswith("v1."):
            raise ValueError
        body = cursor[3:]
        raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        positions = {int(s): str(p) for s, p in raw.items() if str(s).isascii()}
        if len(positions) != len(raw):
            raise ValueError
        for p in positions.values():
            v.check_stream_id("cursor", p)
    except (ValueError, TypeError, AttributeError, RecursionError, json.JSONDecodeError):
        raise v.InvalidInput("cursor is not one that ExportEvents returned") from None
    return positions


# ------------------------------------------------------------------ export


async def read_page(inventory: RedisInventory, config: CampaignConfig, cursor: str, limit: int,
                    time_order: bool = False) -> tuple[list[Event], str, bool]:
    """Up to `limit` log entries after the cursor, as events; the next cursor; whether more remain.

    Shard by shard (each shard's log in order, then the next shard's), or with `time_order` the
    shards' next entries merged by entry id, then shard (see events_in_time_order for what that
    order means). Either way the cursor is the last entry taken per shard, so each event is
    handed over once, whichever order a page was read in, and a cursor works in both."""
    v.check_range("limit", limit, 1, MAX_PAGE)
    positions = decode_cursor(cursor)
    if time_order:
        entries, more = await _merged_page(inventory, config, positions, limit)
    else:
        entries, more = await _shard_page(inventory, config, positions, limit)
    events: list[Event] = []
    for shard, entry_id, fields in entries:
        events.extend(expand(shard, entry_id, fields))
        positions[shard] = entry_id
    return events, encode_cursor(positions), more


async def _after(inventory: RedisInventory, config: CampaignConfig, positions: dict[int, str], shard: int,
                 count: int) -> list[tuple[str, dict[str, str]]]:
    start = f"({positions[shard]}" if shard in positions else "-"
    return await inventory.redis.xrange(shard_keys(config.campaign_id, shard).log, start, "+", count=count)


async def _shard_page(inventory: RedisInventory, config: CampaignConfig, positions: dict[int, str],
                      limit: int) -> tuple[list[tuple[int, str, dict[str, str]]], bool]:
    taken: list[tuple[int, str, dict[str, str]]] = []
    for shard in range(config.shard_slots):
        budget = limit - len(taken)
        if budget == 0:
            return taken, True
        entries = await _after(inventory, config, positions, shard, budget + 1)
        taken += [(shard, entry_id, fields) for entry_id, fields in entries[:budget]]
        if len(entries) > budget:
            return taken, True
    return taken, False


async def _merged_page(inventory: RedisInventory, config: CampaignConfig, positions: dict[int, str],
                       limit: int) -> tuple[list[tuple[int, str, dict[str, str]]], bool]:
    """The first `limit` entries after the cursor in (entry id, shard) order: up to limit + 1 from
    each shard (the page's entries can all come from one), merged, the rest read again next page."""
    found: list[tuple[tuple[int, int, int], str, dict[str, str]]] = []
    for shard in range(config.shard_slots):
        for entry_id, fields in await _after(inventory, config, positions, shard, limit + 1):
            found.append(((*stream_position(entry_id), shard), entry_id, fields))
    found.sort(key=lambda item: item[0])
    return [(key[2], entry_id, fields) for key, entry_id, fields in found[:limit]], len(found) > limit


# ------------------------------------------------------------------ reconcile


@dataclass
class Figure:
    name: str
    from_ledger: int
    live: int

    @property
    def ok(self) -> bool:
        return self.from_ledger == self.live


def stream_position(entry_id: str) -> tuple[int, int]:
    """A stream entry id "<ms>-<seq>" as numbers: ids compare as numbers, not as text."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def event_position(event_id: str) -> tuple[int, int, int]:
    """An event id "<shard>-<ms>-<seq>-<index>" (expand) as (ms, seq, shard): where the time-order
    merge puts its ledger entry."""
    shard, ms, seq, _index = event_id.split("-")
    return int(ms), int(seq), int(shard)


async def _shard_entries(inventory: RedisInventory, config: CampaignConfig, shard: int
                         ) -> AsyncIterator[tuple[tuple[int, int, int], str, dict[str, str]]]:
    """A shard's log entries in order, read page by page, keyed for the merge."""
    key, start = shard_keys(config.campaign_id, shard).log, "-"
    while True:
        entries = await inventory.redis.xrange(key, start, "+", count=SCAN_PAGE)
        for entry_id, fields in entries:
            yield (*stream_position(entry_id), shard), entry_id, fields
        if len(entries) < SCAN_PAGE:
            return
        start = f"({entries[-1][0]}"


async def events_in_time_order(inventory: RedisInventory, config: CampaignConfig) -> AsyncIterator[Event]:
    """Every event of every shard's log, the logs merged by entry id (then shard), one page of each
    shard in memory at a time.

    An entry id is its master's Redis TIME in ms (never below the stream's last id) and a sequence
    number, so one log is in the exact order it was written, and the logs of one Redis server
    are merged in the order their entries happened. A user's events move shard only with a
    reshard (publish, fence, freeze, copy, forget, unfreeze: many round trips), so their events
    on the old shard come before those on the new one by at least that much. On a Redis Cluster
    each shard's master has its own clock: the merge orders a user's events rightly as long as
    two masters' clocks disagree by less than a reshard's move, and reconcile does not depend on
    it where a figure could: a reversal undoes the redemption of the order it names, matched by
    (user, order), not by position (see reconcile)."""
    heads: list[tuple[tuple[int, int, int], str, dict[str, str], AsyncIterator[Any]]] = []
    for shard in range(config.shard_slots):
        entries = _shard_entries(inventory, config, shard)
        first = await anext(entries, None)
        if first is not None:
            heads.append((*first, entries))
    heapq.heapify(heads)
    while heads:
        (_, _, shard), entry_id, fields, entries = heads[0]
        for event in expand(shard, entry_id, fields):
            yield event
        following = await anext(entries, None)
        if following is None:
            heapq.heappop(heads)
        else:
            heapq.heapreplace(heads, (*following, entries))


async def reconcile(inventory: RedisInventory, config: CampaignConfig) -> tuple[list[Figure], int]:
    """The campaign's figures recomputed from the ledger, against the live ones; events read."""
    grants_per_shard = [0] * config.shard_slots
    vouchers: set[str] = set()
    per_user: Counter[str] = Counter()
    requests: set[tuple[str, str]] = set()
    redemptions: dict[tuple[str, str], list[tuple[str, int]]] = {}  # (user, order) -> (voucher, subsidy)
    reversed_orders: set[tuple[str, str]] = set()
    recycled: Counter[str] = Counter()             # voucher -> times its stock came back
    events = 0
    async for event in events_in_time_order(inventory, config):
        events += 1
        if event.kind == "grant":
            grants_per_shard[event.shard] += 1
            vouchers.add(event.voucher_id)
            per_user[event.user_id] += 1
            requests.add((event.user_id, event.request_id))
        elif event.kind == "redeem":
            redemptions.setdefault((event.user_id, event.order_id), []).append(
                (event.voucher_id, event.subsidy_cents))
        elif event.kind == "reverse":
            reversed_orders.add((event.user_id, event.order_id))
        else:  # expire, release: the voucher's stock came back
            recycled[event.voucher_id] += 1
    # A voucher is in use while an order that redeemed it is not reversed. The reversal names its
    # order, so this holds whatever order two shards' events were merged in: a voucher redeemed,
    # reversed and redeemed again across a reshard counts once, with its last order's subsidy.
    in_use: dict[str, int] = {}
    in_use_twice = 0
    for order, used in redemptions.items():
        if order not in reversed_orders:
            for voucher, cents in used:
                in_use_twice += voucher in in_use
                in_use[voucher] = cents
    figures = await inventory.figures(config)
    live_users, live_requests = await _live_records(inventory, config)
    redeemed, subsidy, redeemed_records, live_recycled = await _live_redemptions(inventory, config)
    total = sum(grants_per_shard)
    returned = sum(recycled.values())
    out = [Figure(f"granted on shard {s}", g, live)
           for s, (g, live) in enumerate(zip(grants_per_shard, figures.granted, strict=True))]
    out += [
        Figure("granted", total, sum(figures.granted)),
        Figure("distinct vouchers", len(vouchers), total),
        Figure("grant records (user, request_id)", len(requests), live_requests),
        Figure("users holding vouchers", len(per_user), len(live_users)),
        Figure("vouchers held by users", total, sum(live_users.values())),
        Figure("users over the per-user limit",
               sum(1 for n in per_user.values() if n > config.per_user_limit), 0),
        Figure("stock left (not counting rounds held back)",
               config.inventory - total + returned - figures.held, figures.total_remaining),
        Figure("vouchers recycled (expired or released)", returned, live_recycled),
        Figure("vouchers recycled more than once", returned - len(recycled), 0),
        Figure("recycled vouchers that were never granted", len(recycled.keys() - vouchers), 0),
        Figure("vouchers redeemed (not reversed)", len(in_use), redeemed),
        Figure("redeemed voucher records", len(in_use), redeemed_records),
        Figure("subsidy of redeemed vouchers, cents", sum(in_use.values()), subsidy),
        Figure("redeemed vouchers that were never granted", len(in_use.keys() - vouchers), 0),
        Figure("vouchers in two unreversed orders", in_use_twice, 0),
        Figure("vouchers both redeemed and recycled", len(in_use.keys() & recycled.keys()), 0),
    ]
    return out, events


async def _live_redemptions(inventory: RedisInventory, config: CampaignConfig) -> tuple[int, int, int, int]:
    """The shards' redeemed, subsidy and recycled counters, and the voucher records marked in use."""
    redeemed = subsidy = records = recycled = 0
    for shard in range(config.shard_slots):
        keys = shard_keys(config.campaign_id, shard)
        count, cents, back = await inventory.redis.hmget(keys.state, "redeemed", "subsidy", "recycled")
        redeemed += int(count or 0)
        subsidy += int(cents or 0)
        recycled += int(back or 0)
        async for _field, raw in inventory.redis.hscan_iter(keys.redeem, match="v:*", count=SCAN_PAGE):
            records += raw.startswith("R|")
    return redeemed, subsidy, records, recycled


async def _live_records(inventory: RedisInventory, config: CampaignConfig) -> tuple[Counter[str], int]:
    """user -> vouchers held (the users hashes), and the number of grant records (reqs)."""
    held: Counter[str] = Counter()
    records = 0
    for shard in range(config.shard_slots):
        keys = shard_keys(config.campaign_id, shard)
        records += await inventory.redis.hlen(keys.reqs)
        async for user, raw in inventory.redis.hscan_iter(keys.users, count=SCAN_PAGE):
            held[user] += int(raw.split("|", 1)[0])
    return held, records

