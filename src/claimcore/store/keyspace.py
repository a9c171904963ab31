"""Every Redis key claimcore uses, in one place.

A campaign C with S shards lives in S + 1 hash slots (S counts every shard
ever made: a reshard to fewer shards retires the rest, which keep their
counters and grant figures but no stock and no users):

  cc:{C}:campaign         HASH   the campaign's config, status, live shard map and 'archived'
                                 flag (tag C)
  cc:{C}:reshard          STRING lock: the one reshard running on C (expires by itself)
  cc:{C:s}:state          HASH   shard s: stock, seq, granted, limit, window, paused
  cc:{C:s}:users          HASH   user_id -> "count|last_voucher|last_at|rid1,rid2,..."
  cc:{C:s}:reqs           HASH   "user|request_id" -> "voucher|granted_at|channel"
  cc:{C:s}:leases         HASH   lease_id -> "dest_shard|amount|at": stock taken from s, in transit
  cc:{C:s}:credited       SET    lease ids already credited to s (makes crediting idempotent)
  cc:{C:s}:redeem         HASH   redemptions of the shard's users (redeem.lua, stack.lua):
                                 "v:<voucher>" -> "R|order|at" used, "F|order|at" given back
                                 by a reversal, "X|order|at" expired when its order was reversed;
                                 "o:<user>|<order>" -> "R|vouchers|merchant|amount|subsidy|at|
                                 channel|sns", R becoming V once reversed;
                                 "r:<user>|<order>" -> "at|returned|expired" (the reversal);
                                 "i:<user>" -> "order1,order2,...": the user's orders, so a
                                 reshard moves every one of them (export.lua)
  cc:{C:s}:elig           HASH   user -> "allowed|denied|region|tag1,tag2" (eligibility.py)
  cc:{C:s}:eligcalls      SET    ids of the eligibility calls applied here (a resend is ignored)
  cc:{cat:K:b}:users      HASH   user -> the one campaign of category K they hold (categories.py)
  cc:{stack:b}:orders     HASH   decisions of orders stacking several campaigns' vouchers, by
                                 "user|order|instance" (stacking.py)
  cc:{sn:b}:sns           HASH   SN code -> hold or use, across all campaigns (snregistry.py); 64 buckets b
  cc:{C}:merchants        HASH   merchant_id -> "category|region|name" (tag C)
  cc:{C:s}:log            STREAM the shard's ledger: one entry per script call that changed
                                 grants, written in that call (ledger.py)
  cc:campaigns            SET    ids of all campaigns not archived (its own slot)
  cc:campaigns:archived   SET    ids of archived campaigns (its own slot); the campaign's own
                                 'archived' flag decides, these two sets only enumerate

Every key of one shard carries the hash tag {C:s}, so every Lua call touches
one slot and the same scripts run unchanged on Redis Cluster. A user always
maps to the same shard (claimcore._fast.shard_of), which keeps "one user, at
most per_user_limit vouchers" a single-slot check.

Ids are validated (claimcore.validation) to exclude '{', '}', '|' and ',',
so they can neither break a hash tag nor a stored record.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

CAMPAIGN_INDEX = "cc:campaigns"
ARCHIVED_INDEX = "cc:campaigns:archived"


def campaign_key(campaign_id: str) -> str:
    return f"cc:{{{campaign_id}}}:campaign"


SN_BUCKETS = 64  # fixed for ever: an SN code's bucket must never change


def sn_key(bucket: int) -> str:
    return f"cc:{{sn:{bucket}}}:sns"


def stack_key(bucket: int) -> str:
    """The decisions of stacked orders, "user|order|instance" -> "U|0||user|order|instance"."""
    return f"cc:{{stack:{bucket}}}:orders"


def category_key(category: str, bucket: int) -> str:
    return f"cc:{{cat:{category}:{bucket}}}:users"


def merchants_key(campaign_id: str) -> str:
    return f"cc:{{{campaign_id}}}:merchants"


def reshard_lock_key(campaign_id: str) -> str:
    return f"cc:{{{campaign_id}}}:reshard"


class ShardKeys(NamedTuple):
    state: str
    users: str
    reqs: str
    leases: str
    credited: str
    log: str
    redeem: str
    elig: str
    elig_calls: str

    @property
    def claim(self) -> tuple[str, str, str, str, str]:
        """The keys claim.lua takes, in its order."""
        return (self.state, self.users, self.reqs, self.log, self.elig)

    @property
    def moving(self) -> tuple[str, str, str, str]:
        """The keys a reshard moves users' records between (export, adopt, forget.lua)."""
        return (self.users, self.reqs, self.redeem, self.elig)

    @property
    def redemption(self) -> tuple[str, str, str, str, str]:
        """The keys redeem.lua and reverse.lua take, in their order."""
        return (self.state, self.users, self.reqs, self.redeem, self.log)


@functools.lru_cache(maxsize=1 << 16)  # built for every lane of every flush; inputs are few
def shard_keys(campaign_id: str, shard: int) -> ShardKeys:
    tag = f"cc:{{{campaign_id}:{shard}}}"
    return ShardKeys(
        state=f"{tag}:state",
        users=f"{tag}:users",
        reqs=f"{tag}:reqs",
        leases=f"{tag}:leases",
        credited=f"{tag}:credited",
        log=f"{tag}:log",
        redeem=f"{tag}:redeem",
        elig=f"{tag}:elig",
        elig_calls=f"{tag}:eligcalls",
    )


@functools.lru_cache(maxsize=1 << 16)
def voucher_prefix(campaign_id: str, shard: int) -> str:
    """Voucher ids are '<campaign>-<shard>-<seq>': unique without coordination."""
    return f"{campaign_id}-{shard}-"


def round_lease(index: int) -> str:
    """The credit id of a campaign's later round `index`: credited into shard 0 once."""
    return f"round-{index}"
