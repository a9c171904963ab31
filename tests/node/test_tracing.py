"""OpenTelemetry tracing of a real node (`serve --trace-file`, docs/metrics.md "Tracing"): claim spans
continue the caller's trace, the Redis flush span links the claims it served, no user id is written."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from typing import Any

import grpc

from claimcore.harness.local_node import PACKAGE_ROOT
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign


def read_spans(path: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_claim_spans_continue_the_callers_trace_and_the_flush_links_them(redis_server, tmp_path):
    trace_file = tmp_path / "spans.jsonl"
    token = uuid.uuid4().hex[:12]  # in every user id: it must appear nowhere in the file
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    node = LocalNode(redis_server.url, "--trace-file", str(trace_file), "--linger-ms", "20").start()
    try:
        with grpc.insecure_channel(node.address) as ch:
            claims, admin = pb_grpc.ClaimServiceStub(ch), pb_grpc.AdminServiceStub(ch)
            cid = create_campaign(admin, inventory=5, shards=2).campaign.campaign_id
            traced = claims.Claim.future(
                pb.ClaimRequest(campaign_id=cid, user_id=f"user-{token}-0", request_id="r1"), timeout=10,
                metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")])
            others = [claims.Claim.future(pb.ClaimRequest(campaign_id=cid, user_id=f"user-{token}-{i}",
                                                          request_id="r1"), timeout=10) for i in range(1, 4)]
            assert traced.result().outcome == pb.OUTCOME_GRANTED
            assert all(f.result().outcome == pb.OUTCOME_GRANTED for f in others)
            batch = claims.ClaimBatch(pb.ClaimBatchRequest(claims=[
                pb.ClaimRequest(campaign_id=cid, user_id=f"user-{token}-{i}", request_id="r1")
                for i in range(4, 8)]), timeout=10)
            assert [r.outcome for r in batch.replies].count(pb.OUTCOME_GRANTED) == 1  # 5 in stock, 4 taken
    finally:
        assert node.stop() == 0  # SIGTERM: the node flushes its buffered spans as it stops

    text = trace_file.read_text()
    assert token not in text and "user-" not in text
    spans = read_spans(trace_file)
    by_id = {s["span_id"]: s for s in spans}

    mine = [s for s in spans if s["name"] == "claimcore.Claim" and s["trace_id"] == trace_id]
    assert len(mine) == 1, spans
    claim = mine[0]
    assert claim["parent_id"] == parent_id and claim["kind"] == "SERVER" and claim["status"] == "UNSET"
    assert claim["attributes"]["claimcore.campaign"] == cid
    assert claim["attributes"]["claimcore.outcome"] == "granted"
    assert claim["attributes"]["rpc.grpc.status"] == "OK"
    assert claim["start_ns"] <= claim["end_ns"]
    # The other claims had no traceparent: each is the root of a trace of its own.
    roots = [s for s in spans if s["name"] == "claimcore.Claim" and s is not claim]
    assert len(roots) == 3 and all(s["parent_id"] is None for s in roots)
    assert len({s["trace_id"] for s in roots} | {trace_id}) == 4

    flushes = [s for s in spans if s["name"] == "redis.claim_flush"]
    assert flushes and all(f["parent_id"] is None and f["kind"] == "CLIENT" for f in flushes)
    served = [f for f in flushes if {"trace_id": trace_id, "span_id": claim["span_id"]} in f["links"]]
    assert len(served) == 1, flushes
    flush = served[0]
    assert flush["trace_id"] != trace_id  # linked, not a child: it serves many traces
    assert flush["attributes"]["claimcore.store.campaign_cache"] == [cid]
    assert flush["attributes"]["claimcore.claims"] >= len(flush["links"]) >= 1
    assert 1 <= flush["attributes"]["claimcore.shards"] <= 2
    # Every link names a claim call span of this file, and every claim that reached Redis is linked.
    linked = {link["span_id"] for f in flushes for link in f["links"]}
    assert all(by_id[s]["name"] in ("claimcore.Claim", "claimcore.ClaimBatch") for s in linked)
    assert sum(f["attributes"]["claimcore.claims"] for f in flushes) >= 8
    assert {s["span_id"] for s in roots} <= linked

    (batch_span,) = [s for s in spans if s["name"] == "claimcore.ClaimBatch"]
    assert batch_span["span_id"] in linked
    assert batch_span["attributes"]["claimcore.claims"] == 4
    assert batch_span["attributes"]["claimcore.store.campaign_cache"] == [cid]
    assert batch_span["attributes"]["claimcore.outcomes.granted"] == 1
    assert batch_span["attributes"]["claimcore.outcomes.sold_out"] == 3


def test_the_env_variable_turns_tracing_on_and_errors_are_marked(redis_server, tmp_path, monkeypatch):
    trace_file = tmp_path / "env-spans.jsonl"
    monkeypatch.setenv("CLAIMCORE_TRACE_FILE", str(trace_file))
    node = LocalNode(redis_server.url).start()
    try:
        with grpc.insecure_channel(node.address) as ch:
            try:
                pb_grpc.ClaimServiceStub(ch).Claim(pb.ClaimRequest(
                    campaign_id="no-such-campaign", user_id="u1", request_id="r1"), timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
            else:
                raise AssertionError("a claim on no campaign succeeded")
    finally:
        assert node.stop() == 0
    (span,) = [s for s in read_spans(trace_file) if s["name"] == "claimcore.Claim"]
    assert span["status"] == "ERROR" and span["attributes"]["rpc.grpc.status"] == "NOT_FOUND"
    assert span["attributes"]["claimcore.campaign"] == "no-such-campaign"
    assert "claimcore.outcome" not in span["attributes"]


# Run as if opentelemetry were not installed (redis-py itself imports it when it is there).
WITHOUT_OTEL = """
import sys
class NoOtel:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoOtel())
"""


def without_otel(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    env.pop("CLAIMCORE_TRACE_FILE", None)
    return subprocess.run([sys.executable, "-c", WITHOUT_OTEL + code, *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_node_runs_without_opentelemetry_unless_tracing_is_asked_for(redis_server, tmp_path):
    out = without_otel("from claimcore.node.server import Node, NodeOptions\n"
                       "from claimcore.node import tracing\n"
                       "Node(NodeOptions(redis_url='redis://127.0.0.1:1'))\n"
                       "assert not tracing.enabled\n"
                       "try:\n    tracing.setup(sys.argv[1])\n"
                       "except tracing.TracingUnavailable as exc:\n    print(exc)\n", str(tmp_path / "x"))
    assert out.returncode == 0, out.stderr
    assert "claimcore[tracing]" in out.stdout
    # `serve --trace-file` without it: a clear message and exit 1, not a traceback.
    out = without_otel("from claimcore.ops.cli import main\nsys.exit(main())", "serve", "--redis",
                       redis_server.url, "--port", "0", "--plaintext", "--no-auth",
                       "--trace-file", str(tmp_path / "y"))
    assert out.returncode == 1 and "pip install 'claimcore[tracing]'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
