"""The history checker (claimcore.harness.history) against a real Redis: it passes a true history and
catches each kind of broken one, so a clean report from a chaos run means something.

Real claims go through a real node; then the history or the Redis state is forged one way
at a time, and the checker must name the check that broke.
"""

from __future__ import annotations

import threading

import grpc
import pytest

from claimcore.harness.history import INDETERMINATE, History, check_against, check_history, read_final_state
from claimcore.store.keyspace import shard_keys
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import create_campaign

INVENTORY, SHARDS = 6, 2


@pytest.fixture
def granted(node, redis_client):
    """A campaign of 6 vouchers over 2 shards, claimed by 8 users through the node (some double
    taps and replays), every call recorded: (campaign id, history)."""
    history = History()
    with grpc.insecure_channel(node.address) as ch:
        cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=INVENTORY,
                              shards=SHARDS).campaign.campaign_id
        stub = pb_grpc.ClaimServiceStub(ch)
        calls = [(f"u{i}", f"r{i}") for i in range(8)] + [("u0", "tap"), ("u1", "r1"), ("u2", "r2")]
        for user, rid in calls:
            op = history.invoke(cid, user, rid)
            history.replied(op, stub.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=rid),
                                           timeout=5))
    return cid, history


def lonely_grant(history: History):  # noqa: ANN201
    """A GRANTED call of a user who made no other request (so no ALREADY_CLAIMED names it)."""
    ops = history.ops
    return next(op for op in ops if op.outcome == "GRANTED"
                and all(o.request_id == op.request_id for o in ops if o.user_id == op.user_id))


def test_a_true_history_is_clean(granted, redis_client):
    cid, history = granted
    report = check_history(history, redis_client, cid)
    assert report.ok, report.summary()
    assert report.outcomes == {"GRANTED": 8, "SOLD_OUT": 2, "ALREADY_CLAIMED": 1}
    assert (report.claims, report.requests, report.acknowledged, report.granted_final) == (11, 9, 6, 6)
    assert (report.lost, report.oversold, report.duplicates, report.phantoms) == (0, 0, 0, 0)


def test_a_forged_acknowledged_grant_missing_from_redis_is_lost(granted, redis_client):
    cid, history = granted
    history.complete(history.invoke(cid, "u7", "r-forged"), "GRANTED", f"{cid}-1-999")
    report = check_history(history, redis_client, cid)
    assert not report.ok and report.lost == 1
    assert "C3" in report.failed_checks()
    assert any("r-forged" in p for p in report.problems)


def test_a_grant_deleted_from_redis_is_lost(granted, redis_client):
    """The other way round: the history is true, Redis lost one acknowledged grant (as an
    asynchronous failover would lose it), with its counters rolled back consistently."""
    cid, history = granted
    victim = lonely_grant(history)
    state = read_final_state(redis_client, cid)
    shard = next(s for s in range(SHARDS) if redis_client.hexists(shard_keys(cid, s).reqs,
                                                                   f"{victim.user_id}|{victim.request_id}"))
    keys = shard_keys(cid, shard)
    redis_client.hdel(keys.reqs, f"{victim.user_id}|{victim.request_id}")
    redis_client.hdel(keys.users, victim.user_id)
    redis_client.hincrby(keys.state, "granted", -1)
    redis_client.hincrby(keys.state, "stock", 1)
    report = check_history(history, redis_client, cid)
    assert report.lost == 1 and report.granted_final == state.granted - 1
    assert report.failed_checks() == {"C3"}, report.summary()


def test_already_claimed_naming_another_voucher_breaks_c6(granted, redis_client):
    cid, history = granted
    history.complete(history.invoke(cid, "u3", "r-again"), "ALREADY_CLAIMED", f"{cid}-0-777")
    report = check_history(history, redis_client, cid)
    assert "C6" in report.failed_checks() and report.lost == 1


def test_two_vouchers_for_one_request_are_duplicates(granted, redis_client):
    cid, history = granted
    first = next(op for op in history.ops if op.outcome == "GRANTED")
    history.complete(history.invoke(cid, first.user_id, first.request_id), "GRANTED", first.voucher_id + "0")
    report = check_history(history, redis_client, cid)
    assert report.duplicates >= 1
    assert {"C3", "C6"} <= report.failed_checks()


def test_more_acknowledged_than_the_inventory_is_oversold(granted, redis_client):
    cid, history = granted
    for n in range(3):  # users told of vouchers that Redis never had (an async failover's doing)
        history.complete(history.invoke(cid, f"late{n}", "r"), "GRANTED", f"{cid}-9-{n}")
    report = check_history(history, redis_client, cid)
    assert report.oversold == 3 and report.lost == 3
    assert {"C1", "C3"} <= report.failed_checks()


def test_an_unacknowledged_grant_is_a_phantom_only_if_a_call_was_left_unknown(granted, redis_client):
    cid, history = granted
    ops = history.ops
    target = lonely_grant(history)
    # Pretend the client never heard the reply of that request: every call of it timed out.
    for op in ops:
        if (op.user_id, op.request_id) == (target.user_id, target.request_id):
            op.outcome, op.voucher_id = INDETERMINATE, ""
    state = read_final_state(redis_client, cid)
    phantom = check_against(ops, state)
    assert phantom.ok and phantom.phantoms == 1 and phantom.indeterminate >= 1
    # And without even an unknown call of that request, the grant is unexplained (C4).
    unexplained = check_against([op for op in ops if op.request_id != target.request_id
                                 or op.user_id != target.user_id], state)
    assert unexplained.failed_checks() == {"C4"}


def test_a_broken_redis_state_breaks_c1_and_c2(granted, redis_client):
    cid, history = granted
    keys = shard_keys(cid, 0)
    redis_client.hincrby(keys.state, "stock", 1)  # stock out of nowhere
    report = check_history(history, redis_client, cid)
    assert report.failed_checks() == {"C1"}
    # A second grant recorded for a user (limit 1), with its counters moved consistently.
    user = next(op.user_id for op in history.ops if op.outcome == "GRANTED"
                and redis_client.hexists(keys.users, op.user_id))
    count, last, at, rids = redis_client.hget(keys.users, user).split("|", 3)
    redis_client.hset(keys.reqs, f"{user}|extra", f"{cid}-0-500|{at}|")
    redis_client.hset(keys.users, user, f"2|{cid}-0-500|{at}|{rids},extra")
    redis_client.hincrby(keys.state, "stock", -2)
    redis_client.hincrby(keys.state, "granted", 1)
    report = check_history(history, redis_client, cid)
    assert "C2" in report.failed_checks() and report.duplicates >= 1, report.summary()


def test_recording_from_many_threads_keeps_every_op():
    history = History()

    def worker(k: int) -> None:
        for n in range(2000):
            history.complete(history.invoke("c", f"u{k}", f"r{n}"), "SOLD_OUT")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = history.ops
    assert len(ops) == 16_000 == len({op.op_id for op in ops})
    assert all(op.t_complete is not None and op.t_complete >= op.t_invoke for op in ops)
