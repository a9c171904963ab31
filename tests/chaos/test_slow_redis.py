"""Fault (c): Redis stalls mid-burst: CLIENT PAUSE ALL, DEBUG SLEEP, SIGSTOP/SIGCONT of redis-server.

Every RPC must finish within its deadline plus a margin, with a real outcome or with
DEADLINE_EXCEEDED, UNAVAILABLE or RESOURCE_EXHAUSTED (never UNKNOWN or INTERNAL); the node's
memory (VmRSS of the `claimcore serve` process) must stay bounded; claims must flow again
once the stall ends; and the history checker must be clean (every call that timed out was
retried with its request_id until it had an answer).
"""

from __future__ import annotations

import asyncio
import time

import chaoslib as chaos
import grpc
import pytest
from chaoslib import Burst, Fault, RssSampler, check, direct, pick, record, requests_for, seeds

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.harness.history import History
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign

DEADLINE_S, MARGIN_S = 1.0, 0.5
STALL_S = pick(1.5, 2.5)
CLIENTS = pick(96, 192)
ROUNDS = pick(1, 2)               # each round: CLIENT PAUSE, DEBUG SLEEP, SIGSTOP
ROUND_S = 3 * (STALL_S + 1.5)
DEFINITE = {"GRANTED", "ALREADY_CLAIMED", "SOLD_OUT"}
RETRYABLE = {"DEADLINE_EXCEEDED", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}
RSS_BOUND_KB = 300 * 1024         # growth allowed over the burst: a queue of claims, not a leak


def stalls(server: EmbeddedRedis) -> list[Fault]:
    """Three stalls per round, STALL_S each, 1.5 s apart, starting 1 s into the burst."""
    assert server.proc is not None
    pid = server.proc.pid

    def pause() -> None:
        client = direct(server.port)
        try:
            client.execute_command("CLIENT", "PAUSE", int(STALL_S * 1000), "ALL")
        finally:
            client.close()
        time.sleep(STALL_S)

    def debug_sleep() -> None:
        client = direct(server.port)
        try:
            client.execute_command("DEBUG", "SLEEP", STALL_S)  # blocks Redis, and this call
        finally:
            client.close()

    def stop() -> None:
        chaos.sigstop(pid)
        try:
            time.sleep(STALL_S)
        finally:
            chaos.sigcont(pid)

    faults = []
    for r in range(ROUNDS):
        for k, (name, action) in enumerate((("CLIENT PAUSE ALL", pause), ("DEBUG SLEEP", debug_sleep),
                                            ("SIGSTOP", stop))):
            faults.append(Fault(0, action, name, at_s=1.0 + r * ROUND_S + k * (STALL_S + 1.5)))
    return faults


def completed_between(history: History, lo: float, hi: float) -> int:
    return sum(1 for op in history.ops if op.outcome in DEFINITE and op.t_complete is not None
               and lo <= op.t_complete < hi)


@pytest.mark.parametrize("seed", seeds("slow-redis", 1, 1))
def test_redis_stalls_mid_burst(seed):
    print(f"\nseed {seed}")
    server = EmbeddedRedis(appendfsync="always", extra_args=["--enable-debug-command", "local"]).start()
    node = LocalNode(server.url).start()
    client = direct(server.port)
    try:
        with grpc.insecure_channel(node.address) as ch:
            cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=1_000_000,
                                  shards=4).campaign.campaign_id
        faults = stalls(server)
        duration = faults[-1].at_s + STALL_S + 2.5
        requests = requests_for(seed, 400_000, 20_000, 20_000)
        history = History()
        assert node.proc is not None
        with RssSampler(node.proc.pid) as rss:
            burst = Burst(history, [node.address], cid, clients=CLIENTS, deadline_s=DEADLINE_S,
                          retry_for_s=30, seed=seed)
            result = asyncio.run(burst.run(requests, faults, stop_after_s=duration))
        report = check(history, client, cid)
        ops = history.ops

        # Every RPC ended within its deadline plus the margin, with an outcome or a retryable code.
        slowest = max(op.duration or 0.0 for op in ops)
        codes = {op.detail or op.outcome for op in ops}
        assert all(op.t_complete is not None for op in ops)
        assert codes <= DEFINITE | RETRYABLE, codes
        assert slowest <= DEADLINE_S + MARGIN_S, slowest
        timed_out = sum(1 for op in ops if op.detail == "DEADLINE_EXCEEDED")
        assert timed_out > 0  # the stalls were felt

        # Claims flow again after each stall: definite answers in the 2 s after its end, against
        # the rate in the second before the first stall.
        start = result.started
        baseline = completed_between(history, start + 0.2, start + 1.0) / 0.8
        named = {f"{f.name} #{i // 3}": f for i, f in enumerate(faults)}
        after = {name: completed_between(history, f.ended, f.ended + 2) / 2 for name, f in named.items()}
        during = {name: completed_between(history, f.started + 0.2, f.ended) for name, f in named.items()}
        record("c-slow-redis", seed, report, stall_s=STALL_S, clients=CLIENTS, rounds=ROUNDS,
               slowest_rpc_s=round(slowest, 3), deadline_exceeded=timed_out,
               baseline_per_s=round(baseline), after_stall_per_s={k: round(v) for k, v in after.items()},
               answered_during_stall=during, rss_kb_before=rss.before, rss_kb_peak=rss.peak,
               rss_kb_after=rss.after)
        assert all(rate >= 0.1 * baseline for rate in after.values()), (baseline, after)
        assert rss.peak - rss.before < RSS_BOUND_KB
        assert report.ok, report.summary()
        assert report.lost == 0 and result.gave_up == 0
    finally:
        client.close()
        node.stop()
        server.cleanup()
