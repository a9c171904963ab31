"""Prometheus metrics of a real node (docs/metrics.md): what /metrics says matches what the replies said.

The standard gRPC server families count the same calls as claimcore's own; under serve --workers the
process families add up the workers (checked here without processes, on given scrapes)."""

from __future__ import annotations

import urllib.request
import uuid
from collections import Counter

import grpc
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from claimcore import __version__
from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.node.metrics import NodeMetrics, WorkersMetrics
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from conftest import LocalNode, create_campaign
from support import metrics_port, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a series went up between two scrapes (absent counts as 0)."""
    return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}



@pytest.fixture(scope="module")
def metered(redis_server, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A node serving /metrics, with a per-user limit of 2 claims then one per 10 s, and a deny list."""
    deny = tmp_path_factory.mktemp("deny") / "deny.txt"
    deny.write_text("user:scalper-1\n")
    port = free_port()
    node = LocalNode(redis_server.url, "--metrics-port", str(port), "--user-rate", "0.1",
                     "--user-burst", "2", "--deny-file", str(deny)).start()
    node.metrics_port = port  # type: ignore[attr-defined]
    yield node
    node.stop()


@pytest.fixture
def stubs(metered):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(metered.address) as ch:
        yield (pb_grpc.ClaimServiceStub(ch), pb_grpc.AdminServiceStub(ch), pb_grpc.RedeemServiceStub(ch),
               ch.unary_unary("/claimcore.v1.ClaimService/Claim"))


def outcome_name(outcome: int) -> str:
    return short_name(pb.Outcome, outcome).lower()


def test_a_burst_is_counted_as_the_replies_said(metered, stubs):
    claims, admin, _, raw_claim = stubs
    before = scrape(metered.metrics_port)
    token = uuid.uuid4().hex[:10]  # in every user id: no label value may contain it
    cid = create_campaign(admin, inventory=20, shards=4).campaign.campaign_id
    tally: Counter[tuple[str, str]] = Counter()
    unary_calls = batch_calls = 0

    # 30 users at once through Claim, 10 more in one ClaimBatch: 20 granted, the rest sold out.
    futures = [claims.Claim.future(pb.ClaimRequest(campaign_id=cid, user_id=f"user-{token}-{i}",
                                                   request_id="r1"), timeout=10) for i in range(30)]
    for f in futures:
        tally[cid, outcome_name(f.result().outcome)] += 1
    unary_calls += 30
    batch = claims.ClaimBatch(pb.ClaimBatchRequest(claims=[
        pb.ClaimRequest(campaign_id=cid, user_id=f"user-{token}-{i}", request_id="r1")
        for i in range(30, 40)]), timeout=10)
    batch_calls += 1
    for reply in batch.replies:
        tally[cid, outcome_name(reply.outcome)] += 1
    # One user again: a second claim is within the user rate's burst of 2, the third is not.
    first = f"user-{token}-0"
    for rid in ("r2", "r3"):
        reply = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=first, request_id=rid), timeout=10)
        tally[cid, outcome_name(reply.outcome)] += 1
        unary_calls += 1
    assert reply.outcome == pb.OUTCOME_RATE_LIMITED and reply.detail == "user rate"
    denied = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="scalper-1", request_id="r"), timeout=10)
    assert denied.outcome == pb.OUTCOME_NOT_ELIGIBLE and denied.detail == "user denied"
    tally[cid, "not_eligible"] += 1
    unary_calls += 1
    assert tally[cid, "granted"] == 20 and tally[cid, "sold_out"] >= 19 and tally[cid, "rate_limited"] == 1

    # A campaign admitting 2 claims/s: a quick burst of 10 is mostly refused by its token bucket.
    slow = create_campaign(admin, inventory=100, shards=1, admission_rate=2).campaign.campaign_id
    admission_refused = 0
    for i in range(10):
        reply = claims.Claim(pb.ClaimRequest(campaign_id=slow, user_id=f"slow-{token}-{i}", request_id="r"),
                             timeout=10)
        tally[slow, outcome_name(reply.outcome)] += 1
        admission_refused += reply.detail == "admission rate exceeded"
        unary_calls += 1
    assert admission_refused >= 5

    # Bad requests: invalid ids, bytes that are no ClaimRequest, an unknown campaign, an empty batch.
    failures: Counter[tuple[str, str]] = Counter()
    for request in (pb.ClaimRequest(campaign_id=cid, user_id="bad user!", request_id="r"),
                    pb.ClaimRequest(campaign_id=cid, user_id=f"user-{token}-x", request_id="")):
        with pytest.raises(grpc.RpcError) as err:
            claims.Claim(request, timeout=10)
        failures["Claim", err.value.code().name] += 1
        unary_calls += 1
    with pytest.raises(grpc.RpcError) as err:
        raw_claim(b"\xff\xff\xff", timeout=10)
    failures["Claim", err.value.code().name] += 1
    unary_calls += 1
    with pytest.raises(grpc.RpcError) as err:
        claims.Claim(pb.ClaimRequest(campaign_id=f"nope-{token}", user_id=first, request_id="r"), timeout=10)
    failures["Claim", err.value.code().name] += 1
    unary_calls += 1
    with pytest.raises(grpc.RpcError) as err:
        claims.ClaimBatch(pb.ClaimBatchRequest(), timeout=10)
    failures["ClaimBatch", err.value.code().name] += 1
    batch_calls += 1
    assert failures == {("Claim", "INVALID_ARGUMENT"): 3, ("Claim", "NOT_FOUND"): 1,
                        ("ClaimBatch", "INVALID_ARGUMENT"): 1}

    # The gauges are sampled every second: wait for the campaign's stock to show empty.
    def sold_out_seen() -> Samples | None:
        samples = scrape(metered.metrics_port)
        stock = {labels: v for labels, v in series(samples, "claimcore_stock_remaining_vouchers").items()
                 if ("campaign", cid) in labels}
        return samples if len(stock) == 4 and not any(stock.values()) else None

    assert wait_for(lambda: sold_out_seen() is not None)
    after = sold_out_seen()
    assert after is not None

    counted = {(dict(labels)["campaign"], dict(labels)["outcome"]): v
               for labels, v in series(after, "claimcore_claims_total").items()
               if dict(labels)["campaign"] in (cid, slow)}
    assert counted == dict(tally)
    assert value(after, "claimcore_admission_drops_total", campaign=slow, reason="admission_rate") \
        == admission_refused
    assert value(after, "claimcore_admission_drops_total", campaign=cid, reason="abuse") == 2
    assert value(after, "claimcore_admission_drops_total", campaign=cid, reason="admission_rate") is None
    for (method, code), n in failures.items():
        assert grew(before, after, "claimcore_rpc_errors_total", method=method, code=code) == n
    for method, n in (("Claim", unary_calls), ("ClaimBatch", batch_calls)):
        assert grew(before, after, "claimcore_claim_seconds_count", method=method) == n
        assert value(after, "claimcore_claim_seconds_bucket", method=method, le="+Inf") \
            == value(after, "claimcore_claim_seconds_count", method=method)

    # The standard gRPC families count the same calls, OK ones included, with Go's code names.
    for method, calls in (("Claim", unary_calls), ("ClaimBatch", batch_calls)):
        rpc = {"grpc_type": "unary", "grpc_service": "claimcore.v1.ClaimService", "grpc_method": method}
        failed = sum(n for (m, _), n in failures.items() if m == method)
        assert grew(before, after, "grpc_server_started_total", **rpc) == calls
        assert grew(before, after, "grpc_server_handled_total", grpc_code="OK", **rpc) == calls - failed
        assert grew(before, after, "grpc_server_handling_seconds_count", **rpc) == calls
        assert value(after, "grpc_server_handling_seconds_bucket", le="+Inf", **rpc) \
            == value(after, "grpc_server_handling_seconds_count", **rpc)
    claim_rpc = {"grpc_type": "unary", "grpc_service": "claimcore.v1.ClaimService", "grpc_method": "Claim"}
    assert grew(before, after, "grpc_server_handled_total", grpc_code="InvalidArgument", **claim_rpc) == 3
    assert grew(before, after, "grpc_server_handled_total", grpc_code="NotFound", **claim_rpc) == 1
    create = {"grpc_type": "unary", "grpc_service": "claimcore.v1.AdminService",
              "grpc_method": "CreateCampaign"}
    assert grew(before, after, "grpc_server_handled_total", grpc_code="OK", **create) == 2

    assert value(after, "claimcore_granted_vouchers", campaign=cid) == 20
    assert value(after, "claimcore_sold_out_seconds", campaign=cid) is not None
    assert value(after, "claimcore_sold_out_seconds", campaign=slow) is None  # not sold out: absent
    # Every claim that reached Redis went in some claim.lua call: at least the 20 granted, plus the
    # admitted claims of the slow campaign.
    sent = grew(before, after, "claimcore_redis_batch_size_claims_sum")
    calls = grew(before, after, "claimcore_redis_batch_size_claims_count")
    trips = grew(before, after, "claimcore_redis_round_trips_total")
    assert sent >= 20 + (10 - admission_refused) and 0 < calls <= sent and 0 < trips <= calls
    assert value(after, "claimcore_redis_up") == 1
    assert value(after, "claimcore_info", version=__version__) == 1

    label_values = {v for _, labels in after for _, v in labels}
    assert not [v for v in label_values if token in v]  # no user id, nor the unknown campaign id


def test_redemptions_are_counted_by_outcome(metered, stubs):
    claims, admin, redeem, _ = stubs
    cid = create_campaign(admin, inventory=10, shards=2, value_cents=1000).campaign.campaign_id
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1")), timeout=10)
    voucher = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="buyer", request_id="r"),
                           timeout=10).voucher.voucher_id
    outcomes = Counter()
    for order in ("o1", "o1", "o2"):  # done, replayed, the voucher already used by o1
        reply = redeem.Redeem(pb.RedeemRequest(campaign_id=cid, user_id="buyer", voucher_ids=[voucher],
                                               merchant_id="m1", order_id=order, order_amount_cents=5000),
                              timeout=10)
        outcomes[short_name(pb.RedeemOutcome, reply.outcome).lower()] += 1
    assert outcomes == {"redeemed": 2, "already_redeemed": 1}
    samples = scrape(metered.metrics_port)
    counted = {dict(labels)["outcome"]: v
               for labels, v in series(samples, "claimcore_redemptions_total").items()
               if ("campaign", cid) in labels}
    assert counted == outcomes


def test_campaign_labels_stop_at_the_cap():
    """Past max_campaigns distinct campaigns, every new one is counted as "other"."""
    metrics = NodeMetrics(max_campaigns=2)
    for cid in ("a", "b", "c", "d", "a"):
        metrics.claimed(cid, pb.OUTCOME_GRANTED)
    metrics.dropped("e", "abuse")
    text = "\n".join(f"{s.name}{s.labels}={s.value}" for family in metrics.registry.collect()
                     for s in family.samples if s.name in ("claimcore_claims_total",
                                                          "claimcore_admission_drops_total"))
    assert "'campaign': 'a'" in text and "'campaign': 'b'" in text
    assert "'c'" not in text and "'d'" not in text and "'e'" not in text
    granted = pb.OUTCOME_GRANTED
    assert metrics.claims == {("a", granted): 2, ("b", granted): 1, ("other", granted): 2}
    assert metrics.drops == {("other", "abuse"): 1}


def test_metrics_are_off_by_default(node):
    assert "metrics on" not in node.log_tail()


@pytest.fixture
def own_redis():  # type: ignore[no-untyped-def]
    server = EmbeddedRedis().start()
    yield server
    server.cleanup()


def test_shedding_and_redis_down_show_in_the_metrics(own_redis):
    """A stalled Redis: the node sheds past --max-queued, each shed counted as an "overloaded" drop and a
    RESOURCE_EXHAUSTED error; Redis gone: redis_up drops to 0. --metrics-port 0 prints the port it took."""
    node = LocalNode(own_redis.url, "--max-queued", "20", "--metrics-port", "0").start()
    direct = redis.Redis(port=own_redis.port)
    try:
        port = metrics_port(node)
        assert value(scrape(port), "claimcore_redis_up") == 1
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=500, shards=2).campaign.campaign_id
            direct.execute_command("CLIENT", "PAUSE", 1200, "WRITE")
            calls = [claims.Claim.future(pb.ClaimRequest(campaign_id=cid, user_id=f"u{i}", request_id="r"),
                                         timeout=5) for i in range(200)]
            shed = 0
            for call in calls:
                try:
                    call.result()
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
                    shed += 1
            assert shed >= 100
            samples = scrape(port)
            assert value(samples, "claimcore_admission_drops_total", campaign=cid,
                         reason="overloaded") == shed
            assert value(samples, "claimcore_rpc_errors_total", method="Claim",
                         code="RESOURCE_EXHAUSTED") == shed
            assert value(samples, "grpc_server_handled_total", grpc_type="unary", grpc_method="Claim",
                         grpc_service="claimcore.v1.ClaimService", grpc_code="ResourceExhausted") == shed
            assert value(samples, "claimcore_claims_total", campaign=cid, outcome="granted") == 200 - shed
        own_redis.kill()
        assert wait_for(lambda: value(scrape(port), "claimcore_redis_up") == 0)
    finally:
        direct.close()
        node.stop()


WORKER_SCRAPES = {
    "w0": "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2.5\n"
          "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1e8\n"
          "# TYPE process_open_fds gauge\nprocess_open_fds 10\n"
          "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 2000\n"
          '# TYPE claimcore_claims_total counter\nclaimcore_claims_total{campaign="c",outcome="granted"} 3\n',
    "w1": "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
          "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 2e8\n"
          "# TYPE process_open_fds gauge\nprocess_open_fds 20\n"
          "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 2100\n"
          '# TYPE claimcore_claims_total counter\nclaimcore_claims_total{campaign="c",outcome="granted"} 4\n',
}


class GivenWorkers(WorkersMetrics):
    """serve --workers's merged /metrics, fed the workers' scrapes above instead of fetching them."""

    def scrape(self, url: str):  # type: ignore[no-untyped-def]
        return list(text_string_to_metric_families(WORKER_SCRAPES[url]))


def test_workers_process_families_add_up_and_show_each_worker():
    merged = GivenWorkers([(101, "w0"), (102, "w1")])
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in merged.registry.collect() for s in f.samples}
    # The node's figures are the workers' summed (the parent, this test's process, is left out).
    assert samples["process_cpu_seconds_total", frozenset()] == 4.0
    assert samples["process_resident_memory_bytes", frozenset()] == 3e8  # not the largest worker's
    assert samples["process_open_fds", frozenset()] == 30
    assert samples["process_start_time_seconds", frozenset()] == 2000  # the earliest worker
    # Each worker on its own, with a worker label; claims summed in the merged family.
    assert {k[1]: v for k, v in samples.items() if k[0] == "claimcore_worker_cpu_seconds_total"} \
        == {frozenset({("worker", "0")}): 2.5, frozenset({("worker", "1")}): 1.5}
    assert {k[1]: v for k, v in samples.items() if k[0] == "claimcore_worker_resident_memory_bytes"} \
        == {frozenset({("worker", "0")}): 1e8, frozenset({("worker", "1")}): 2e8}
    assert samples["claimcore_claims_total", frozenset({("campaign", "c"), ("outcome", "granted")})] == 7
