"""What the driver has learnt from answers, to aim its next operations (never used to judge).

Operations pick targets from here: a user's vouchers to redeem, release or let expire, an
order to reverse or replay, a request to replay. The checker does not trust any of it: it
judges from the recorded calls and from Redis only.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Grant:
    campaign: str
    user: str
    request_id: str
    voucher: str
    channel: str
    granted_at_ms: int
    learnt_at: float  # time.monotonic() when the driver learnt it


@dataclass
class Order:
    user: str
    order_id: str
    parts: list[tuple[str, list[str]]]  # (campaign, vouchers)
    sns: list[str]
    channel: str
    amount: int
    redeemed: bool = False
    reversed: bool = False


@dataclass
class Model:
    grants: dict[str, Grant] = field(default_factory=dict)  # voucher -> grant
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)  # campaign, user, rid, channel
    by_user: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    used: set[str] = field(default_factory=set)  # vouchers on an order or released, as far as known
    orders: list[Order] = field(default_factory=list)
    denied: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # campaign -> users
    next_user: int = 0
    next_denied: int = 0

    def learn_grant(
        self, campaign: str, user: str, request_id: str, voucher: str, channel: str, granted_at_ms: int
    ) -> None:
        if voucher and voucher not in self.grants:
            self.grants[voucher] = Grant(
                campaign, user, request_id, voucher, channel, granted_at_ms, time.monotonic()
            )
            self.by_user[(campaign, user)].append(voucher)

    def usable(self, campaign: str, user: str, valid_for_ms: int = 0) -> list[str]:
        """The user's vouchers not known to be used; with valid_for_ms, only those still valid for a
        while (a redemption of an expired voucher only tells EXPIRED)."""
        soon = int(time.time() * 1000) + 300
        return [
            v
            for v in self.by_user.get((campaign, user), [])
            if v not in self.used and (not valid_for_ms or self.grants[v].granted_at_ms + valid_for_ms > soon)
        ]

    def holders(self, campaign: str) -> list[str]:
        return [u for (c, u), vs in self.by_user.items() if c == campaign and vs]

    def near_expiry(
        self, campaign: str, valid_for_ms: int, ahead_ms: int, rng: random.Random, k: int
    ) -> list[Grant]:
        """Up to k unused vouchers of the campaign whose validity ends within about ahead_ms of now
        (either side): redemptions there race the sweeps of nodes whose clocks disagree."""
        now = int(time.time() * 1000)
        found = [
            g
            for g in self.grants.values()
            if g.campaign == campaign
            and g.voucher not in self.used
            and -ahead_ms <= g.granted_at_ms + valid_for_ms - now <= ahead_ms
        ]
        rng.shuffle(found)
        return found[:k]
