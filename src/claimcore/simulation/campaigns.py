"""The campaigns of one seed: a category of one-per-category campaigns and a group of stackable ones.

Small inventories and short validity on purpose: campaigns sell out within seconds, vouchers
expire within seconds, and their stock comes back a few at a time, so the campaigns swing
between sold out and not all run long: sold-out snapshots, borrowing, sweeps and redemptions at
the edge of validity meet again and again in a run of two minutes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from claimcore.v1 import claims_pb2 as pb

CATEGORY = "appliances"  # one_per_category: a user may hold vouchers of one of them
STACK_CATEGORY = "3c"  # stackable: one order may use vouchers of several of them
CHANNELS = ("app-a", "app-b", "app-c")
MERCHANTS = {CATEGORY: "m-appliances", STACK_CATEGORY: "m-3c"}


@dataclass
class Plan:
    """One campaign as the simulation made it."""

    campaign: pb.Campaign
    group: str  # "category" or "stack"
    deny_list: bool  # the one whose eligibility (deny list) the run changes

    @property
    def campaign_id(self) -> str:
        return self.campaign.campaign_id


def plan_campaigns(rng: random.Random, seed: int, run_s: float, stacked: bool = False) -> list[Plan]:
    """stacked: the stackable campaigns four times as big and valid 10-15 s, so users keep valid
    vouchers of several of them and stacked orders are many (the --stacked mix)."""
    now = int(time.time() * 1000)
    plans = []
    for k in range(3):
        rounds = []
        if k == 2:  # a later round released mid-run
            rounds = [
                pb.Round(
                    release_at_ms=now + int(run_s * 1000 * rng.uniform(0.2, 0.6)), amount=rng.randint(5, 15)
                )
            ]
        shards = rng.randint(2, 4)
        plans.append(
            Plan(
                pb.Campaign(
                    campaign_id=f"cat{k}-s{seed}",
                    name=f"appliances {k}",
                    inventory=rng.randint(12, 30),
                    shards=shards,
                    per_user_limit=2,
                    value_cents=1000,
                    min_spend_cents=2000,
                    category=CATEGORY,
                    valid_for_ms=rng.randint(3000, 6000),
                    max_vouchers_per_order=2,
                    one_per_category=True,
                    rounds=rounds,
                ),
                "category",
                False,
            )
        )
    for k in range(3):
        main = k == 0
        plans.append(
            Plan(
                pb.Campaign(
                    campaign_id=f"stk{k}-s{seed}",
                    name=f"3c {k}",
                    inventory=(rng.randint(50, 90) if main else rng.randint(20, 50)) * (4 if stacked else 1),
                    shards=4 if main else rng.randint(2, 3),
                    per_user_limit=3 if main else 2,
                    value_cents=500 + 100 * k,
                    min_spend_cents=1000,
                    category=STACK_CATEGORY,
                    valid_for_ms=rng.randint(10000, 15000) if stacked else rng.randint(4000, 8000),
                    max_vouchers_per_order=2,
                    stackable=True,
                ),
                "stack",
                main,
            )
        )
    return plans
