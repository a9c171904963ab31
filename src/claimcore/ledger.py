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
Reconcile recomputes the figures from the logs and compares them with the
live counters.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass

from claimcore import validation as v
from claimcore.campaign import CampaignConfig
from claimcore.inventory import RedisInventory
from claimcore.keyspace import shard_keys

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


async def read_page(inventory: RedisInventory, config: CampaignConfig, cursor: str, limit: int
                    ) -> tuple[list[Event], str, bool]:
    """Up to `limit` log entries after the cursor, as events; the next cursor; whether more remain."""
    v.check_range("limit", limit, 1, MAX_PAGE)
    positions = decode_cursor(cursor)
    events: list[Event] = []
    budget = limit
    more = False
    for shard in range(config.shard_slots):
        if budget == 0:
            more = True
            break
        start = f"({positions[shard]}" if shard in positions else "-"
        entries = await inventory.redis.xrange(shard_keys(config.campaign_id, shard).log, start, "+",
                                               count=budget + 1)
        if len(entries) > budget:
            entries, more = entries[:budget], True
        for entry_id, fields in entries:
            events.extend(expand(shard, entry_id, fields))
            positions[shard] = entry_id
        budget -= len(entries)
    return events, encode_cursor(positions), more


# ------------------------------------------------------------------ reconcile


@dataclass
class Figure:
    name: str
    from_ledger: int
    live: int

    @property
    def ok(self) -> bool:
        return self.from_ledger == self.live


async def reconcile(inventory: RedisInventory, config: CampaignConfig) -> tuple[list[Figure], int]:
    """The campaign's figures recomputed from the ledger, against the live ones; events read."""
    redis = inventory.redis
    cid = config.campaign_id
    grants_per_shard: list[int] = []
    vouchers: set[str] = set()
    per_user: Counter[str] = Counter()
    requests: set[tuple[str, str]] = set()
    in_use: dict[str, int] = {}                     # voucher -> subsidy, while redeemed
    recycled: set[str] = set()                      # vouchers whose stock came back
    events = 0
    for shard in range(config.shard_slots):
        count, start = 0, "-"
        while True:
            entries = await redis.xrange(shard_keys(cid, shard).log, start, "+", count=SCAN_PAGE)
            for entry_id, fields in entries:
                for event in expand(shard, entry_id, fields):
                    events += 1
                    if event.kind == "grant":
                        count += 1
                        vouchers.add(event.voucher_id)
                        per_user[event.user_id] += 1
                        requests.add((event.user_id, event.request_id))
                    elif event.kind == "redeem":
                        in_use[event.voucher_id] = event.subsidy_cents
                    elif event.kind == "reverse":
                        in_use.pop(event.voucher_id, None)
                    else:  # expire, release: the voucher's stock came back
                        recycled.add(event.voucher_id)
            if len(entries) < SCAN_PAGE:
                break
            start = f"({entries[-1][0]}"
        grants_per_shard.append(count)
    figures = await inventory.figures(config)
    live_users, live_requests = await _live_records(inventory, config)
    redeemed, subsidy, redeemed_records, live_recycled = await _live_redemptions(inventory, config)
    total = sum(grants_per_shard)
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
               config.inventory - total + len(recycled) - figures.held, figures.total_remaining),
        Figure("vouchers recycled (expired or released)", len(recycled), live_recycled),
        Figure("recycled vouchers that were never granted", len(recycled - vouchers), 0),
        Figure("vouchers redeemed (not reversed)", len(in_use), redeemed),
        Figure("redeemed voucher records", len(in_use), redeemed_records),
        Figure("subsidy of redeemed vouchers, cents", sum(in_use.values()), subsidy),
        Figure("redeemed vouchers that were never granted", len(set(in_use) - vouchers), 0),
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

