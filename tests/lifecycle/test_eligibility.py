"""Eligibility checked inside the claim (issue 6), through real gRPC and a real redis-server.

Allow list, deny list, region of residence and tags, each NOT_ELIGIBLE saying which of them refused
(not_eligible_reason, the first in that order: deny list, allow list, region, tag) in Claim and in
ClaimBatch; changes while the campaign runs (变更资格); records that move with their users on a
reshard; bad input refused without a change; the CLI loader.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest

from claimcore.store.replies import Ineligible
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name, short_names
from conftest import create_campaign, redis_dump
from support import burst


def load(admin, cid: str, *records: pb.EligibilityRecord) -> int:
    return admin.UpdateEligibility(pb.UpdateEligibilityRequest(campaign_id=cid, records=records),
                                   timeout=30).updated


def verdict(reply: pb.ClaimResponse) -> str:
    """"GRANTED", or "NOT_ELIGIBLE:REGION": the outcome and, when set, the reason."""
    name = short_name(pb.Outcome, reply.outcome)
    if reply.not_eligible_reason:
        name += ":" + short_name(pb.NotEligibleReason, reply.not_eligible_reason)
    return name


def outcome(claims, cid: str, user: str, rid: str = "r") -> str:
    return verdict(claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid), timeout=10))


# Records for a campaign with every rule: allow list, resident in north, tag vip. Each user but "ok" is
# refused by exactly the rule named, the earlier ones first (a denied user fails every other rule too).
EVERY_RULE = dict(allow_list=True, resident_regions=["north"], required_tags=["vip"])
RECORDS = [
    pb.EligibilityRecord(user_id="denied", allowed=False, denied=True, region="south"),
    pb.EligibilityRecord(user_id="stranger", allowed=False, region="south"),
    pb.EligibilityRecord(user_id="southern", allowed=True, region="south"),
    pb.EligibilityRecord(user_id="untagged", allowed=True, region="north", tags=["x"]),
    pb.EligibilityRecord(user_id="ok", allowed=True, region="north", tags=["x", "vip"]),
]
EXPECTED = {"denied": "NOT_ELIGIBLE:DENY_LIST", "stranger": "NOT_ELIGIBLE:ALLOW_LIST",
            "southern": "NOT_ELIGIBLE:REGION", "untagged": "NOT_ELIGIBLE:TAG", "ok": "GRANTED",
            "nobody": "NOT_ELIGIBLE:ALLOW_LIST"}  # no record: on no list, of no region, no tag


def test_not_eligible_says_why_in_claim_and_in_claim_batch(admin, claims):
    one, batched = (create_campaign(admin, inventory=50, shards=3, **EVERY_RULE).campaign.campaign_id
                    for _ in range(2))
    for cid in (one, batched):
        load(admin, cid, *RECORDS)
    alone = {u: outcome(claims, one, u) for u in EXPECTED}
    batch = claims.ClaimBatch(pb.ClaimBatchRequest(claims=[
        pb.ClaimRequest(campaign_id=batched, user_id=u, request_id="r") for u in EXPECTED]), timeout=10)
    assert alone == EXPECTED
    assert dict(zip(EXPECTED, map(verdict, batch.replies), strict=True)) == EXPECTED
    assert all(not r.HasField("voucher") and r.retry_after_ms == 0 for r in batch.replies
               if r.outcome == pb.OUTCOME_NOT_ELIGIBLE)


def test_the_store_and_the_proto_number_the_reasons_alike() -> None:
    """claim.lua writes Ineligible's numbers; the node passes them on as NotEligibleReason's."""
    assert {r.name: r.value for r in Ineligible} == {
        name: n for name, n in short_names(pb.NotEligibleReason).items() if name != "UNSPECIFIED"}


def test_allow_and_deny_lists(admin, claims):
    cid = create_campaign(admin, inventory=50, shards=3, allow_list=True).campaign.campaign_id
    load(admin, cid, pb.EligibilityRecord(user_id="ann", allowed=True),
         pb.EligibilityRecord(user_id="bob", allowed=True, denied=True),
         pb.EligibilityRecord(user_id="cat", allowed=True))
    first = {u: outcome(claims, cid, u) for u in ("ann", "bob", "cat", "dan")}
    load(admin, cid, pb.EligibilityRecord(user_id="ann", denied=True),    # revoked after her grant
         pb.EligibilityRecord(user_id="dan", allowed=True))
    later = {"ann replay": outcome(claims, cid, "ann"), "ann new": outcome(claims, cid, "ann", "r2"),
             "dan": outcome(claims, cid, "dan")}
    # bob is allowed and denied: the deny list wins; dan has no record yet: not on the allow list
    assert first == {"ann": "GRANTED", "bob": "NOT_ELIGIBLE:DENY_LIST", "cat": "GRANTED",
                     "dan": "NOT_ELIGIBLE:ALLOW_LIST"}
    # a granted request replays whatever changed since; a new one meets the limit first
    assert later == {"ann replay": "GRANTED", "ann new": "ALREADY_CLAIMED", "dan": "GRANTED"}


def test_residence_and_tags(admin, claims):
    cid = create_campaign(admin, inventory=50, shards=2, resident_regions=["north", "east"],
                          required_tags=["resident", "adult"]).campaign.campaign_id
    load(admin, cid, pb.EligibilityRecord(user_id="ok", region="east", tags=["adult", "resident", "x"]),
         pb.EligibilityRecord(user_id="far", region="south", tags=["adult", "resident"]),
         pb.EligibilityRecord(user_id="young", region="north", tags=["resident"]))
    got = {u: outcome(claims, cid, u) for u in ("ok", "far", "young", "unknown")}
    assert got == {"ok": "GRANTED", "far": "NOT_ELIGIBLE:REGION", "young": "NOT_ELIGIBLE:TAG",
                   "unknown": "NOT_ELIGIBLE:REGION"}


def test_a_deny_list_on_an_open_campaign_and_removing_a_record(admin, claims):
    cid = create_campaign(admin, inventory=50, shards=2).campaign.campaign_id
    assert outcome(claims, cid, "before") == "GRANTED"
    load(admin, cid, pb.EligibilityRecord(user_id="scalper", denied=True))
    denied = outcome(claims, cid, "scalper")
    others = outcome(claims, cid, "someone")
    load(admin, cid, pb.EligibilityRecord(user_id="scalper", remove=True))
    back = outcome(claims, cid, "scalper")
    assert (denied, others, back) == ("NOT_ELIGIBLE:DENY_LIST", "GRANTED", "GRANTED")


def test_changes_while_the_grab_runs(node, admin):
    cid = create_campaign(admin, inventory=2000, shards=4, allow_list=True).campaign.campaign_id
    group_a = [f"a{i}" for i in range(600)]
    group_b = [f"b{i}" for i in range(300)]
    group_c = [f"c{i}" for i in range(300)]
    load(admin, cid, *(pb.EligibilityRecord(user_id=u, allowed=True) for u in group_a))

    async def run() -> tuple[list, list]:
        grab = asyncio.create_task(
            burst([node.address], cid, [(u, "r") for u in group_a + group_b], clients=64))
        async with grpc.aio.insecure_channel(node.address) as ch:
            await asyncio.sleep(0.05)
            await pb_grpc.AdminServiceStub(ch).UpdateEligibility(pb.UpdateEligibilityRequest(
                campaign_id=cid, records=[pb.EligibilityRecord(user_id=u, allowed=True) for u in group_c]),
                timeout=30)
        late = await burst([node.address], cid, [(u, "r") for u in group_c], clients=32)
        return await grab, late

    during, late = asyncio.run(run())
    by_user = {u: short_name(pb.Outcome, r.outcome) for u, _, r in during + late}
    assert {by_user[u] for u in group_a} == {"GRANTED"}
    assert {by_user[u] for u in group_b} == {"NOT_ELIGIBLE"}
    assert {by_user[u] for u in group_c} == {"GRANTED"}
    reply = admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30)
    assert reply.ok and reply.events == 900


def test_records_move_with_their_users_on_a_reshard(admin, claims):
    cid = create_campaign(admin, inventory=400, shards=2, allow_list=True).campaign.campaign_id
    allowed = [f"ok{i}" for i in range(150)]
    denied = [f"no{i}" for i in range(150)]  # records only: never claimed before the reshard
    load(admin, cid, *(pb.EligibilityRecord(user_id=u, allowed=True) for u in allowed),
         *(pb.EligibilityRecord(user_id=u, allowed=True, denied=True) for u in denied))
    granted_before = {u: outcome(claims, cid, u) for u in allowed[:50]}
    admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=7), timeout=60)
    after = {u: outcome(claims, cid, u) for u in allowed[50:] + denied}
    assert set(granted_before.values()) == {"GRANTED"}
    assert {after[u] for u in allowed[50:]} == {"GRANTED"}
    assert {after[u] for u in denied} == {"NOT_ELIGIBLE:DENY_LIST"}


@pytest.mark.parametrize("records", [
    [pb.EligibilityRecord(user_id="bad user")],
    [pb.EligibilityRecord(user_id="u1"), pb.EligibilityRecord(user_id="u1", denied=True)],
    [pb.EligibilityRecord(user_id="u1", region="no region")],
    [pb.EligibilityRecord(user_id=f"u{i}") for i in range(10_001)],
    [],
])
def test_bad_eligibility_updates_change_nothing(admin, redis_client, records):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
    before = redis_dump(redis_client, cid)
    with pytest.raises(grpc.RpcError) as err:
        load(admin, cid, *records)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert redis_dump(redis_client, cid) == before


def test_cli_loads_a_csv_and_names_a_bad_line(node, admin, claims, tmp_path):
    cid = create_campaign(admin, inventory=20, shards=2, allow_list=True,
                          required_tags=["vip"]).campaign.campaign_id
    good, bad = tmp_path / "ok.csv", tmp_path / "bad.csv"
    good.write_text("user_id,allowed,denied,region,tags,remove\nu1,1,0,north,vip;x,0\nu2,1,0,,,\nu3,yes,1,,vip,\n")
    bad.write_text("user_id,allowed\nu9,maybe\n")
    cli = [sys.executable, "-m", "claimcore", "eligibility", "--target", node.address, "load", cid]
    ok = subprocess.run([*cli, str(good)], capture_output=True, text=True, timeout=60)
    wrong = subprocess.run([*cli, str(bad)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "3 records" in ok.stdout, ok.stderr
    assert wrong.returncode == 2 and "line 2" in wrong.stderr and "maybe" in wrong.stderr
    assert [outcome(claims, cid, u) for u in ("u1", "u2", "u3", "u9")] == [
        "GRANTED", "NOT_ELIGIBLE:TAG", "NOT_ELIGIBLE:DENY_LIST", "NOT_ELIGIBLE:ALLOW_LIST"]
