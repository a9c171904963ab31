"""Archiving campaigns (AdminService.ArchiveCampaign / UnarchiveCampaign, `claimcore campaign
archive|unarchive`): only a campaign not open to claims (paused, ended by Redis's clock, or sold
out) leaves the lists; its figures, ledger export and reconcile stay; resume waits for unarchive;
every call can be sent twice; a resume racing an archive never leaves an archived campaign open.
Real Redis, real node, the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import grpc
import pytest

from claimcore.v1 import claims_pb2 as pb
from conftest import create_campaign, new_campaign_id, redis_dump


def ask(call, campaign_id: str) -> pb.CampaignInfo:  # type: ignore[no-untyped-def]
    """The campaign as an admin call (GetCampaign, PauseCampaign, ...) answers: its request and response
    types are the call's own, named after it."""
    request = getattr(pb, f"{call._method.decode().rsplit('/', 1)[1]}Request")
    return call(request(campaign_id=campaign_id), timeout=10).campaign


def refused(call, campaign_id: str) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        ask(call, campaign_id)
    return err.value


def listed(admin, include_archived: bool = False) -> list[str]:  # type: ignore[no-untyped-def]
    request = pb.ListCampaignsRequest(include_archived=include_archived)
    return list(admin.ListCampaigns(request, timeout=10).campaign_ids)


def claim(claims, cid: str, user: str) -> pb.ClaimResponse:  # type: ignore[no-untyped-def]
    return claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r", channel_id="app"),
                        timeout=10)


def test_an_open_campaign_is_refused_and_nothing_changes(node, admin, redis_client):
    cid = create_campaign(admin, inventory=10, shards=2).campaign.campaign_id
    before = redis_dump(redis_client, cid)
    err = refused(admin.ArchiveCampaign, cid)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == f"campaign {cid} is open: pause it first"
    assert redis_dump(redis_client, cid) == before
    assert cid in listed(admin) and not ask(admin.GetCampaign, cid).archived


def test_a_paused_campaign_leaves_the_lists_keeps_its_figures_and_ledger(node, admin, claims):
    cid = create_campaign(admin, inventory=10, shards=2).campaign.campaign_id
    for i in range(3):
        assert claim(claims, cid, f"u{i}").outcome == pb.OUTCOME_GRANTED
    ask(admin.PauseCampaign, cid)
    first = ask(admin.ArchiveCampaign, cid)
    again = ask(admin.ArchiveCampaign, cid)  # a resend answers as the first time
    assert first.archived and first.paused and first == again
    assert (first.granted, first.remaining) == (3, 7)
    assert cid not in listed(admin) and cid in listed(admin, include_archived=True)
    assert ask(admin.GetCampaign, cid) == first
    events = admin.ExportEvents(pb.ExportEventsRequest(campaign_id=cid), timeout=10).events
    assert sorted(e.user_id for e in events if e.kind == "grant") == ["u0", "u1", "u2"]
    assert admin.Reconcile(pb.ReconcileRequest(campaign_id=cid), timeout=30).ok
    assert claim(claims, cid, "late").outcome == pb.OUTCOME_PAUSED  # still paused on every shard

    err = refused(admin.ResumeCampaign, cid)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == f"campaign {cid} is archived: unarchive it first"
    assert ask(admin.GetCampaign, cid).paused and claim(claims, cid, "late").outcome == pb.OUTCOME_PAUSED

    back = ask(admin.UnarchiveCampaign, cid)
    assert not back.archived and back == ask(admin.UnarchiveCampaign, cid)
    assert cid in listed(admin) and cid in listed(admin, include_archived=True)
    assert not ask(admin.ResumeCampaign, cid).paused
    assert claim(claims, cid, "late").outcome == pb.OUTCOME_GRANTED


def test_an_ended_or_sold_out_campaign_may_be_archived_unpaused(node, admin, claims):
    now = int(time.time() * 1000)
    ended = create_campaign(admin, inventory=5, starts_at_ms=now - 60_000, ends_at_ms=now - 1000)
    assert ask(admin.ArchiveCampaign, ended.campaign.campaign_id).archived
    running = create_campaign(admin, inventory=5, ends_at_ms=now + 3_600_000)
    err = refused(admin.ArchiveCampaign, running.campaign.campaign_id)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    cid = create_campaign(admin, inventory=2, shards=2).campaign.campaign_id
    granted = [claim(claims, cid, f"u{i}").outcome for i in range(4)]
    assert granted.count(pb.OUTCOME_GRANTED) == 2
    info = ask(admin.ArchiveCampaign, cid)
    assert info.archived and not info.paused and (info.granted, info.remaining) == (2, 0)
    assert refused(admin.ResumeCampaign, cid).code() == grpc.StatusCode.FAILED_PRECONDITION
    moved = admin.Reshard(pb.ReshardRequest(campaign_id=cid, shards=1), timeout=30)  # still works on it
    assert moved.campaign.archived and moved.campaign.granted == 2 and cid not in listed(admin)


def test_stock_held_for_a_later_round_keeps_a_campaign_open(node, admin, claims):
    later = pb.Round(release_at_ms=4102444800000, amount=2)
    cid = create_campaign(admin, inventory=3, shards=1, rounds=[later]
                          ).campaign.campaign_id
    for i in range(5):
        claim(claims, cid, f"u{i}")
    info = ask(admin.GetCampaign, cid)
    assert info.remaining == 0 and info.held_for_rounds == 2  # the first round is gone
    assert refused(admin.ArchiveCampaign, cid).code() == grpc.StatusCode.FAILED_PRECONDITION


def test_unknown_and_bad_ids(node, admin):
    for call in (admin.ArchiveCampaign, admin.UnarchiveCampaign):
        assert refused(call, new_campaign_id()).code() == grpc.StatusCode.NOT_FOUND
        assert refused(call, "bad{id").code() == grpc.StatusCode.INVALID_ARGUMENT


def send_together(start: threading.Barrier, answers: dict[str, str], name: str, call, cid: str
                  ) -> None:  # type: ignore[no-untyped-def]
    start.wait()
    try:
        ask(call, cid)
        answers[name] = "OK"
    except grpc.RpcError as err:
        answers[name] = err.code().name  # type: ignore[attr-defined]


def test_a_resume_racing_an_archive_never_leaves_it_archived_and_open(node, admin):
    for _ in range(12):
        cid = create_campaign(admin, inventory=5).campaign.campaign_id
        ask(admin.PauseCampaign, cid)
        start = threading.Barrier(2)
        answers: dict[str, str] = {}
        threads = [threading.Thread(target=send_together, args=(start, answers, name, call, cid))
                   for name, call in (("archive", admin.ArchiveCampaign), ("resume", admin.ResumeCampaign))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        info = ask(admin.GetCampaign, cid)
        assert sorted(answers.values()) == ["FAILED_PRECONDITION", "OK"], answers  # exactly one wins
        assert info.archived == (answers["archive"] == "OK") and info.paused == info.archived


def test_claims_racing_archives_archive_only_once_sold_out(node, admin, claims):
    cid = create_campaign(admin, inventory=40, shards=2).campaign.campaign_id
    done = threading.Event()

    def claim_all() -> None:
        for i in range(60):
            claim(claims, cid, f"racer{i}")
        done.set()

    racer = threading.Thread(target=claim_all)
    racer.start()
    archived_at = None
    while archived_at is None:
        try:
            archived_at = ask(admin.ArchiveCampaign, cid)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            if done.is_set():
                pytest.fail("sold out, yet archive still refused")
    racer.join()
    assert archived_at.remaining == 0 and archived_at.granted == 40
    assert ask(admin.GetCampaign, cid).granted == 40


# ---------------------------------------------------------------- the CLI


def cli(env: dict[str, str], node, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "claimcore", *args, "--target", node.address],
                          capture_output=True, text=True, env=env, timeout=60)


def test_the_cli_archives_unarchives_and_lists(node, admin, env):
    cid = create_campaign(admin, inventory=10).campaign.campaign_id
    open_ = cli(env, node, "campaign", "archive", cid)
    assert open_.returncode == 1 and open_.stdout == ""
    assert open_.stderr == (f"claimcore campaign archive: FAILED_PRECONDITION: "
                            f"campaign {cid} is open: pause it first\n")

    ask(admin.PauseCampaign, cid)
    text = cli(env, node, "campaign", "archive", cid)
    assert text.returncode == 0 and any(line.split()[:2] == ["status", "archived"]
                                        for line in text.stdout.splitlines()), text.stdout
    again = cli(env, node, "campaign", "archive", cid, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["archived"] is True
    assert json.loads(again.stdout)["status"] == "archived"

    plain = cli(env, node, "campaign", "list", "--json")
    assert cid not in json.loads(plain.stdout)["campaign_ids"]
    assert cid not in cli(env, node, "campaign", "list").stdout
    every = json.loads(cli(env, node, "campaign", "list", "--archived", "--json").stdout)
    row = next(r for r in every["campaigns"] if r["campaign_id"] == cid)
    assert row["archived"] is True and row["status"] == "archived"
    assert cid in cli(env, node, "campaign", "list", "--archived").stdout

    resume = cli(env, node, "campaign", "resume", cid)
    assert resume.returncode == 1 and "unarchive it first" in resume.stderr
    back = cli(env, node, "campaign", "unarchive", cid, "--json")
    assert back.returncode == 0 and json.loads(back.stdout)["archived"] is False
    assert cid in json.loads(cli(env, node, "campaign", "list", "--json").stdout)["campaign_ids"]
    missing = cli(env, node, "campaign", "unarchive", new_campaign_id())
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
