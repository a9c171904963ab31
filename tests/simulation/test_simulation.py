"""The seeded simulation of everything at once (claimcore.simulation), in its short form.

A few seeds of real nodes on a real Redis (and one on a Redis Cluster) must pass every check;
`make simulate` runs the long form. The checker is also shown able to fail: a run's Redis state
and history are tampered with one way at a time, and the right check must name the tampering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from claimcore.lifecycle.ledger import event_position
from claimcore.simulation.__main__ import parse_seeds
from claimcore.simulation.calls import Call
from claimcore.simulation.checks import Violation
from claimcore.simulation.runner import recheck, run_seed
from claimcore.store.keyspace import shard_keys

SHORT_MINUTES = 0.25


def _assert_clean(seed: int, cluster: bool) -> None:
    result = asyncio.run(run_seed(seed, SHORT_MINUTES, cluster=cluster))
    assert sum(result.operations.values()) > 100, result.text
    assert result.outcomes["GRANTED"] > 50, result.text
    assert not result.violations, result.text


@pytest.mark.parametrize("seed", [1, 2])
def test_a_short_run_on_a_plain_redis_breaks_no_promise(seed: int) -> None:
    _assert_clean(seed, cluster=False)


def test_a_short_run_on_a_redis_cluster_breaks_no_promise() -> None:
    _assert_clean(3, cluster=True)


def test_seeds_are_read_as_ranges_and_lists() -> None:
    assert parse_seeds("1-3,7,9-10") == [1, 2, 3, 7, 9, 10]


# ------------------------------------------------------------------ the checker can fail


@pytest.fixture(scope="module")
def kept() -> Iterator[dict[str, Any]]:
    """A tiny run whose world stays up, so its state can be tampered with and checked again."""
    kept: dict[str, Any] = {}
    asyncio.run(run_seed(11, 0.1, keep=kept, settle_s=1.0))
    yield kept
    kept["world"].stop()


def _new(before: list[Violation], after: list[Violation], check: str) -> list[Violation]:
    seen = {(v.check, v.message) for v in before}
    return [v for v in after if v.check == check and (v.check, v.message) not in seen]


def _stored_grant(kept: dict[str, Any], min_per_user: int = 1) -> tuple[str, Any]:
    """A campaign and one of its grant records (of a user holding at least min_per_user)."""
    for cid, cs in kept["state"].campaigns.items():
        by_user: dict[str, int] = {}
        for g in cs.home_grants():
            by_user[g.user] = by_user.get(g.user, 0) + 1
        for g in cs.home_grants():
            if by_user[g.user] >= min_per_user:
                return cid, g
    raise AssertionError("the run stored no grant")


def test_a_voucher_returned_twice_in_the_ledger_is_named(kept: dict[str, Any]) -> None:
    before = recheck(kept)
    cid, grant = _stored_grant(kept)
    client = kept["world"].redis_client()
    try:
        keys = shard_keys(cid, grant.shard)
        for _ in range(2):  # recycled twice, each with its stock, so only the ledger tells
            client.xadd(keys.log, {"e": "expire", "t": "1", "g": f"{grant.user}\t{grant.voucher}"})
        client.hincrby(keys.state, "stock", 2)
        client.hincrby(keys.state, "recycled", 2)
    finally:
        client.close()
    found = _new(before, recheck(kept), "returned-once")
    assert any(grant.voucher in v.message for v in found), found


def test_stock_out_of_nowhere_breaks_conservation(kept: dict[str, Any]) -> None:
    before = recheck(kept)
    cid, grant = _stored_grant(kept)
    client = kept["world"].redis_client()
    try:
        client.hincrby(shard_keys(cid, 0).state, "stock", 1)
    finally:
        client.close()
    found = _new(before, recheck(kept), "conservation")
    assert any(v.campaign == cid for v in found), found


def _forge(kept: dict[str, Any], template: Call, **fields: Any) -> Call:
    calls = kept["log"].calls
    forged = Call(
        len(calls),
        "forged",
        template.rpc,
        template.node,
        template.campaign,
        user=template.user,
        request_id=template.request_id,
        channel=template.channel,
        t_invoke=(template.t_complete or template.t_invoke) + 1000.0,
        t_complete=(template.t_complete or template.t_invoke) + 1000.1,
        outcome="GRANTED",
    )
    for name, value in fields.items():
        setattr(forged, name, value)
    calls.append(forged)
    return forged


def _granted_call(kept: dict[str, Any]) -> Call:
    cs_by_id = kept["state"].campaigns
    for call in kept["log"].calls:
        if call.rpc.startswith("Claim") and call.outcome == "GRANTED" and call.campaign in cs_by_id:
            return call
    raise AssertionError("no GRANTED call in the run")


def test_a_grant_over_the_limit_is_named(kept: dict[str, Any]) -> None:
    before = recheck(kept)
    template = _granted_call(kept)
    limit = kept["state"].campaigns[template.campaign].limit
    for k in range(limit):  # told of `limit` more vouchers than it holds
        _forge(kept, template, request_id=f"forged{k}", answer={"voucher": f"{template.campaign}-0-99999{k}"})
    found = _new(before, recheck(kept), "per-user-limit")
    assert any(template.user in v.message for v in found), found
    found = _new(before, recheck(kept), "acknowledged-present")
    assert any("forged0" in v.message for v in found), found


def test_a_resend_answered_otherwise_is_named(kept: dict[str, Any]) -> None:
    before = recheck(kept)
    template = _granted_call(kept)
    _forge(kept, template, outcome="SOLD_OUT", answer={})
    found = _new(before, recheck(kept), "replay-alike")
    assert any(template.request_id in v.message for v in found), found


def test_a_not_eligible_without_its_reason_or_with_a_false_one_is_named(kept: dict[str, Any]) -> None:
    before = recheck(kept)
    template = _granted_call(kept)
    _forge(kept, template, request_id="unexplained", outcome="NOT_ELIGIBLE", answer={})
    _forge(kept, template, request_id="never-denied", user="nobody-denied-me", outcome="NOT_ELIGIBLE",
           answer={"reason": "DENY_LIST"})
    _forge(kept, template, request_id="regional", outcome="NOT_ELIGIBLE", answer={"reason": "REGION"})
    found = _new(before, recheck(kept), "not-eligible-reason")
    assert {v.kind for v in found} == {"no reason", "deny list unexplained"}, found
    assert any("nobody-denied-me" in v.message for v in found), found
    assert len(found) == 2, found  # a reason the checker cannot judge (REGION) is not a violation


def test_an_event_exported_twice_or_not_in_the_ledger_is_named(kept: dict[str, Any]) -> None:
    reader = kept["reader"]
    recheck(kept)
    assert reader.check(kept["state"]) == []  # the run's own export was exact
    campaign = max(reader.exported, key=lambda c: len(reader.exported[c]))
    first = reader.exported[campaign][0]
    ms, seq, shard = event_position(first)
    client = kept["world"].redis_client()
    try:
        client.xdel(shard_keys(campaign, shard).log, f"{ms}-{seq}")  # the ledger loses an exported entry
    finally:
        client.close()
    reader.exported[campaign].append(reader.exported[campaign][-1])  # and a page came twice
    recheck(kept)
    found = [v for v in reader.check(kept["state"]) if v.campaign == campaign]
    assert {v.kind for v in found} == {"twice", "extra"}, found
    assert any(first in v.message for v in found if v.kind == "extra"), found


def test_an_sn_code_on_two_orders_is_named(kept: dict[str, Any]) -> None:
    before = recheck(kept)
    cid, grant = _stored_grant(kept)
    cs = kept["state"].campaigns[cid]
    client = kept["world"].redis_client()
    try:
        redeem = shard_keys(cid, cs.home(grant.user)).redeem
        for order in ("forged-a", "forged-b"):  # two un-reversed orders subsidising SN-X
            client.hset(redeem, f"o:{grant.user}|{order}", f"R|{grant.voucher}|m|5000|100|1|app-a|SN-X,SN-Y")
    finally:
        client.close()
    found = _new(before, recheck(kept), "sn-once")
    assert any("SN-X" in v.message for v in found), found


def _local_sold_out(kept: dict[str, Any], at_ms: int, **answer: Any) -> Call:
    """A forged SOLD_OUT of the watching client (operations.watched_claim's record of one)."""
    cid, grant = _stored_grant(kept)
    template = Call(0, "watched_claim", "Claim(watch)", -1, cid, user="forged-late", request_id="forged-w")
    recorded = {"local": True, "at_ms": at_ms, "pushed_phase": "CAMPAIGN_PHASE_SOLD_OUT",
                "pushed_sequence": 1, "trusted_left_ms": 500.0, **answer}
    return _forge(kept, template, outcome="SOLD_OUT", answer=recorded)


def test_a_local_sold_out_while_stock_was_claimable_is_named(kept: dict[str, Any]) -> None:
    before = recheck(kept)
    cid, _ = _stored_grant(kept)
    first_grant = min(g.granted_at for g in kept["state"].campaigns[cid].grants)
    forged = _local_sold_out(kept, first_grant - 1)  # before the first grant: all its stock was there
    found = _new(before, recheck(kept), "local-sold-out")
    named = [v for v in found if f"call #{forged.call_id}" in v.message]
    assert any(v.kind == "stock was claimable" for v in named), found


def test_a_local_sold_out_from_an_open_or_lapsed_state_is_named(kept: dict[str, Any]) -> None:
    before = recheck(kept)
    far_future = 2**62  # no grant after it: only the state it was answered from can be wrong
    opened = _local_sold_out(kept, far_future, pushed_phase="CAMPAIGN_PHASE_OPEN", trusted_left_ms=0.0)
    lapsed = _local_sold_out(kept, far_future, trusted_left_ms=-3.0)
    found = _new(before, recheck(kept), "local-sold-out")
    for forged in (opened, lapsed):
        assert any(f"call #{forged.call_id}" in v.message for v in found), (forged.call_id, found)
