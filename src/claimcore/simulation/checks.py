"""The checker: the recorded calls against what Redis holds once the run has quiesced.

Each check has a name (the keys of `CHECKS`); a violation names its check, says what is wrong,
and lists the keys involved (user:, voucher:, sn:, order:user|order) so the report can print
the minimal history of those keys. Reconcile and the sold-out probe are run by runner.py
against live nodes and reported under the same names.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

from claimcore.simulation.calls import UNKNOWN, Call
from claimcore.simulation.state import CampaignState, WorldState
from claimcore.store.inventory import RETURN_DELAY_MS

CHECKS = {
    "conservation": "stock + returning + leases + held for rounds + granted == inventory + recycled, "
    "per campaign; no shard below zero; the recycled counter matches the ledger",
    "returned-once": "every voucher's stock comes back at most once (ledger expire/release events)",
    "redeemed-and-returned": "no voucher is both redeemed (un-reversed) and returned to stock",
    "per-user-limit": "no user holds, or was told of, more vouchers of a campaign than its limit",
    "one-per-category": "no user holds vouchers of two one_per_category campaigns of a category",
    "sn-once": "each SN code is on at most one un-reversed redemption, across campaigns",
    "acknowledged-present": "every acknowledged grant, redemption and reversal is in Redis afterwards, "
    "on its user's live shard",
    "replay-alike": "every resend of a request is answered as it was first "
    "(same voucher, redeemed, reversed)",
    "channel": "a reply names only a voucher its caller's channel issued, with the channel that issued it",
    "order-all-or-none": "what an order id holds in Redis is exactly the vouchers of one call that "
    "redeemed it (or might have): all parts or none",
    "voucher-unique": "no voucher id stored for two grants",
    "denied-granted": "no grant to a user on the deny list (claimed only after the deny was acknowledged)",
    "not-eligible-reason": "every NOT_ELIGIBLE names its reason, and DENY_LIST only for a user a deny "
    "was sent for before the answer came",
    "reconcile": "AdminService.Reconcile is clean for every campaign",
    "export-once": "ExportEvents paged through every campaign during the run (random page sizes, shard "
    "or time order, any node, failed calls asked again with the same cursor), then drained: each "
    "ledger event up to the final cursor exported exactly once, none beyond",
    "export-order": "each ExportEvents page asked in time order is in (entry id, shard) order",
    "sold-out-with-stock": "no node answers SOLD_OUT while the campaign holds claimable stock (final probe)",
    "local-sold-out": "each SOLD_OUT the watching client answered itself came from a pushed SOLD_OUT state "
    "it still trusted, while the campaign was sold out: every voucher granted afterwards came from stock "
    "that returned at most RETURN_DELAY_MS before the answer, or later, or from a later round",
}


@dataclass
class Violation:
    check: str
    campaign: str
    message: str
    keys: set[str] = field(default_factory=set)
    kind: str = ""  # which way the check failed, for the summary (classify)
    until: int = -1  # the history to print ends at this call id (-1: the whole run)


def figures(ws: WorldState) -> dict[str, int]:
    """What the run left in Redis, over every campaign: for the report, not judged."""
    out = {
        "grants": 0,
        "returned to stock": 0,
        "vouchers redeemed": 0,
        "reversals": 0,
        "stacked parts prepared, decided": 0,
        "stacked parts prepared, undecided": 0,
        "reshards": 0,
    }
    for cs in ws.campaigns.values():
        out["grants"] += cs.total("granted")
        out["returned to stock"] += sum(1 for e in cs.events if e.kind in ("expire", "release"))
        out["reshards"] += cs.epoch
        for redeem in cs.redeem:
            for fld, record in redeem.items():
                if fld.startswith("v:") and record.startswith("R|"):
                    out["vouchers redeemed"] += 1
                elif fld.startswith("r:"):
                    out["reversals"] += 1
                elif fld.startswith("o:") and record.startswith("P|"):
                    user, order = fld[2:].split("|", 1)
                    kind = "decided" if decided(ws, user, order, record) else "undecided"
                    out[f"stacked parts prepared, {kind}"] += 1
    return out


def _return_events(cs: CampaignState) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for e in cs.events:
        if e.kind in ("expire", "release"):
            out[e.voucher_id].append(f"{e.kind}@shard{e.shard}/{e.event_id}")
    return out


def decided(ws: WorldState, user: str, order_id: str, record: str) -> bool:
    """Whether a prepared (P) part of a stacked order belongs to a decided order instance: such a
    part counts as redeemed (whoever meets it later commits it). The decision is keyed by
    user|order; the instance token is the P record's last field where there is one."""
    fields = record.split("|")
    token = fields[9] if len(fields) >= 10 else ""
    for key in (f"{user}|{order_id}", f"{user}|{order_id}|{token}"):
        value = ws.stack.get(key, "")
        if value.startswith("U|") and (not token or token in value or key.endswith(token)):
            return True
    return False


def _order_sns(record: str) -> list[str]:
    fields = record.split("|")
    return [s for s in fields[7].split(",") if s] if len(fields) > 7 else []


def check(calls: list[Call], ws: WorldState, one_per_category: dict[str, str]) -> list[Violation]:
    """one_per_category: campaign -> category, for the campaigns with one_per_category."""
    out: list[Violation] = []
    for cs in ws.campaigns.values():
        out += _conservation(cs)
        out += _vouchers(cs, ws)
        out += _limits(cs, calls)
        out += _local_answers(cs, calls)
    out += _categories(ws, calls, one_per_category)
    out += _sns(ws)
    out += _acknowledged(ws, calls)
    out += _replays(calls)
    out += _channels(ws, calls)
    out += _orders(ws, calls)
    out += _denied(calls)
    out += _not_eligible_reasons(calls)
    return classify(out, calls)


def classify(violations: list[Violation], calls: list[Call]) -> list[Violation]:
    """Name which way each violation failed (the summary counts them by check and kind)."""
    for v in violations:
        if v.check in ("returned-once", "denied-granted", "acknowledged-present", "sn-once"):
            v.keys.add(f"campaign:{v.campaign}")  # with the campaign's reshards in its history
        if v.kind:
            continue
        if v.check == "returned-once":
            shards = set(re.findall(r"@shard(\d+)/", v.message))
            v.kind = "returned on two shards" if len(shards) > 1 else "returned twice on one shard"
        elif v.check == "replay-alike":
            what = re.search(r"was (GRANTED|REDEEMED|REVERSED).*answered (\w+)", v.message)
            v.kind = f"{what.group(1)} then {what.group(2)}" if what else ""
        elif v.check == "acknowledged-present":
            v.kind = {"GRANTED": "grant", "REDEEMED": "redemption", "REVERSED": "reversal"}.get(
                v.message.split(" ", 1)[0], ""
            )
        elif v.check == "reconcile":
            v.kind = v.message.split(":", 1)[0]
        elif v.check == "one-per-category":
            v.kind = _category_kind(v, calls)
    return violations


def _category_kind(v: Violation, calls: list[Call]) -> str:
    """A grant answered together with a non-holding answer for the same user and campaign: in one
    flush of one node (its last answer dropped the hold), or on two nodes (one dropped the other's)."""
    user = next(iter(v.keys))[5:]
    mine = [c for c in calls if c.user == user and c.campaign in v.campaign.split(",") and c.answered]
    for g in mine:
        if g.outcome != "GRANTED":
            continue
        for o in mine:
            if (
                o.campaign == g.campaign
                and o.outcome not in ("GRANTED", "ALREADY_CLAIMED")
                and o.t_invoke <= (g.t_complete or 0)
                and g.t_invoke <= (o.t_complete or 0)
            ):
                return (
                    "hold dropped by the same flush" if o.node == g.node else "hold dropped by another node"
                )
    return "other"


def _local_answers(cs: CampaignState, calls: list[Call]) -> list[Violation]:
    """The watching client's own SOLD_OUT answers (operations.watched_claim records each one with the
    watch's state at that moment and the wall time), against docs/architecture.md, "The pushed
    campaign state": a local SOLD_OUT comes from a SOLD_OUT state still trusted (received +
    sold_out_valid_for_ms - MARGIN_MS), and no claim gets one while a node could grant it. Held
    against Redis (grant records and ledger events carry Redis's clock, on this machine the
    driver's): stock claimable at the answer's time t would let some grant after t come from stock
    that was already back by then. So the grants after t are at most the vouchers returned to stock
    (expire, release) after t - RETURN_DELAY_MS, plus the rounds released after that."""
    local = [c for c in calls if c.campaign == cs.campaign_id and c.answer.get("local")]
    if not local:
        return []
    granted: dict[str, int] = {}  # voucher -> granted_at (a record left on an old shard counts once)
    for g in cs.grants:
        granted.setdefault(g.voucher, g.granted_at)
    grant_times = sorted(granted.values())
    return_times = sorted(e.at_ms for e in cs.events if e.kind in ("expire", "release"))
    rounds = [(int(at), int(amount)) for at, amount in cs.spec.get("rounds") or []]
    out = []
    for c in local:
        t = int(c.answer["at_ms"])
        keys = {f"user:{c.user}", f"campaign:{cs.campaign_id}"}
        trusted = c.answer.get("pushed_phase") == "CAMPAIGN_PHASE_SOLD_OUT"
        if not trusted or c.answer.get("trusted_left_ms", 0) <= 0:
            out.append(
                Violation(
                    "local-sold-out",
                    cs.campaign_id,
                    f"{c.user}/{c.request_id} answered SOLD_OUT by the client (call #{c.call_id}) from "
                    f"state {c.answer.get('pushed_phase')} #{c.answer.get('pushed_sequence')} trusted for "
                    f"{c.answer.get('trusted_left_ms')} ms more",
                    keys,
                    kind="answered from a state not sold out or not trusted",
                    until=c.call_id,
                )
            )
            continue
        since = t - RETURN_DELAY_MS
        after = len(grant_times) - bisect_right(grant_times, t)
        came_back = len(return_times) - bisect_right(return_times, since)
        came_back += sum(amount for at, amount in rounds if at > since)
        if after > came_back:
            out.append(
                Violation(
                    "local-sold-out",
                    cs.campaign_id,
                    f"{c.user}/{c.request_id} answered SOLD_OUT by the client at {t} (call #{c.call_id}), "
                    f"yet {after} vouchers were granted after it and only {came_back} came back to stock "
                    f"after {since} (RETURN_DELAY_MS before it) or in later rounds: stock was claimable",
                    keys,
                    kind="stock was claimable",
                    until=c.call_id,
                )
            )
    return out


def _conservation(cs: CampaignState) -> list[Violation]:
    out = []
    stock, returning, granted, recycled = (cs.total(n) for n in ("stock", "returning", "granted", "recycled"))
    lhs = stock + returning + cs.in_leases + cs.held + granted
    if lhs != cs.inventory + recycled:
        out.append(
            Violation(
                "conservation",
                cs.campaign_id,
                (
                    f"stock {stock} + returning {returning} + leases {cs.in_leases} + held {cs.held} "
                    f"+ granted {granted} = {lhs} != inventory {cs.inventory} + recycled {recycled} "
                    f"= {cs.inventory + recycled} "
                    f"({lhs - cs.inventory - recycled:+d})"
                ),
            )
        )
    for s, st in enumerate(cs.state):
        if int(st.get("stock") or 0) < 0:
            out.append(Violation("conservation", cs.campaign_id, f"shard {s} stock {st.get('stock')} < 0"))
    returns = sum(len(v) for v in _return_events(cs).values())
    if returns != recycled:
        out.append(
            Violation(
                "conservation",
                cs.campaign_id,
                f"recycled counters say {recycled}, the ledger has {returns} expire/release events",
            )
        )
    return out


def _vouchers(cs: CampaignState, ws: WorldState) -> list[Violation]:
    out = []
    owner = {g.voucher: g.user for g in cs.home_grants()}
    for voucher, events in _return_events(cs).items():
        user = owner.get(voucher, "")
        keys = {f"voucher:{voucher}", f"user:{user}"}
        if len(events) > 1:
            out.append(
                Violation(
                    "returned-once",
                    cs.campaign_id,
                    f"{voucher} (user {user}) came back to stock {len(events)} times: {events}",
                    keys,
                )
            )
        mark = cs.mark(user, voucher) if user else ""
        redeemed = mark.startswith("R|") or (
            mark.startswith("P|")
            and decided(ws, user, mark.split("|")[1], cs.order(user, mark.split("|")[1]))
        )
        if redeemed:
            out.append(
                Violation(
                    "redeemed-and-returned",
                    cs.campaign_id,
                    f"{voucher} (user {user}) is redeemed ({mark}) and came back to stock: {events}",
                    keys | {f"order:{user}|{mark.split('|')[1]}"},
                )
            )
    for voucher, records in cs.grants_by_voucher().items():
        holders = {(g.user, g.request_id) for g in records if g.shard == cs.home(g.user)}
        if len(holders) > 1:
            out.append(
                Violation(
                    "voucher-unique",
                    cs.campaign_id,
                    f"{voucher} stored for {sorted(holders)}",
                    {f"voucher:{voucher}"} | {f"user:{u}" for u, _ in holders},
                )
            )
    return out


def _limits(cs: CampaignState, calls: list[Call]) -> list[Violation]:
    held: dict[str, set[str]] = defaultdict(set)
    for g in cs.home_grants():
        held[g.user].add(g.voucher)
    told: dict[str, set[str]] = defaultdict(set)
    for c in calls:
        if (
            c.campaign == cs.campaign_id
            and c.outcome in ("GRANTED", "ALREADY_CLAIMED")
            and c.answer.get("voucher")
        ):
            told[c.user].add(c.answer["voucher"])
    out = []
    for user in held.keys() | told.keys():
        vouchers = held[user] | told[user]
        if len(vouchers) > cs.limit:
            out.append(
                Violation(
                    "per-user-limit",
                    cs.campaign_id,
                    f"{user} holds {len(held[user])} and was told of {len(told[user])}: "
                    f"{sorted(vouchers)}, limit {cs.limit}",
                    {f"user:{user}"} | {f"voucher:{v}" for v in vouchers},
                )
            )
    return out


def _categories(ws: WorldState, calls: list[Call], one_per_category: dict[str, str]) -> list[Violation]:
    holding: dict[tuple[str, str], set[str]] = defaultdict(set)  # (category, user) -> campaigns
    for cid, category in one_per_category.items():
        cs = ws.campaigns.get(cid)
        for g in cs.home_grants() if cs else []:
            holding[(category, g.user)].add(cid)
    for c in calls:
        if c.campaign in one_per_category and c.outcome == "GRANTED":
            holding[(one_per_category[c.campaign], c.user)].add(c.campaign)
    return [
        Violation(
            "one-per-category",
            ",".join(sorted(cids)),
            f"{user} holds vouchers of {len(cids)} campaigns of category {category}: {sorted(cids)}",
            {f"user:{user}"},
        )
        for (category, user), cids in sorted(holding.items())
        if len(cids) > 1
    ]


def _sns(ws: WorldState) -> list[Violation]:
    users_of: dict[str, set[tuple[str, str]]] = defaultdict(set)  # sn -> (user, order) using it
    for cs in ws.campaigns.values():
        for s, redeem in enumerate(cs.redeem):
            for fld, record in redeem.items():
                if not fld.startswith("o:"):
                    continue
                user, order = fld[2:].split("|", 1)
                if s != cs.home(user):
                    continue  # a copy left behind: the live record is on the home shard
                if record.startswith("R|") or (record.startswith("P|") and decided(ws, user, order, record)):
                    for sn in _order_sns(record):
                        users_of[sn].add((user, order))
    return [
        Violation(
            "sn-once",
            "",
            f"{sn} is subsidised by {len(orders)} orders: {sorted(orders)} (registry: {ws.sns.get(sn, '')})",
            {f"sn:{sn}"} | {f"order:{u}|{o}" for u, o in orders} | {f"user:{u}" for u, _ in orders},
        )
        for sn, orders in sorted(users_of.items())
        if len(orders) > 1
    ]


def _acknowledged(ws: WorldState, calls: list[Call]) -> list[Violation]:
    out = []
    for c in calls:
        cs = ws.campaigns.get(c.campaign)
        if cs is None or not c.answered:
            continue
        if c.outcome == "GRANTED" and c.rpc.startswith("Claim"):
            stored = {(g.request_id, g.voucher) for g in cs.home_grants() if g.user == c.user}
            if (c.request_id, c.answer.get("voucher")) not in stored:
                anywhere = [g for g in cs.grants if g.user == c.user and g.request_id == c.request_id]
                out.append(
                    Violation(
                        "acknowledged-present",
                        c.campaign,
                        f"GRANTED {c.answer.get('voucher')} to {c.user}/{c.request_id} (call #{c.call_id}) "
                        f"is not on the user's shard {cs.home(c.user)}; elsewhere: {anywhere}",
                        {f"user:{c.user}", f"voucher:{c.answer.get('voucher')}"},
                    )
                )
        elif c.outcome == "REDEEMED":
            for campaign, _ in c.parts or ((c.campaign, c.vouchers),):
                part = ws.campaigns[campaign]
                record = part.order(c.user, c.order_id)
                if not record or record[0] not in "RVP":
                    out.append(
                        Violation(
                            "acknowledged-present",
                            campaign,
                            f"REDEEMED order {c.order_id} of {c.user} (call #{c.call_id}) has no "
                            f"record on shard {part.home(c.user)} ({record!r})",
                            {f"user:{c.user}", f"order:{c.user}|{c.order_id}"},
                        )
                    )
        elif c.outcome == "REVERSED":
            record, reversal = cs.order(c.user, c.order_id), cs.reversal(c.user, c.order_id)
            if not record.startswith("V") or not reversal:
                out.append(
                    Violation(
                        "acknowledged-present",
                        c.campaign,
                        f"REVERSED order {c.order_id} of {c.user} (call #{c.call_id}): order record "
                        f"{record!r}, reversal record {reversal!r} on shard {cs.home(c.user)}",
                        {f"user:{c.user}", f"order:{c.user}|{c.order_id}"},
                    )
                )
    return out


def _replays(calls: list[Call]) -> list[Violation]:
    out = []
    granted: dict[tuple[str, str, str], Call] = {}  # (campaign, user, rid) -> first GRANTED answer
    for c in sorted((c for c in calls if c.rpc.startswith("Claim") and c.answered), key=lambda c: c.t_invoke):
        key = (c.campaign, c.user, c.request_id)
        first = granted.get(key)
        if first is None:
            if c.outcome == "GRANTED":
                granted[key] = c
            continue
        if c.channel != first.channel or first.t_complete is None or c.t_invoke < first.t_complete:
            continue  # another channel's resend is the channel check's; overlapping sends prove less
        if c.outcome != "GRANTED" or c.answer.get("voucher") != first.answer.get("voucher"):
            out.append(
                Violation(
                    "replay-alike",
                    c.campaign,
                    f"{c.user}/{c.request_id} was GRANTED {first.answer.get('voucher')} (call "
                    f"#{first.call_id}), then resent and answered {c.outcome} "
                    f"{c.answer.get('voucher', '')} (call #{c.call_id}, node {c.node})",
                    {f"user:{c.user}", f"voucher:{first.answer.get('voucher')}"},
                )
            )
    redeemed: dict[tuple[str, str, tuple[str, ...]], Call] = {}
    reversed_: dict[tuple[str, str, str], Call] = {}
    reverse_sent: dict[tuple[str, str], float] = {}
    for c in sorted(calls, key=lambda c: c.t_invoke):
        if c.rpc == "Reverse":
            reverse_sent.setdefault((c.user, c.order_id), c.t_invoke)
        if not c.answered:
            continue
        if c.rpc == "Redeem":
            key = (c.user, c.order_id, c.vouchers)
            first = redeemed.get(key)
            if first is None:
                if c.outcome == "REDEEMED":
                    redeemed[key] = c
            elif (
                c.t_invoke > (first.t_complete or 0)
                and c.outcome != "REDEEMED"
                and reverse_sent.get((c.user, c.order_id), float("inf")) > c.t_invoke
            ):
                out.append(
                    Violation(
                        "replay-alike",
                        c.campaign,
                        f"order {c.order_id} of {c.user} was REDEEMED (call #{first.call_id}), then "
                        f"resent and answered {c.outcome} (call #{c.call_id}), never reversed",
                        {f"user:{c.user}", f"order:{c.user}|{c.order_id}"},
                    )
                )
        elif c.rpc == "Reverse":
            key = (c.campaign, c.user, c.order_id)
            first = reversed_.get(key)
            if first is None:
                if c.outcome == "REVERSED":
                    reversed_[key] = c
            elif c.t_invoke > (first.t_complete or 0) and c.outcome != "REVERSED":
                out.append(
                    Violation(
                        "replay-alike",
                        c.campaign,
                        f"order {c.order_id} of {c.user} was REVERSED (call #{first.call_id}), then "
                        f"resent and answered {c.outcome} (call #{c.call_id})",
                        {f"user:{c.user}", f"order:{c.user}|{c.order_id}"},
                    )
                )
    return out


def _channels(ws: WorldState, calls: list[Call]) -> list[Violation]:
    out = []
    for c in calls:
        voucher = c.answer.get("voucher") if c.rpc.startswith("Claim") else ""
        cs = ws.campaigns.get(c.campaign)
        if not voucher or cs is None:
            continue
        issued = {g.channel for g in cs.grants if g.voucher == voucher}
        if not issued:
            continue  # not stored: acknowledged-present says so
        told = c.answer.get("voucher_channel")  # ALREADY_CLAIMED may name no channel
        if c.channel not in issued or (told and told not in issued):
            out.append(
                Violation(
                    "channel",
                    c.campaign,
                    f"{c.outcome} to {c.user}/{c.request_id} from channel {c.channel} (call "
                    f"#{c.call_id}) names {voucher}, issued by {sorted(issued)}, as of channel "
                    f"{c.answer.get('voucher_channel')!r}",
                    {f"user:{c.user}", f"voucher:{voucher}"},
                )
            )
    return out


def _orders(ws: WorldState, calls: list[Call]) -> list[Violation]:
    """Per (user, order id), the parts Redis holds redeemed (R, reversed since V, or prepared and
    decided P: each campaign's order record names its vouchers) must be the parts of one call that
    redeemed it, or might have: every part of that call, none from elsewhere."""
    held: dict[tuple[str, str], dict[str, frozenset[str]]] = defaultdict(dict)
    for cid, cs in ws.campaigns.items():
        for s, redeem in enumerate(cs.redeem):
            for fld, record in redeem.items():
                if not fld.startswith("o:") or record[:1] not in ("R", "V", "P"):
                    continue
                user, order = fld[2:].split("|", 1)
                if s != cs.home(user) or (record[0] == "P" and not decided(ws, user, order, record)):
                    continue
                held[(user, order)][cid] = frozenset(v for v in record.split("|")[1].split(",") if v)
    sent: dict[tuple[str, str], list[tuple[Call, dict[str, frozenset[str]]]]] = defaultdict(list)
    for c in calls:
        if c.rpc == "Redeem" and c.outcome in ("REDEEMED", UNKNOWN):
            parts = {cid: frozenset(vs) for cid, vs in (c.parts or ((c.campaign, c.vouchers),))}
            sent[(c.user, c.order_id)].append((c, parts))
    out = []
    for (user, order), parts in sorted(held.items()):
        keys = {f"user:{user}", f"order:{user}|{order}"} | {
            f"voucher:{v}" for vs in parts.values() for v in vs
        }
        for cid, vouchers in sorted(parts.items()):
            matching = [(c, p) for c, p in sent.get((user, order), []) if p.get(cid) == vouchers]
            if not matching:
                out.append(
                    Violation(
                        "order-all-or-none",
                        cid,
                        f"order {order} of {user} holds {sorted(vouchers)} redeemed in {cid}, "
                        f"but no call that redeemed it (or might have) sent that part",
                        keys,
                    )
                )
            elif not any(all(parts.get(c2) == v2 for c2, v2 in p.items()) for _, p in matching):
                sent_parts = [{c2: sorted(v2) for c2, v2 in p.items()} for _, p in matching]
                out.append(
                    Violation(
                        "order-all-or-none",
                        cid,
                        f"order {order} of {user} holds only some parts redeemed: "
                        f"{ {c2: sorted(v2) for c2, v2 in parts.items()} }; the calls sent "
                        f"{sent_parts}",
                        keys,
                    )
                )
    return out


def _denied(calls: list[Call]) -> list[Violation]:
    denied_at: dict[tuple[str, str], float] = {}
    for c in calls:
        if c.rpc == "UpdateEligibility" and c.outcome == "UPDATED" and c.answer.get("denied"):
            for user in str(c.answer.get("users", "")).split(","):
                denied_at.setdefault((c.campaign, user), c.t_complete or 0)
    return [
        Violation(
            "denied-granted",
            c.campaign,
            f"{c.user} is on the deny list, yet GRANTED {c.answer.get('voucher')} (call #{c.call_id}, "
            f"node {c.node})",
            {f"user:{c.user}"},
        )
        for c in calls
        if c.outcome == "GRANTED"
        and (c.campaign, c.user) in denied_at
        and c.t_invoke > denied_at[(c.campaign, c.user)]
    ]


def _not_eligible_reasons(calls: list[Call]) -> list[Violation]:
    """A NOT_ELIGIBLE is explained (ClaimResponse.not_eligible_reason), and a deny-list one is true:
    some UpdateEligibility denying that user was sent before the claim's answer came (whether it
    had taken effect is the interleaving's business; that it was never sent is a lie)."""
    deny_sent: dict[tuple[str, str], float] = {}
    for c in calls:
        if c.rpc == "UpdateEligibility" and c.answer.get("denied"):
            for user in str(c.answer.get("users", "")).split(","):
                key = (c.campaign, user)
                deny_sent[key] = min(deny_sent.get(key, c.t_invoke), c.t_invoke)
    out = []
    for c in calls:
        if c.outcome != "NOT_ELIGIBLE":
            continue
        reason = c.answer.get("reason", "")
        if reason in ("", "UNSPECIFIED", "NOT_ELIGIBLE_REASON_UNSPECIFIED"):
            out.append(Violation("not-eligible-reason", c.campaign,
                                 f"{c.user} was answered NOT_ELIGIBLE without a reason (call #{c.call_id}, "
                                 f"node {c.node})", {f"user:{c.user}"}, kind="no reason"))
        elif reason == "DENY_LIST" and not deny_sent.get((c.campaign, c.user), float("inf")) < (
                c.t_complete or float("inf")):
            out.append(Violation("not-eligible-reason", c.campaign,
                                 f"{c.user} was answered NOT_ELIGIBLE (DENY_LIST) but no deny of them was "
                                 f"sent before (call #{c.call_id}, node {c.node})", {f"user:{c.user}"},
                                 kind="deny list unexplained"))
    return out

