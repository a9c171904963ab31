"""`claimcore serve --workers N` (node/workers.py): real worker processes sharing one port and one Redis.

Claims over several connections reach both workers and never oversell, health answers for the node,
/metrics is the sum over the workers, SIGTERM drains them all, a dead worker stops the node, and bad
values are one CLI line.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter

import grpc
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from claimcore.client.claims import ClaimClient
from claimcore.harness.embedded_redis import free_port
from claimcore.harness.local_node import PACKAGE_ROOT
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign, health_status

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PIDS = re.compile(r"claimcore: (\d+) workers, pids ([\d ]+)")


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def per_worker(samples: Samples, name: str = "claimcore_worker_claims_total") -> dict[str, float]:
    return {dict(labels)["worker"]: v for (n, labels), v in samples.items() if n == name}


def worker_pids(node: LocalNode, timeout: float = 20.0) -> list[int]:
    """The pids the parent printed once every worker listened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = PIDS.search(node.log_tail())
        if found:
            return [int(p) for p in found.group(2).split()]
        time.sleep(0.05)
    raise AssertionError(f"no workers line:\n{node.log_tail()}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; /proc says so.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def workers():  # type: ignore[no-untyped-def]
    """`serve --workers 2` with its own embedded redis-server and merged /metrics."""
    port = free_port()
    node = LocalNode("", "--ephemeral", "--workers", "2", "--metrics-port", str(port),
                     "--recycle-every-s", "0").start()
    node.metrics_port = port  # type: ignore[attr-defined]
    node.pids = worker_pids(node)  # type: ignore[attr-defined]
    yield node
    node.stop()


def test_claims_over_several_connections_reach_both_workers_and_never_oversell(workers):
    with grpc.insecure_channel(workers.address) as ch:
        cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=50, shards=4).campaign.campaign_id
    before = scrape(workers.metrics_port)
    token = uuid.uuid4().hex[:8]

    async def burst() -> Counter[int]:
        # 16 connections: the kernel gives each to one worker; all 16 on one worker has odds 2^-15.
        # 60 ClaimBatch calls of 5 go round robin over them (claim() would coalesce into a few calls).
        async with ClaimClient([workers.address], connections_per_node=16, deadline_s=20) as client:
            batches = await asyncio.gather(*(client.claim_batch([
                pb.ClaimRequest(campaign_id=cid, user_id=f"u-{token}-{b}-{i}", request_id="r")
                for i in range(5)]) for b in range(60)))
        return Counter(r.outcome for batch in batches for r in batch.replies)

    outcomes = asyncio.run(burst())
    # exactly the stock, across workers
    assert outcomes[pb.OUTCOME_GRANTED] == 50 and outcomes[pb.OUTCOME_SOLD_OUT] == 250

    after = scrape(workers.metrics_port)
    spread = {w: n - per_worker(before).get(w, 0) for w, n in per_worker(after).items()}
    assert set(spread) == {"0", "1"} and all(n > 0 for n in spread.values()), spread
    assert sum(spread.values()) == 300
    # The merged family is the sum over the workers: 50 grants although each worker made only some.
    granted = after.get(("claimcore_claims_total", frozenset({("campaign", cid), ("outcome", "granted")})))
    assert granted == 50
    info = {dict(labels)["worker"]: dict(labels)["pid"]
            for (n, labels), _ in after.items() if n == "claimcore_worker_info"}
    assert info == {"0": str(workers.pids[0]), "1": str(workers.pids[1])}
    assert after[("claimcore_redis_up", frozenset())] == 1


def test_health_answers_serving_whichever_worker_takes_the_connection(workers):
    # A fresh channel per probe is a fresh connection: the kernel picks the worker each time.
    assert {health_status(workers.address) for _ in range(8)} == {1}  # SERVING


def test_sigterm_drains_every_worker_and_stops_the_embedded_redis():
    node = LocalNode("", "--ephemeral", "--workers", "2").start()
    pids = worker_pids(node)
    redis_url = re.search(r"redis-server at (redis://\S+)", node.log_tail()).group(1)
    assert node.stop(signal.SIGTERM) == 0
    assert not any(alive(p) for p in pids)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()


def test_a_worker_that_dies_stops_the_node_with_one_line():
    node = LocalNode("", "--ephemeral", "--workers", "2").start()
    pids = worker_pids(node)
    os.kill(pids[1], signal.SIGKILL)
    assert node.proc is not None
    assert node.proc.wait(timeout=30) == 1
    assert f"worker 1 (pid {pids[1]}) exited with code -9; stopped the other workers" in node.log_tail()
    assert not alive(pids[0])
    node.stop()


def test_a_port_already_served_is_refused_not_shared(workers):
    # SO_REUSEPORT would let a second node join the first one's port silently: the parent checks first.
    proc = subprocess.run(
        [sys.executable, "-m", "claimcore", "serve", "--workers", "2", "--no-auth", "--plaintext",
         "--redis", "redis://127.0.0.1:1/0", "--port", str(workers.port)],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": PACKAGE_ROOT})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"claimcore serve: cannot listen on 127.0.0.1:{workers.port}: Address already in use"]


@pytest.mark.parametrize("bad", ["0", "x", "-2"])
def test_a_bad_workers_value_is_one_usage_line(bad, capsys):
    from claimcore.ops.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["serve", "--workers", bad, "--no-auth", "--plaintext"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers" in err[0] and "a number >= 1 or auto" in err[0], err


def test_workers_auto_is_one_per_core():
    from claimcore.ops.serve_cmd import workers_count

    assert workers_count("auto") == len(os.sched_getaffinity(0)) >= 1
    assert workers_count("3") == 3


def test_a_free_port_is_checked_alone(workers):
    from claimcore.node.workers import claim_port

    with pytest.raises(OSError, match="cannot listen"):
        claim_port("127.0.0.1", workers.port)
    with socket.socket() as s:  # port 0: a free port, free for the workers to take
        picked = claim_port("127.0.0.1", 0)
        s.bind(("127.0.0.1", picked))


def test_merging_sums_counters_and_histograms_and_keeps_the_latest_gauges():
    from claimcore.node.metrics import merge_families

    def parse(text: str) -> list:  # type: ignore[type-arg]
        return list(text_string_to_metric_families(text))

    a = parse('# TYPE claimcore_claims counter\nclaimcore_claims_total{campaign="c",outcome="granted"} 3\n'
              '# TYPE claimcore_claim_seconds histogram\nclaimcore_claim_seconds_bucket{le="0.1"} 2\n'
              'claimcore_claim_seconds_bucket{le="+Inf"} 3\nclaimcore_claim_seconds_count 3\n'
              'claimcore_claim_seconds_sum 0.5\n# TYPE claimcore_stock_remaining_vouchers gauge\n'
              'claimcore_stock_remaining_vouchers{campaign="c",shard="0"} 7\n'
              '# TYPE claimcore_granted_vouchers gauge\nclaimcore_granted_vouchers{campaign="c"} 3\n'
              '# TYPE claimcore_redis_up gauge\nclaimcore_redis_up 1\n')
    b = parse('# TYPE claimcore_claims counter\nclaimcore_claims_total{campaign="c",outcome="granted"} 4\n'
              'claimcore_claims_total{campaign="c",outcome="sold_out"} 1\n'
              '# TYPE claimcore_claim_seconds histogram\nclaimcore_claim_seconds_bucket{le="0.1"} 1\n'
              'claimcore_claim_seconds_bucket{le="+Inf"} 5\nclaimcore_claim_seconds_count 5\n'
              'claimcore_claim_seconds_sum 2.0\n# TYPE claimcore_stock_remaining_vouchers gauge\n'
              'claimcore_stock_remaining_vouchers{campaign="c",shard="0"} 5\n'
              '# TYPE claimcore_granted_vouchers gauge\nclaimcore_granted_vouchers{campaign="c"} 5\n'
              '# TYPE claimcore_redis_up gauge\nclaimcore_redis_up 0\n')
    merged = {(s.name, frozenset(s.labels.items())): s.value
              for f in merge_families([a, b]) for s in f.samples}
    assert merged == {
        ("claimcore_claims_total", frozenset({("campaign", "c"), ("outcome", "granted")})): 7,
        ("claimcore_claims_total", frozenset({("campaign", "c"), ("outcome", "sold_out")})): 1,
        ("claimcore_claim_seconds_bucket", frozenset({("le", "0.1")})): 3,
        ("claimcore_claim_seconds_bucket", frozenset({("le", "+Inf")})): 8,
        ("claimcore_claim_seconds_count", frozenset()): 8,
        ("claimcore_claim_seconds_sum", frozenset()): 2.5,
        ("claimcore_stock_remaining_vouchers",
         frozenset({("campaign", "c"), ("shard", "0")})): 5,  # latest: lowest
        ("claimcore_granted_vouchers", frozenset({("campaign", "c")})): 5,  # latest: highest
        ("claimcore_redis_up", frozenset()): 0,  # up only if every worker reaches Redis
    }
