"""Bad input against every RPC of the three services, through a real node (issue 7).

A private redis-server and a private front node (module scope: no other test's background work
writes to this Redis), a few campaigns set up as valid targets, then for every RPC, enumerated from
the proto's descriptors:

- hypothesis-made requests (tests/fuzz/proto_strategies.py), whole-hostile and valid-with-one-hostile-field;
- the oracle: the status is OK or one this RPC may legitimately answer (never UNKNOWN or INTERNAL,
  which mean an uncaught exception); a request above the node's receive limit is RESOURCE_EXHAUSTED;
  a rejected call names what is wrong (non-empty details, a field name for INVALID_ARGUMENT) and
  changed nothing in Redis; the node stays alive and SERVING;
- an explicit table of every documented limit (docs/limits.md), just inside and just outside.

CLAIMCORE_FUZZ_EXAMPLES sets hypothesis' examples per RPC and mode (default 25). The counts of
answers per RPC and status are printed at the end of the module (pytest -s) and, with
CLAIMCORE_FUZZ_STATS=FILE, added up in FILE as JSON.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proto_strategies import messages, one_hostile_field

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.v1 import claims_pb2 as pb
from conftest import LocalNode, health_status, redis_dump

EXAMPLES = int(os.environ.get("CLAIMCORE_FUZZ_EXAMPLES", "25"))
MAX_RECEIVE = 1 << 20  # server.py: grpc.max_receive_message_length
CALL_TIMEOUT_S = 30.0
C = grpc.StatusCode

SERVICES = list(pb.DESCRIPTOR.services_by_name.values())
METHODS: dict[str, MethodDescriptor] = {m.name: m for s in SERVICES for m in s.methods}

# What each RPC may legitimately answer besides OK, read from the services on this node: an open
# node (no credentials file, so neither UNAUTHENTICATED nor PERMISSION_DENIED), targets without a
# channel list, one caller at a time (so no ABORTED from a concurrent reshard), Redis up (no
# UNAVAILABLE). RESOURCE_EXHAUSTED: the claim path sheds load; any RPC for a request above the
# receive limit (checked separately, by size).
BAD = {C.INVALID_ARGUMENT, C.NOT_FOUND}
ALLOWED: dict[str, set[grpc.StatusCode]] = {
    "Claim": BAD | {C.RESOURCE_EXHAUSTED},
    "ClaimBatch": BAD | {C.RESOURCE_EXHAUSTED},
    "GetClaim": BAD,
    "CreateCampaign": {C.INVALID_ARGUMENT, C.ALREADY_EXISTS},
    "GetCampaign": BAD,
    "ListCampaigns": set(),
    "PauseCampaign": BAD,
    "ResumeCampaign": BAD | {C.FAILED_PRECONDITION},  # a fuzzed archive may leave its target archived
    "ArchiveCampaign": BAD | {C.FAILED_PRECONDITION},  # an open campaign: pause it first
    "UnarchiveCampaign": BAD,
    "Reshard": BAD,
    "ExportEvents": BAD,
    "UpdateEligibility": BAD,
    "RecycleExpired": BAD,
    "RegisterMerchant": BAD,
    "ListMerchants": BAD,
    "Reconcile": BAD,
    "Redeem": BAD,
    "Reverse": BAD,
    "Release": BAD,
    "WatchCampaigns": BAD,
}

# Documented maximum counts of repeated fields (docs/limits.md): the strategies try them and one more.
LIMITS = {
    "claimcore.v1.ClaimBatchRequest.claims": 1000,
    "claimcore.v1.UpdateEligibilityRequest.records": 10_000,
    "claimcore.v1.RedeemRequest.voucher_ids": 100,
    "claimcore.v1.StackedVouchers.voucher_ids": 100,
    "claimcore.v1.RedeemRequest.sn_codes": 100,
    "claimcore.v1.Campaign.regions": 100,
    "claimcore.v1.Campaign.resident_regions": 100,
    "claimcore.v1.Campaign.required_tags": 100,
    "claimcore.v1.Campaign.rounds": 100,
    "claimcore.v1.EligibilityRecord.tags": 100,
    "claimcore.v1.WatchCampaignsRequest.campaign_ids": 100,
}

TARGETS = ("fz-main", "fz-stack", "fz-elig")
HOLDERS = [f"h{i}" for i in range(6)]
WORLD: dict[str, Any] = {}  # filled by the `world` fixture: voucher ids, a real cursor, ...

#: Answers per module, RPC and status: the figures for docs/reliability.md.
STATS: dict[str, Counter[tuple[str, str]]] = {}


# ------------------------------------------------------------------ the node and its campaigns


@pytest.fixture(scope="module")
def fuzz_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="module")
def fuzz_node(fuzz_redis: EmbeddedRedis) -> Iterator[LocalNode]:
    """This module's own node; no recycling sweep, so nothing writes to the targets by itself."""
    node = LocalNode(fuzz_redis.url, "--recycle-every-s", "0").start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def fuzz_channel(fuzz_node: LocalNode) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fuzz_node.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def fuzz_redis_client(fuzz_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis(port=fuzz_redis.port, decode_responses=True)
    yield client
    client.close()


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def call(channel: grpc.Channel, rpc: str, request: Message, timeout: float = CALL_TIMEOUT_S) -> Message:
    method = METHODS[rpc]
    serialize, parse = (lambda m: m.SerializeToString()), GetMessageClass(method.output_type).FromString
    if method.server_streaming:
        # A watch never ends by itself: its answer is its first message (or its status), then it is
        # cancelled. The first message comes at once (the current state of a watched campaign).
        stream = channel.unary_stream(method_path(method), request_serializer=serialize,
                                      response_deserializer=parse)(request, timeout=timeout)
        try:
            return next(stream)
        finally:
            stream.cancel()
    stub = channel.unary_unary(method_path(method), request_serializer=serialize, response_deserializer=parse)
    return stub(request, timeout=timeout)


def campaign(cid: str, **fields: Any) -> pb.CreateCampaignRequest:
    return pb.CreateCampaignRequest(campaign=pb.Campaign(campaign_id=cid, **fields))


TARGET_SPECS = {
    "fz-main": dict(inventory=1_000_000, shards=4, per_user_limit=3, category="dining", regions=["r1", "r2"],
                    max_vouchers_per_order=3, stackable=True, value_cents=500),
    "fz-stack": dict(inventory=100_000, shards=2, category="dining", stackable=True, value_cents=300),
    "fz-elig": dict(inventory=1000, shards=2, allow_list=True, resident_regions=["r1"], required_tags=["t1"],
                    valid_for_ms=3_600_000),
}


def setup_world(ch: grpc.Channel) -> dict[str, Any]:
    """The targets: three campaigns, a merchant, vouchers held by h0..h5, one redeemed order, a cursor."""
    world: dict[str, Any] = {"vouchers": {}}
    for cid, spec in TARGET_SPECS.items():
        call(ch, "CreateCampaign", campaign(cid, **spec))
    for cid in ("fz-main", "fz-stack"):
        call(ch, "RegisterMerchant", pb.RegisterMerchantRequest(
            merchant=pb.Merchant(campaign_id=cid, merchant_id="m1", category="dining", region="r1")))
        for user in HOLDERS:
            reply = call(ch, "Claim", pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=f"r-{user}"))
            assert reply.outcome == pb.OUTCOME_GRANTED, reply
            world["vouchers"][cid, user] = reply.voucher.voucher_id
    call(ch, "UpdateEligibility", pb.UpdateEligibilityRequest(campaign_id="fz-elig", records=[
        pb.EligibilityRecord(user_id="h0", allowed=True, region="r1", tags=["t1"])]))
    done = call(ch, "Redeem", pb.RedeemRequest(
        campaign_id="fz-main", user_id="h0", voucher_ids=[world["vouchers"]["fz-main", "h0"]],
        merchant_id="m1", order_id="o-h0", order_amount_cents=1000))
    assert done.outcome == pb.REDEEM_OUTCOME_REDEEMED, done
    page = call(ch, "ExportEvents", pb.ExportEventsRequest(campaign_id="fz-main", limit=2))
    assert page.more and page.next_cursor
    world["cursor"] = page.next_cursor
    return world


@pytest.fixture(scope="module")
def world(fuzz_channel: grpc.Channel) -> dict[str, Any]:
    WORLD.clear()
    WORLD.update(setup_world(fuzz_channel))
    return WORLD


@pytest.fixture(scope="module", autouse=True)
def report_stats(request: pytest.FixtureRequest) -> Iterator[Counter[tuple[str, str]]]:
    """Count the answers of this module; print them (and add them to CLAIMCORE_FUZZ_STATS) at its end."""
    name = request.module.__name__
    STATS[name] = counts = Counter()
    yield counts
    if not counts:
        return
    lines = [f"\n{name}: bad inputs tried and how each was answered"]
    for rpc in sorted({r for r, _ in counts}):
        row = ", ".join(f"{code} {n}" for (r, code), n in sorted(counts.items()) if r == rpc)
        lines.append(f"  {rpc}: {row}")
    print("\n".join(lines))
    path = os.environ.get("CLAIMCORE_FUZZ_STATS")
    if path:
        total: dict[str, dict[str, dict[str, int]]] = {}
        if os.path.exists(path):
            with open(path) as f:
                total = json.load(f)
        mod = total.setdefault(name, {})
        for (rpc, code), n in counts.items():
            mod.setdefault(rpc, {})
            mod[rpc][code] = mod[rpc].get(code, 0) + n
        with open(path, "w") as f:
            json.dump(total, f, indent=1, sort_keys=True)


# ------------------------------------------------------------------ the oracle


def field_names(descriptor: Any, depth: int = 4) -> set[str]:
    """Every field name of a message, nested ones too, with the singular of plural names."""
    names: set[str] = set()
    for field in descriptor.fields:
        names.add(field.name)
        if field.name.endswith("s"):
            names.add(field.name[:-1])
        if field.message_type is not None and depth > 1:
            names |= field_names(field.message_type, depth - 1)
    return names


def names_a_field(details: str, rpc: str) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", details)
               for n in field_names(METHODS[rpc].input_type))


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str
    reply: Message | None


def exercise(ch: grpc.Channel, client: redis.Redis, node: LocalNode, rpc: str, request: Message,
             counts: Counter[tuple[str, str]]) -> Answer:
    """One call under the oracle; returns what it answered."""
    before = redis_dump(client, *TARGETS)
    try:
        answer = Answer(C.OK, "", call(ch, rpc, request))
    except grpc.RpcError as err:
        answer = Answer(err.code(), err.details() or "", None)
    counts[rpc, answer.code.name] += 1
    shown = str(request)[:300]
    assert node.alive(), f"node died on {rpc}({shown}):\n{node.log_tail()}"
    assert answer.code not in (C.UNKNOWN, C.INTERNAL), (
        f"{rpc} answered {answer.code.name} ({answer.details}) to {shown}\n{node.log_tail(3000)}")
    if request.ByteSize() > MAX_RECEIVE:
        assert answer.code == C.RESOURCE_EXHAUSTED, (rpc, answer.code, request.ByteSize())
    else:
        assert answer.code == C.OK or answer.code in ALLOWED[rpc], (
            f"{rpc} answered {answer.code.name} ({answer.details}) to {shown}")
    if answer.code != C.OK:
        assert answer.details.strip(), f"{rpc}: {answer.code.name} without details"
        assert len(answer.details) <= 500, f"{rpc}: details echo too much: {answer.details[:200]}..."
        if answer.code == C.INVALID_ARGUMENT:
            assert names_a_field(answer.details, rpc), f"{rpc}: {answer.details!r} names no field"
        assert redis_dump(client, *TARGETS) == before, f"{rpc} rejected {shown} but changed Redis"
    return answer


def test_every_rpc_is_covered() -> None:
    """Every RPC the proto declares has an oracle and a valid base, so none is left out of the fuzzing."""
    assert {s.name for s in SERVICES} == {"ClaimService", "AdminService", "RedeemService"}
    declared = {(s.full_name, m.name) for s in SERVICES for m in s.methods}
    assert len(declared) == len(METHODS) == 21  # no RPC name in two services
    assert set(ALLOWED) == set(VALID) == set(METHODS)
    fuzzed = {name for name, _ in PARAMS}
    assert fuzzed == set(METHODS)


# ------------------------------------------------------------------ valid requests (the bases)

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
targets = st.sampled_from(TARGETS)
holders = st.sampled_from(HOLDERS)


@st.composite
def holder_voucher(draw: st.DrawFn, cid: str | None = None) -> tuple[str, str, str]:
    cid = cid or draw(st.sampled_from(["fz-main", "fz-stack"]))
    user = draw(holders)
    return cid, user, WORLD["vouchers"][cid, user]


@st.composite
def valid_claim(draw: st.DrawFn) -> pb.ClaimRequest:
    return pb.ClaimRequest(
        campaign_id=draw(targets), user_id=draw(st.one_of(holders, ids.map("u-".__add__))),
        request_id=draw(ids), channel_id=draw(st.sampled_from(["", "app1"])),
        device_id=draw(st.sampled_from(["", "dev-1"])),
        client_ip=draw(st.sampled_from(["", "10.0.0.1", "::1"])))


@st.composite
def valid_campaign(draw: st.DrawFn) -> pb.CreateCampaignRequest:
    if draw(st.integers(0, 9)) == 0:  # an existing id, same config (no-op) or not (ALREADY_EXISTS)
        cid = draw(targets)
        spec = dict(TARGET_SPECS[cid])
        if draw(st.booleans()):
            spec["inventory"] += 1
        return campaign(cid, **spec)
    inventory = draw(st.integers(1, 10_000))
    shards = draw(st.integers(1, min(4, inventory)))
    return campaign(
        "fc-" + draw(ids), inventory=inventory, shards=shards, per_user_limit=draw(st.integers(0, 3)),
        name=draw(st.text(alphabet="abc XYZ-éü用", max_size=20)),
        category=draw(st.sampled_from(["", "dining"])), value_cents=draw(st.integers(0, 1000)),
        regions=draw(st.lists(st.sampled_from(["r1", "r2"]), max_size=2)),
        max_vouchers_per_order=draw(st.integers(0, 3)), stackable=draw(st.booleans()),
    )


@st.composite
def valid_redeem(draw: st.DrawFn) -> pb.RedeemRequest:
    cid, user, voucher = draw(holder_voucher("fz-main"))
    request = pb.RedeemRequest(
        campaign_id=cid, user_id=user, voucher_ids=[voucher], merchant_id="m1", order_id="o-" + draw(ids),
        order_amount_cents=draw(st.integers(0, 100_000)), sn_codes=draw(st.lists(ids, max_size=2)))
    if draw(st.booleans()):
        request.stacked.add(campaign_id="fz-stack", voucher_ids=[WORLD["vouchers"]["fz-stack", user]])
    return request


@st.composite
def valid_export(draw: st.DrawFn) -> pb.ExportEventsRequest:
    return pb.ExportEventsRequest(campaign_id=draw(targets),
                                  cursor=draw(st.sampled_from(["", WORLD["cursor"]])),
                                  limit=draw(st.integers(0, 10_000)))


def by_campaign_id(rpc: str) -> st.SearchStrategy[Message]:
    """<rpc>Request(campaign_id=...): the request of each admin call that names one campaign."""
    return st.builds(getattr(pb, f"{rpc}Request"), campaign_id=st.one_of(targets, ids.map("nx-".__add__)))


VALID: dict[str, st.SearchStrategy[Message]] = {
    "Claim": valid_claim(),
    "ClaimBatch": st.lists(valid_claim(), min_size=1, max_size=4).map(
        lambda c: pb.ClaimBatchRequest(claims=c)),
    "GetClaim": st.builds(pb.GetClaimRequest, campaign_id=targets, user_id=holders,
                          request_id=st.sampled_from(["", "r-h1", "nope"])),
    "CreateCampaign": valid_campaign(),
    "GetCampaign": by_campaign_id("GetCampaign"),
    "ListCampaigns": st.builds(pb.ListCampaignsRequest, include_archived=st.booleans()),
    "PauseCampaign": by_campaign_id("PauseCampaign"),
    "ResumeCampaign": by_campaign_id("ResumeCampaign"),
    "ArchiveCampaign": by_campaign_id("ArchiveCampaign"),
    "UnarchiveCampaign": by_campaign_id("UnarchiveCampaign"),
    "Reshard": st.builds(pb.ReshardRequest, campaign_id=targets, shards=st.integers(1, 6)),
    "ExportEvents": valid_export(),
    "UpdateEligibility": st.builds(pb.UpdateEligibilityRequest, campaign_id=targets, records=st.lists(
        st.builds(pb.EligibilityRecord, user_id=ids, allowed=st.booleans(), denied=st.booleans(),
                  region=st.sampled_from(["", "r1"]),
                  tags=st.lists(st.sampled_from(["t1", "t2"]), max_size=2), remove=st.booleans()),
        min_size=1, max_size=3, unique_by=lambda r: r.user_id)),
    "RecycleExpired": by_campaign_id("RecycleExpired"),
    "RegisterMerchant": st.builds(
        pb.RegisterMerchantRequest,
        merchant=st.builds(pb.Merchant, campaign_id=st.sampled_from(["fz-main", "fz-stack"]),
                           merchant_id=ids, name=st.text(alphabet="abc XYZ-éü用", max_size=20),
                           category=st.just("dining"), region=st.sampled_from(["r1", "r2"]))),
    "ListMerchants": by_campaign_id("ListMerchants"),
    "Reconcile": by_campaign_id("Reconcile"),
    "Redeem": valid_redeem(),
    "Reverse": st.builds(pb.ReverseRequest, campaign_id=st.sampled_from(["fz-main", "fz-stack"]),
                         user_id=holders, order_id=st.sampled_from(["o-h0", "o-none"])),
    "Release": holder_voucher().map(
        lambda t: pb.ReleaseRequest(campaign_id=t[0], user_id=t[1], voucher_id=t[2])),
    "WatchCampaigns": st.lists(targets, min_size=1, max_size=3).map(
        lambda c: pb.WatchCampaignsRequest(campaign_ids=c)),
}

FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                         suppress_health_check=list(HealthCheck))


def strategy_for(rpc: str, mode: str) -> st.SearchStrategy[Message]:
    descriptor = METHODS[rpc].input_type
    if mode == "whole" or not descriptor.fields:
        return messages(descriptor, LIMITS)
    return one_hostile_field(VALID[rpc], LIMITS)


# ------------------------------------------------------------------ the fuzz tests


PARAMS = [(rpc, mode) for rpc in sorted(METHODS) for mode in ("whole", "one-field")
          if mode == "whole" or METHODS[rpc].input_type.fields]


@pytest.mark.parametrize(("rpc", "mode"), PARAMS)
def test_bad_input_is_answered_cleanly(rpc, mode, fuzz_channel, fuzz_redis_client, fuzz_node, world,
                                       report_stats):
    @FUZZ_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        request = data.draw(strategy_for(rpc, mode), label="request")
        exercise(fuzz_channel, fuzz_redis_client, fuzz_node, rpc, request, report_stats)

    run()
    assert health_status(fuzz_node.address) == health_pb2.HealthCheckResponse.SERVING


# A valid request these may refuse for the state of its campaign, not for anything in it: an archive of an
# open campaign ("pause it first"), a resume of an archived one ("unarchive it first").
REFUSED_BY_STATE = {"ArchiveCampaign": C.FAILED_PRECONDITION, "ResumeCampaign": C.FAILED_PRECONDITION}


def test_valid_bases_are_accepted(fuzz_channel, fuzz_redis_client, fuzz_node, world, report_stats):
    """The bases of the one-field mode are valid: what it rejects, the hostile field caused."""
    rejected = Counter()

    @settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        for rpc, strategy in VALID.items():
            answer = exercise(fuzz_channel, fuzz_redis_client, fuzz_node, rpc, data.draw(strategy), Counter())
            if answer.code not in (C.OK, C.NOT_FOUND, C.ALREADY_EXISTS) and \
                    answer.code is not REFUSED_BY_STATE.get(rpc):
                rejected[rpc, answer.code.name, answer.details] += 1

    run()
    assert not rejected, rejected


# ------------------------------------------------------------------ every documented limit


@dataclass(frozen=True)
class Limit:
    """One documented limit (docs/limits.md), tried with one request: the status it must get."""
    what: str
    rpc: str
    build: Callable[[dict[str, Any]], Message]
    expect: grpc.StatusCode
    field: str = ""  # what INVALID_ARGUMENT's details must name


Build = Callable[[dict[str, Any]], Message]
OK, INVALID, NOT_FOUND = C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND
T53 = 2**53
_made = iter(range(1, 1_000_000))


def get(what: str, cid: str, expect: grpc.StatusCode, field: str = "") -> Limit:
    return Limit(what, "GetCampaign", lambda w: pb.GetCampaignRequest(campaign_id=cid), expect, field)


def clm(what: str, expect: grpc.StatusCode, field: str = "", **fields: Any) -> Limit:
    """A Claim on fz-main with `fields` changed."""
    base = dict(campaign_id="fz-main", user_id="lim-user", request_id="lim-r")
    return Limit(what, "Claim", lambda w: pb.ClaimRequest(**{**base, **fields}), expect, field)


def batch(what: str, expect: grpc.StatusCode, field: str, items: list[pb.ClaimRequest]) -> Limit:
    return Limit(what, "ClaimBatch", lambda w: pb.ClaimBatchRequest(claims=items), expect, field)


def claims_of(n: int) -> list[pb.ClaimRequest]:
    return [pb.ClaimRequest(campaign_id="fz-main", user_id=f"b{i}", request_id="r") for i in range(n)]


def camp(what: str, expect: grpc.StatusCode, field: str = "", campaign_id: str = "", **fields: Any) -> Limit:
    """A CreateCampaign of a fresh campaign (inventory 10, 1 shard) with `fields` changed."""
    cid = campaign_id or f"lim-{next(_made)}"
    request = campaign(cid, **{"inventory": 10, "shards": 1, **fields})
    return Limit(what, "CreateCampaign", lambda w: request, expect, field)


def rsh(what: str, cid: str, shards: int, expect: grpc.StatusCode, field: str = "") -> Limit:
    return Limit(what, "Reshard", lambda w: pb.ReshardRequest(campaign_id=cid, shards=shards), expect, field)


def export(what: str, expect: grpc.StatusCode, field: str = "", cursor: str | None = None,
           limit: int = 0) -> Limit:
    def build(w: dict[str, Any]) -> pb.ExportEventsRequest:
        return pb.ExportEventsRequest(campaign_id="fz-main", cursor=w["cursor"] if cursor is None else cursor,
                                      limit=limit)
    return Limit(what, "ExportEvents", build, expect, field)


def cursor_of(raw: str) -> str:
    return "v1." + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def elig(what: str, expect: grpc.StatusCode, field: str, records: list[pb.EligibilityRecord]) -> Limit:
    return Limit(what, "UpdateEligibility",
                 lambda w: pb.UpdateEligibilityRequest(campaign_id="fz-elig", records=records), expect, field)


def rec(user: str, **fields: Any) -> pb.EligibilityRecord:
    return pb.EligibilityRecord(user_id=user, **fields)


def mer(what: str, expect: grpc.StatusCode, field: str = "", **fields: Any) -> Limit:
    base = dict(campaign_id="fz-main", merchant_id="lim-m", category="dining", region="r1")
    return Limit(what, "RegisterMerchant",
                 lambda w: pb.RegisterMerchantRequest(merchant=pb.Merchant(**{**base,
                                                                              **fields})), expect, field)


def rdm(what: str, expect: grpc.StatusCode, field: str = "", **fields: Any) -> Limit:
    """A Redeem by h5 of its fz-main voucher at m1, with `fields` changed."""
    def build(w: dict[str, Any]) -> pb.RedeemRequest:
        base: dict[str, Any] = dict(campaign_id="fz-main", user_id="h5", merchant_id="m1", order_id="lim-o",
                                    voucher_ids=[w["vouchers"]["fz-main", "h5"]], order_amount_cents=100)
        return pb.RedeemRequest(**{**base, **fields})
    return Limit(what, "Redeem", build, expect, field)


def stacked(cid: str, vouchers: list[str]) -> list[pb.StackedVouchers]:
    return [pb.StackedVouchers(campaign_id=cid, voucher_ids=vouchers)]


def wat(what: str, expect: grpc.StatusCode, field: str, ids: list[str]) -> Limit:
    return Limit(what, "WatchCampaigns", lambda w: pb.WatchCampaignsRequest(campaign_ids=ids), expect, field)


def many(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def rounds(*pairs: tuple[int, int]) -> list[pb.Round]:
    return [pb.Round(release_at_ms=t, amount=n) for t, n in pairs]


LIMIT_TABLE = [
    # ids: campaign_id [A-Za-z0-9][A-Za-z0-9._-]{0,63}
    get("campaign_id 64 chars", "c" * 64, NOT_FOUND),
    get("campaign_id 65 chars", "c" * 65, INVALID, "campaign_id"),
    get("campaign_id empty", "", INVALID, "campaign_id"),
    get("campaign_id first char '.'", ".c", INVALID, "campaign_id"),
    *[get(f"campaign_id with {c!r}", f"c{c}d", INVALID, "campaign_id") for c in "{}|,: \x00é"],
    # user_id, request_id [A-Za-z0-9._:@+=-]{1,128}
    clm("user_id 128 chars", OK, user_id="u" * 128),
    clm("user_id 129 chars", INVALID, "user_id", user_id="u" * 129),
    clm("user_id empty", INVALID, "user_id", user_id=""),
    *[clm(f"user_id with {c!r}", INVALID, "user_id", user_id=f"u{c}v") for c in "{}|, \x00\n用"],
    clm("request_id 128 chars", OK, request_id="r" * 128),
    clm("request_id 129 chars", INVALID, "request_id", request_id="r" * 129),
    clm("request_id empty", INVALID, "request_id", request_id=""),
    clm("request_id with '|'", INVALID, "request_id", request_id="r|s"),
    Limit("GetClaim request_id 129 chars", "GetClaim", lambda w: pb.GetClaimRequest(
        campaign_id="fz-main", user_id="h1", request_id="r" * 129), INVALID, "request_id"),
    Limit("GetClaim user_id empty", "GetClaim", lambda w: pb.GetClaimRequest(campaign_id="fz-main"), INVALID,
          "user_id"),
    # channel_id [A-Za-z0-9._-]{0,64}
    clm("channel_id 64 chars", OK, channel_id="c" * 64),
    clm("channel_id 65 chars", INVALID, "channel_id", channel_id="c" * 65),
    clm("channel_id with ':'", INVALID, "channel_id", channel_id="a:b"),
    # device_id 0..128 of [A-Za-z0-9._:@+=-]; client_ip an IPv4 or IPv6 address or empty (the proto)
    clm("device_id 128 chars", OK, device_id="d" * 128),
    clm("client_ip IPv4", OK, client_ip="192.0.2.1"),
    clm("client_ip IPv6", OK, client_ip="2001:db8::1"),
    clm("device_id 129 chars", INVALID, "device_id", device_id="d" * 129),
    clm("device_id with '|'", INVALID, "device_id", device_id="d|e"),
    clm("client_ip not an address", INVALID, "client_ip", client_ip="999.1.1.1"),
    clm("client_ip with a port", INVALID, "client_ip", client_ip="192.0.2.1:80"),
    # batch: 1 .. 1000 claims
    batch("batch of 0", INVALID, "claims", []),
    batch("batch of 1000", OK, "", claims_of(1000)),
    batch("batch of 1001", INVALID, "claims", claims_of(1001)),
    batch("batch with one bad item last", INVALID, "user_id", [
        *claims_of(1), pb.ClaimRequest(campaign_id="fz-main", user_id="b|2", request_id="r")]),
    # campaigns
    camp("inventory 0", INVALID, "inventory", inventory=0),
    camp("inventory -1", INVALID, "inventory", inventory=-1),
    camp("inventory 100,000,000", OK, inventory=100_000_000),
    camp("inventory 100,000,001", INVALID, "inventory", inventory=100_000_001),
    camp("inventory int64 max", INVALID, "inventory", inventory=2**63 - 1),
    camp("shards 1024", OK, inventory=2000, shards=1024),
    camp("shards 1025", INVALID, "shards", inventory=2000, shards=1025),
    camp("shards -1", INVALID, "shards", shards=-1),
    camp("shards above inventory", INVALID, "shards", inventory=3, shards=4),
    camp("per_user_limit 100", OK, per_user_limit=100),
    camp("per_user_limit 101", INVALID, "per_user_limit", per_user_limit=101),
    camp("per_user_limit -1", INVALID, "per_user_limit", per_user_limit=-1),
    camp("starts_at_ms -1", INVALID, "starts_at_ms", starts_at_ms=-1),
    camp("starts_at_ms 2^53", OK, starts_at_ms=T53),
    camp("starts_at_ms 2^53+1", INVALID, "starts_at_ms", starts_at_ms=T53 + 1),
    camp("ends_at_ms 2^53+1", INVALID, "ends_at_ms", ends_at_ms=T53 + 1),
    camp("ends_at_ms not after starts", INVALID, "ends_at_ms", starts_at_ms=2000, ends_at_ms=2000),
    camp("admission_rate 10,000,000", OK, admission_rate=10_000_000),
    camp("admission_rate 10,000,001", INVALID, "admission_rate", admission_rate=10_000_001),
    camp("admission_rate -1", INVALID, "admission_rate", admission_rate=-1),
    camp("admission_burst 10,000,001", INVALID, "admission_burst", admission_burst=10_000_001),
    camp("value_cents 10^12", OK, value_cents=10**12),
    camp("value_cents 10^12+1", INVALID, "value_cents", value_cents=10**12 + 1),
    camp("value_cents -1", INVALID, "value_cents", value_cents=-1),
    camp("min_spend_cents 10^12+1", INVALID, "min_spend_cents", min_spend_cents=10**12 + 1),
    camp("category 64 chars", OK, category="k" * 64),
    camp("category 65 chars", INVALID, "category", category="k" * 65),
    camp("category with ':'", INVALID, "category", category="a:b"),
    camp("name 200 chars", OK, name="n" * 200),
    camp("name 201 chars", INVALID, "name", name="n" * 201),
    camp("name with a newline", INVALID, "name", name="a\nb"),
    camp("valid_for_ms -1", INVALID, "valid_for_ms", valid_for_ms=-1),
    camp("valid_for_ms 2^53+1", INVALID, "valid_for_ms", valid_for_ms=T53 + 1),
    camp("max_vouchers_per_order 100", OK, max_vouchers_per_order=100),
    camp("max_vouchers_per_order 101", INVALID, "max_vouchers_per_order", max_vouchers_per_order=101),
    camp("max_vouchers_per_order -1", INVALID, "max_vouchers_per_order", max_vouchers_per_order=-1),
    camp("100 regions", OK, regions=many("r", 100)),
    camp("101 regions", INVALID, "regions", regions=many("r", 101)),
    camp("region 64 chars", OK, regions=["r" * 64]),
    camp("region 65 chars", INVALID, "region", regions=["r" * 65]),
    camp("region empty", INVALID, "region", regions=[""]),
    camp("101 resident_regions", INVALID, "resident_regions", resident_regions=many("r", 101)),
    camp("resident_region with ','", INVALID, "resident_regions", resident_regions=["a,b"]),
    camp("101 required_tags", INVALID, "required_tags", required_tags=many("t", 101)),
    camp("required_tag with '|'", INVALID, "required_tags", required_tags=["a|b"]),
    camp("100 rounds", OK, inventory=1000, rounds=rounds(*((T53 - 100 + i, 1) for i in range(100)))),
    camp("101 rounds", INVALID, "rounds", inventory=1000,
         rounds=rounds(*((T53 - 101 + i, 1) for i in range(101)))),
    camp("round release_at_ms 0", INVALID, "release_at_ms", rounds=rounds((0, 1))),
    camp("round amount 0", INVALID, "amount", rounds=rounds((5, 0))),
    camp("rounds out of order", INVALID, "rounds", rounds=rounds((T53, 1), (T53 - 1, 1))),
    camp("rounds hold all the stock", INVALID, "rounds", rounds=rounds((T53, 10))),
    camp("one_per_category without category", INVALID, "one_per_category", one_per_category=True),
    Limit("campaign missing", "CreateCampaign", lambda w: pb.CreateCampaignRequest(), INVALID, "campaign"),
    camp("campaign id reused with another config", C.ALREADY_EXISTS, campaign_id="fz-elig"),
    # reshard: 1 .. 1024 shards, at most the inventory
    rsh("reshard to 0", "fz-elig", 0, INVALID, "shards"),
    rsh("reshard to 1025", "fz-main", 1025, INVALID, "shards"),
    rsh("reshard above inventory", "fz-elig", 1001, INVALID, "shards"),
    rsh("reshard unknown campaign", "nx", 2, NOT_FOUND),
    # export: limit 1 .. 10,000 (0 = 1,000); a cursor ExportEvents made
    export("export limit 10,000", OK, limit=10_000),
    export("export limit 10,001", INVALID, "limit", limit=10_001),
    export("export limit -1", INVALID, "limit", limit=-1),
    export("export a real cursor", OK),
    export("export cursor garbage", INVALID, "cursor", cursor="garbage"),
    export("export cursor not base64", INVALID, "cursor", cursor="v1.{|}"),
    export("export cursor a JSON list", INVALID, "cursor", cursor=cursor_of("[1]")),
    # forged cursors fuzzing found: once INTERNAL (RecursionError) or UNAVAILABLE ("redis refused")
    export("export cursor nested 5000 deep", INVALID, "cursor", cursor=cursor_of("[" * 5000 + "]" * 5000)),
    export("export cursor position with a space", INVALID, "cursor", cursor=cursor_of('{"0":"1 -2"}')),
    export("export cursor position beyond 64 bits", INVALID, "cursor",
           cursor=cursor_of('{"0":"99999999999999999999999-0"}')),
    export("export cursor position in other digits", INVALID, "cursor",
           cursor=cursor_of('{"0":"\\u0661-2"}')),
    export("export cursor at the last stream id", INVALID, "cursor",
           cursor=cursor_of('{"0":"18446744073709551615-18446744073709551615"}')),
    # eligibility: 1 .. 10,000 records, one per user; 0 .. 100 tags; region and tags like regions
    elig("0 records", INVALID, "records", []),
    elig("10,000 records", OK, "", [rec(f"e{i}") for i in range(10_000)]),
    elig("10,001 records", INVALID, "records", [rec(f"e{i}") for i in range(10_001)]),
    elig("a user twice", INVALID, "user_id", [rec("e1"), rec("e1")]),
    elig("record user_id empty", INVALID, "user_id", [rec("")]),
    elig("100 tags", OK, "", [rec("e1", tags=many("t", 100))]),
    elig("101 tags", INVALID, "tags", [rec("e1", tags=many("t", 101))]),
    elig("tag with ','", INVALID, "tag", [rec("e1", tags=["a,b"])]),
    elig("record region with '|'", INVALID, "region", [rec("e1", region="a|b")]),
    # merchants: merchant_id like user_id; name up to 200 printable, no '|'; category and region checked
    mer("merchant_id 128 chars", OK, merchant_id="m" * 128),
    mer("merchant_id 129 chars", INVALID, "merchant_id", merchant_id="m" * 129),
    mer("merchant name 200 chars", OK, name="n" * 200),
    mer("merchant name 201 chars", INVALID, "name", name="n" * 201),
    mer("merchant name with '|'", INVALID, "name", name="a|b"),
    mer("merchant of another category", INVALID, "category", category="hotel"),
    mer("merchant of another region", INVALID, "region", region="r9"),
    mer("merchant unknown campaign", NOT_FOUND, campaign_id="nx"),
    # redemption
    rdm("0 voucher_ids", INVALID, "voucher_ids", voucher_ids=[]),
    rdm("101 voucher_ids", INVALID, "voucher_ids", voucher_ids=many("v", 101)),
    rdm("voucher_id 100 chars", OK, voucher_ids=["v" * 100]),
    rdm("voucher_id 101 chars", INVALID, "voucher_id", voucher_ids=["v" * 101]),
    rdm("voucher_id with ':'", INVALID, "voucher_id", voucher_ids=["v:1"]),
    rdm("a voucher twice", INVALID, "voucher_ids", voucher_ids=["v1", "v1"]),
    rdm("order_amount_cents -1", INVALID, "order_amount_cents", order_amount_cents=-1),
    rdm("order_amount_cents 10^12", OK, order_amount_cents=10**12, order_id="lim-o2"),
    rdm("order_amount_cents 10^12+1", INVALID, "order_amount_cents", order_amount_cents=10**12 + 1),
    rdm("order_id 129 chars", INVALID, "order_id", order_id="o" * 129),
    rdm("100 sn_codes", OK, sn_codes=many("sn", 100), order_id="lim-o3"),
    rdm("101 sn_codes", INVALID, "sn_codes", sn_codes=many("sn", 101)),
    rdm("sn_code 65 chars", INVALID, "sn_code", sn_codes=["s" * 65]),
    rdm("sn_code with ':'", INVALID, "sn_code", sn_codes=["a:b"]),
    rdm("redeem channel_id with ' '", INVALID, "channel_id", channel_id="a b"),
    rdm("stacked: 0 voucher_ids", INVALID, "voucher_ids", stacked=stacked("fz-stack", [])),
    rdm("stacked: 101 voucher_ids", INVALID, "voucher_ids",
        stacked=stacked("fz-stack", many("v", 101))),
    rdm("stacked: bad campaign_id", INVALID, "campaign_id", stacked=stacked("a{b}", ["v1"])),
    rdm("stacked: unknown campaign", NOT_FOUND, stacked=stacked("nx", ["v1"])),
    rdm("stacked: the order's own campaign again", INVALID, "campaign_id",
        stacked=stacked("fz-main", ["v9"])),
    Limit("Reverse order_id empty", "Reverse",
          lambda w: pb.ReverseRequest(campaign_id="fz-main", user_id="h1"), INVALID, "order_id"),
    Limit("Release voucher_id 101 chars", "Release", lambda w: pb.ReleaseRequest(
        campaign_id="fz-main", user_id="h1", voucher_id="v" * 101), INVALID, "voucher_id"),
    Limit("Release user_id empty", "Release",
          lambda w: pb.ReleaseRequest(campaign_id="fz-main", voucher_id="v1"), INVALID, "user_id"),
    # watches: 1 .. 100 campaign ids (one given twice is watched once), each known
    wat("watch 0 campaign_ids", INVALID, "campaign_ids", []),
    wat("watch 100 campaign_ids", OK, "", ["fz-main"] * 99 + ["fz-stack"]),
    wat("watch 101 campaign_ids", INVALID, "campaign_ids", ["fz-main"] * 101),
    wat("watch a bad campaign_id", INVALID, "campaign_ids", ["fz-main", "a{b}"]),
    wat("watch an unknown campaign", NOT_FOUND, "", ["fz-main", "nx"]),
]


@pytest.mark.parametrize("limit", LIMIT_TABLE, ids=lambda lim: lim.what)
def test_documented_limit_is_enforced(limit, fuzz_channel, fuzz_redis_client, fuzz_node, world, report_stats):
    request = limit.build(world)
    answer = exercise(fuzz_channel, fuzz_redis_client, fuzz_node, limit.rpc, request, report_stats)
    assert answer.code == limit.expect, f"{limit.what}: {answer.code.name} {answer.details}"
    if limit.field:
        assert re.search(rf"(?<![A-Za-z0-9_]){re.escape(limit.field)}", answer.details), (
            f"{limit.what}: {answer.details!r} does not name {limit.field}")
