"""The schedule of a seed: which operation starts when, drawn from the seed alone.

The load is a Poisson stream of client operations; the faults (reshards, node kills, dropped
Redis connections) and the eligibility changes are timelines of their own, so that every run
has each of them however the draws of the load fall. Real concurrency makes timing vary from
run to run; the schedule (what, when, against which node) does not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from claimcore.simulation.campaigns import Plan

# Client operations and their weights in the stream (operations.py runs them).
LOAD_WEIGHTS = {
    "claim": 26,  # one claim, sometimes through claimcore.client (round robin, retries)
    "double_tap": 6,  # one user, two request ids, one node, at once (one flush)
    "cross_node_tap": 5,  # one user at once through several nodes, one or several campaigns
    "lost_reply": 6,  # a reply lost (tiny deadline); resent with the same request id later
    "replay": 4,  # an earlier request sent again, often to another node
    "cross_channel_replay": 2,  # an earlier request sent again by another channel
    "batch": 4,  # ClaimBatch of a few users (some twice)
    "release": 3,  # a user gives a voucher up
    "recycle": 3,  # RecycleExpired through a node
    "redeem": 9,  # one campaign's vouchers on an order, maybe with SN codes
    "redeem_edge": 5,  # vouchers at the edge of their validity, through a node behind in time
    "redeem_stacked": 5,  # vouchers of two or three stackable campaigns on one order
    "reverse": 4,  # a redeemed order refunded
    "replay_redeem": 2,  # a redemption sent again (maybe after a reshard)
    "replay_reverse": 2,  # a reversal sent again
    "eligibility": 2,  # records changed (no effect on the outcome)
    "denied_claim": 3,  # a user on the deny list tries
}
# Bursts of claims through the watching, auto-batching client (operations.op_watched_claim), per
# operation of the stream above: a timeline of their own, drawn last, so that adding them left
# every other draw of a seed as it was.
WATCHED_PER_OPERATION = 0.08
# Archive-then-unarchive of a campaign (operations.op_archive), per operation of the stream: a
# timeline of its own, drawn after the watched bursts, so every earlier draw of a seed stays.
ARCHIVE_PER_OPERATION = 0.01


@dataclass
class Step:
    at_s: float
    kind: str
    seed: int  # the operation's own draws at run time (random.Random(seed))
    args: dict[str, object] = field(default_factory=dict)


def draw(
    seed: int, run_s: float, plans: list[Plan], nodes: int, rate: float, stacked: bool = False
) -> list[Step]:
    """stacked (the --stacked mix): four times the stacked redemptions, kills twice as often."""
    rng = random.Random(f"schedule-{seed}")
    steps: list[Step] = []
    mix = {**LOAD_WEIGHTS, "redeem_stacked": LOAD_WEIGHTS["redeem_stacked"] * 4} if stacked else LOAD_WEIGHTS
    kinds, weights = zip(*mix.items(), strict=True)
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= run_s:
            break
        steps.append(Step(t, rng.choices(kinds, weights)[0], rng.getrandbits(32)))

    # Reshards: each campaign alternates down and up, every few seconds, so the stock, the users
    # and their records keep moving while everything else runs.
    for plan in plans:
        shards = plan.campaign.shards
        t = rng.uniform(2.0, 8.0)
        down = True
        while t < run_s - 3:
            if down and shards > 1:
                shards = rng.randint(1, shards - 1)
            else:
                shards = rng.randint(shards + 1, min(shards + 4, 8))
            down = not down
            steps.append(
                Step(t, "reshard", rng.getrandbits(32), {"campaign": plan.campaign_id, "shards": shards})
            )
            t += rng.uniform(4.0, 10.0)
    # Deny-list changes on the deny-list campaign start after its first shrink (a deny list loaded
    # after a shrink must still hold on the shards a later growth revives).
    deny = next(p for p in plans if p.deny_list)
    first_shrink = min(
        (s.at_s for s in steps if s.kind == "reshard" and s.args["campaign"] == deny.campaign_id), default=2.0
    )
    t = first_shrink + rng.uniform(0.5, 2.0)
    while t < run_s - 2:
        steps.append(Step(t, "deny", rng.getrandbits(32), {"campaign": deny.campaign_id}))
        t += rng.uniform(3.0, 8.0)
    # Node kills: kill -9 (often mid-burst of stacked redemptions), restart after a while.
    t = rng.uniform(4.0, 10.0)
    while t < run_s - 5:
        steps.append(
            Step(
                t,
                "kill",
                rng.getrandbits(32),
                {"node": rng.randrange(nodes), "down_s": rng.uniform(0.3, 2.0)},
            )
        )
        t += rng.uniform(3.0, 7.5) if stacked else rng.uniform(6.0, 15.0)
    # Dropped Redis connections: the nodes' clients resend what was in flight.
    t = rng.uniform(0.5, 3.0)
    while t < run_s:
        steps.append(Step(t, "drop_connections", rng.getrandbits(32), {"times": rng.randint(1, 6)}))
        t += rng.uniform(0.5, 2.5)
    # Sold-out probes: every node asked for a fresh user's claim while Redis holds stock.
    t = rng.uniform(1.0, 3.0)
    while t < run_s:
        steps.append(Step(t, "sold_out_probe", rng.getrandbits(32)))
        t += rng.uniform(1.0, 3.0)
    # Watched bursts: the app backend's claims through ClaimClient(watch=True), a Poisson stream.
    t = rng.expovariate(rate * WATCHED_PER_OPERATION)
    while t < run_s:
        steps.append(Step(t, "watched_claim", rng.getrandbits(32)))
        t += rng.expovariate(rate * WATCHED_PER_OPERATION)
    t = rng.expovariate(rate * ARCHIVE_PER_OPERATION)
    while t < run_s:
        steps.append(Step(t, "archive", rng.getrandbits(32)))
        t += rng.expovariate(rate * ARCHIVE_PER_OPERATION)
    steps.sort(key=lambda s: s.at_s)
    return steps
