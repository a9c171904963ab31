"""What Redis holds after the run, read key by key (plain Redis or Redis Cluster).

Read raw, not through the node's code: the checker must not share a bug with what it checks.
The formats are keyspace.py's; a few fields are read tolerantly so the same checker runs on
the code before the issue 12 fixes and after them (the `returning` stock, lease records kept
once credited, stacked-order instance tokens).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from claimcore._fast import shard_of
from claimcore.lifecycle.ledger import Event, expand
from claimcore.store.keyspace import SN_BUCKETS, campaign_key, category_key, shard_keys, sn_key, stack_key


def _hash(client: Any, key: str) -> dict[str, str]:
    return dict(client.hscan_iter(key, count=2000))


@dataclass
class GrantRecord:
    shard: int
    user: str
    request_id: str
    voucher: str
    granted_at: int
    channel: str


@dataclass
class CampaignState:
    campaign_id: str
    spec: dict[str, Any]
    shards: int  # the live count
    slots: int  # shards ever made
    epoch: int
    status: str
    state: list[dict[str, str]] = field(default_factory=list)  # per slot: the state hash
    grants: list[GrantRecord] = field(default_factory=list)  # every reqs record, every slot
    users: list[dict[str, str]] = field(default_factory=list)  # per slot: the users hash
    redeem: list[dict[str, str]] = field(default_factory=list)  # per slot: the redeem hash
    elig: list[dict[str, str]] = field(default_factory=list)  # per slot: the elig hash
    events: list[Event] = field(default_factory=list)  # every ledger event, every slot
    in_leases: int = 0  # stock lent and not credited
    held: int = 0  # rounds not released

    @property
    def inventory(self) -> int:
        return int(self.spec["inventory"])

    @property
    def limit(self) -> int:
        return int(self.spec.get("per_user_limit") or 1)

    def total(self, name: str) -> int:
        return sum(int(s.get(name) or 0) for s in self.state)

    def home(self, user: str) -> int:
        """The user's shard under the live map: where their records must be."""
        return shard_of(user, self.shards)

    def mark(self, user: str, voucher: str) -> str:
        """The voucher's redemption mark on its user's shard ('' if none)."""
        return self.redeem[self.home(user)].get(f"v:{voucher}", "") if self.redeem else ""

    def order(self, user: str, order_id: str) -> str:
        return self.redeem[self.home(user)].get(f"o:{user}|{order_id}", "") if self.redeem else ""

    def reversal(self, user: str, order_id: str) -> str:
        return self.redeem[self.home(user)].get(f"r:{user}|{order_id}", "") if self.redeem else ""

    def grants_by_voucher(self) -> dict[str, list[GrantRecord]]:
        out: dict[str, list[GrantRecord]] = defaultdict(list)
        for g in self.grants:
            out[g.voucher].append(g)
        return out

    def home_grants(self) -> list[GrantRecord]:
        """The grant records on their user's live shard (a record elsewhere was left behind)."""
        return [g for g in self.grants if g.shard == self.home(g.user)]


@dataclass
class WorldState:
    campaigns: dict[str, CampaignState]
    sns: dict[str, str]  # SN code -> registry record
    stack: dict[str, str]  # "user|order..." -> decision
    categories: dict[str, dict[str, str]]  # category -> user -> registry record


def read_campaign(client: Any, campaign_id: str) -> CampaignState:
    meta = _hash(client, campaign_key(campaign_id))
    spec = json.loads(meta["spec"])
    shards = int(meta.get("shards") or spec["shards"])
    slots = int(meta.get("slots") or shards)
    out = CampaignState(campaign_id, spec, shards, slots, int(meta.get("epoch") or 0), meta.get("status", ""))
    leases: list[tuple[str, int, int, bool]] = []
    for s in range(slots):
        keys = shard_keys(campaign_id, s)
        out.state.append(_hash(client, keys.state))
        for fld, raw in _hash(client, keys.reqs).items():
            user, rid = fld.split("|", 1)
            voucher, at, channel = raw.split("|", 2)
            out.grants.append(GrantRecord(s, user, rid, voucher, int(at), channel))
        out.users.append(_hash(client, keys.users))
        out.redeem.append(_hash(client, keys.redeem))
        out.elig.append(_hash(client, keys.elig))
        for lease_id, raw in _hash(client, keys.leases).items():
            parts = raw.split("|")
            # A record kept after its credit ends in "C"; older code deletes it instead.
            leases.append((lease_id, int(parts[0]), int(parts[1]), len(parts) > 3 and parts[3] == "C"))
        start = "-"
        while True:
            entries = client.xrange(keys.log, start, "+", count=2000)
            for entry_id, fields in entries:
                out.events.extend(expand(s, entry_id, fields))
            if len(entries) < 2000:
                break
            start = f"({entries[-1][0]}"
    for lease_id, dest, amount, settled in leases:
        if not settled and not client.sismember(shard_keys(campaign_id, dest).credited, lease_id):
            out.in_leases += amount
    rounds = spec.get("rounds") or []
    if rounds:
        credited = shard_keys(campaign_id, 0).credited
        out.held = sum(
            int(amount)
            for k, (_, amount) in enumerate(rounds)
            if not client.sismember(credited, f"round-{k}")
        )
    return out


def read_world(client: Any, campaign_ids: list[str], categories: list[str]) -> WorldState:
    sns: dict[str, str] = {}
    stack: dict[str, str] = {}
    for b in range(SN_BUCKETS):
        sns.update(_hash(client, sn_key(b)))
        stack.update(_hash(client, stack_key(b)))
    cats = {
        c: {k: v for b in range(SN_BUCKETS) for k, v in _hash(client, category_key(c, b)).items()}
        for c in categories
    }
    return WorldState({c: read_campaign(client, c) for c in campaign_ids}, sns, stack, cats)
