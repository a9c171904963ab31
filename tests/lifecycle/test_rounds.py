"""Later rounds (issue 6): inventory held back until its release time, then claimable.

Through real gRPC and a real redis-server: a campaign sells out its first
round, a node's sold-out snapshot stops answering at the next round's time,
and the round's stock is granted; released once however many release it;
bad rounds refused.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import grpc
import pytest
import redis

from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.store.inventory import RedisInventory
from claimcore.v1 import claims_pb2 as pb
from conftest import create_campaign, new_campaign_id


def claim(claims, cid: str, user: str) -> int:
    return claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r"), timeout=10).outcome


def test_a_later_round_reopens_a_sold_out_campaign_at_its_time(admin, claims):
    release_at = now_ms() + 1500
    cid = create_campaign(admin, inventory=10, shards=2,
                          rounds=[pb.Round(release_at_ms=release_at, amount=4)]).campaign.campaign_id
    first = [claim(claims, cid, f"a{i}") for i in range(7)]
    before = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
    while now_ms() < release_at:
        time.sleep(0.05)
    second, deadline = [], time.monotonic() + 5
    while len(second) < 4 and time.monotonic() < deadline:
        if claim(claims, cid, f"b{len(second)}") == pb.OUTCOME_GRANTED:
            second.append(True)
        else:
            time.sleep(0.05)
    after = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
    reconcile = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30)
    assert first == [pb.OUTCOME_GRANTED] * 6 + [pb.OUTCOME_SOLD_OUT]
    assert (before.held_for_rounds, before.remaining, before.granted) == (4, 0, 6)
    assert len(second) == 4 and claim(claims, cid, "c0") == pb.OUTCOME_SOLD_OUT
    assert (after.held_for_rounds, after.remaining, after.granted) == (0, 0, 10)
    assert reconcile.ok, [(f.name, f.from_ledger, f.live) for f in reconcile.figures if not f.ok]


def test_a_round_is_released_once_however_many_release_it(redis_server):
    cid = new_campaign_id("round")
    config = CampaignConfig(campaign_id=cid, inventory=100, shards=4, rounds=((1, 30), (2, 20)))

    async def main() -> tuple[list[int], int, int]:
        client = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
        try:
            inventory = RedisInventory(client)
            await inventory.create_campaign(config)
            released = await asyncio.gather(*(inventory.release_due_rounds(config) for _ in range(10)))
            figures = await inventory.figures(config)
            return released, sum(figures.remaining) + figures.in_leases, figures.held
        finally:
            await client.aclose()

    released, stock, held = asyncio.run(main())
    assert sum(released) == 50 and stock == 100 and held == 0


@pytest.mark.parametrize("rounds", [
    [pb.Round(release_at_ms=2000, amount=5), pb.Round(release_at_ms=1000, amount=5)],  # out of order
    [pb.Round(release_at_ms=1000, amount=99)],  # leaves 1 for 2 shards
    [pb.Round(release_at_ms=1000, amount=0)],
])
def test_bad_rounds_are_refused(admin, rounds):
    with pytest.raises(grpc.RpcError) as err:
        create_campaign(admin, inventory=100, shards=2, rounds=rounds)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_round_flag(node):
    base = [sys.executable, "-m", "claimcore", "campaign", "--target", node.address, "create",
            new_campaign_id(), "--inventory", "10", "--shards", "1"]
    ok = subprocess.run([*base, "--round", "4102444800000:3", "--json"], capture_output=True, text=True,
                        timeout=60)
    bad = subprocess.run([*base, "--round", "tomorrow"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and '"heldForRounds"' not in ok.stdout and '"held_for_rounds": 3,' in ok.stdout
    assert bad.returncode == 2 and "RELEASE_AT_MS:AMOUNT" in bad.stderr
