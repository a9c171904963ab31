"""`claimcore loadgen --client auto` against a real node, and the front nodes' CPU-seconds.

Each worker process is an app backend claiming through one ClaimClient(watch=True): the run
must pass every check, the client must answer some claims after sold out without reaching
the node (the node pushes the sold-out state within about half a second, so the launch has a
tail of 1.5 s after it), and the report gives the node's CPU-seconds read from its /metrics.
Without --node-metrics the report says "not measured". Against `serve --workers 2` the
figure is the workers' CPU summed (the parent merges their counters), checked against /proc.
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from claimcore.harness.embedded_redis import free_port
from claimcore.harness.local_node import LocalNode
from claimcore.loadtest import loadgen
from claimcore.ops import cli

USERS = 3000
INVENTORY = 300


@pytest.fixture(scope="module")
def metered_node(redis_server):  # type: ignore[no-untyped-def]
    """A node serving /metrics (process_cpu_seconds_total among them)."""
    port = free_port()
    node = LocalNode(redis_server.url, "--metrics-port", str(port)).start()
    node.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    yield node
    node.stop()


def run_loadgen(argv: list[str], capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = cli.main(["loadgen", *argv])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def launch(json_path) -> list[str]:  # type: ignore[no-untyped-def]
    """3,000 users against 300 vouchers: 70 % within 0.3 s, then a tail until 2 s."""
    return [
        "--create-campaign", "--inventory", str(INVENTORY), "--shards", "4",
        "--users", str(USERS), "--arrival", "launch", "--duration", "2", "--launch-window", "0.3",
        "--processes", "2", "--concurrency", "64", "--verify-sample", "100", "--seed", "11",
        "--no-progress", "--json", str(json_path),
    ]  # fmt: skip


@pytest.mark.timeout(60)
def test_auto_client_run_answers_locally_after_sold_out_and_reports_node_cpu(metered_node, tmp_path,
                                                                                capsys):
    out_json, html = tmp_path / "auto.json", tmp_path / "auto.html"
    code, out, err = run_loadgen(
        ["--target", metered_node.address, "--client", "auto", "--node-metrics", metered_node.metrics_url,
         "--html", str(html), *launch(out_json)],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_OK, out + err
    report = json.loads(out_json.read_text())
    assert report["ok"] is True, report["failed"]
    assert report["run"]["mode"] == "auto"
    assert report["granted"] == report["distinct_vouchers"] == INVENTORY
    assert report["duplicates"] == 0 and report["oversell"] == 0 and report["retry_violations"] == 0
    local = report["answered_locally"]
    assert local["count"] > 0
    assert local["count"] == report["client"]["answered_locally"]  # the driver and the client agree
    assert 0 < local["share_after_sold_out"] <= 1 and local["claims_after_sold_out"] >= local["count"]
    # The client sent every claim it did not answer itself, in fewer calls than claims.
    assert report["client"]["claims_sent"] + local["count"] >= report["replies"]
    assert 0 < report["calls"] < report["client"]["claims_sent"]
    cpu = report["front_cpu"]
    assert cpu["measured"] is True and cpu["cpu_s"] > 0 and cpu["per_million_claims"] > 0
    assert [n["url"] for n in cpu["nodes"]] == [metered_node.metrics_url]
    assert "answered without reaching a node" in out and "CPU-s per million claims" in out
    assert "CPU-s per million claims" in html.read_text()


@pytest.mark.timeout(60)
def test_without_node_metrics_the_cpu_is_not_measured(node, tmp_path, capsys):
    out_json = tmp_path / "unary.json"
    code, out, err = run_loadgen(["--target", node.address, *launch(out_json)], capsys)
    assert code == loadgen.EXIT_OK, out + err
    report = json.loads(out_json.read_text())
    assert report["front_cpu"] == {"measured": False, "cpu_s": None, "per_million_claims": None,
                                   "nodes": [], "why": "no --node-metrics"}
    assert "not measured" in out
    assert report["answered_locally"]["count"] == 0  # unary: every claim reached the node


@pytest.mark.timeout(30)
def test_a_node_metrics_address_that_does_not_answer_stops_before_anything_is_written(node, capsys):
    dead = f"127.0.0.1:{free_port()}"
    code, out, err = run_loadgen(
        ["--target", node.address, "--create-campaign", "--inventory", "10", "--users", "10",
         "--node-metrics", dead],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_ERROR
    assert f"cannot read http://{dead}/metrics" in err
    assert "campaign" not in out  # no campaign was created


def workers_of(metrics_url: str) -> tuple[list[int], list[float]]:
    """The pids of a `serve --workers N` node's workers and the claims each answered (its /metrics)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        families = list(text_string_to_metric_families(reply.read().decode()))
    pids = [int(s.labels["pid"]) for f in families if f.name == "claimcore_worker_info" for s in f.samples]
    claims = [s.value for f in families if f.name == "claimcore_worker_claims" for s in f.samples]
    return pids, claims


def worker_cpu_seconds(pids: list[int]) -> float:
    """The CPU-seconds of these processes, from /proc, now."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


@pytest.mark.timeout(60)
def test_against_serve_workers_2_the_cpu_is_every_workers_summed(redis_server, tmp_path, capsys):
    # 16 connections per process: the kernel hands connections to the workers, so both get claims.
    port = free_port()
    node = LocalNode(redis_server.url, "--workers", "2", "--metrics-port", str(port)).start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        out_json = tmp_path / "workers.json"
        code, out, err = run_loadgen(
            ["--target", node.address, "--node-metrics", url, "--create-campaign", "--inventory", "100",
             "--users", "500", "--arrival", "burst", "--duration", "0.2", "--processes", "1",
             "--connections", "16", "--verify-sample", "0", "--no-progress", "--json", str(out_json)],
            capsys,
        )  # fmt: skip
        assert code == loadgen.EXIT_OK, out + err
        report = json.loads(out_json.read_text())
        after = report["front_cpu"]["nodes"][0]["after"]
        pids, claims = workers_of(url)
        workers_now = worker_cpu_seconds(pids)
    finally:
        node.stop()
    # Read a moment later, the workers' own CPU is at least the merged figure and close to it; one
    # worker's alone (each has imported and started the same) would be about half of it.
    assert 0.75 * workers_now <= after <= workers_now + 0.05
    assert report["ok"] is True and report["run"]["connections"] == 16
    assert len(pids) == 2 and len(claims) == 2 and min(claims) > 0 and sum(claims) >= report["replies"]
