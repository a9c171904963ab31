"""Fault (d): a front node killed with kill -9 mid-batch, its clients retrying through another node.

Half the clients send ClaimBatch calls of BATCH claims, half send single claims; each call
starts on a node picked by the seed and, after UNAVAILABLE, DEADLINE_EXCEEDED or
RESOURCE_EXHAUSTED, goes again with the same request_ids to the next node. The victim is
killed (SIGKILL) once KILL_AFTER requests are answered. The history checker must be clean
(nothing acknowledged lost, nothing unexplained), and nobody may ever get a second voucher
(tests/node/test_many_nodes.py has the unary version without the checker).
"""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from chaoslib import Burst, Fault, check, direct, pick, record, requests_for, seeds

from claimcore.harness.history import History
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign

INVENTORY, SHARDS, BATCH = pick(1000, 4000), 4, 16
USERS = INVENTORY * 2
KILL_AFTER = INVENTORY // 3


@pytest.mark.parametrize("seed", seeds("node-kill", 1, 3))
def test_node_killed_mid_batch_clients_retry_elsewhere(redis_server, node, seed):
    print(f"\nseed {seed}")
    victim = LocalNode(redis_server.url).start()
    client = direct(redis_server.port)
    try:
        with grpc.insecure_channel(node.address) as ch:
            cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=INVENTORY,
                                  shards=SHARDS).campaign.campaign_id
        requests = requests_for(seed, USERS, USERS // 5, USERS // 5)
        history = History()
        burst = Burst(history, [victim.address, node.address], cid, clients=48, deadline_s=2.0,
                      batch=BATCH, seed=seed)
        result = asyncio.run(burst.run(requests, [Fault(KILL_AFTER, lambda: victim.stop(signal.SIGKILL),
                                                        "kill -9 of a node")]))
        assert victim.proc is None and result.gave_up == 0
        report = check(history, client, cid)
        on_victim = [op for op in history.ops if op.node == victim.address]
        cut_off = sum(1 for op in on_victim if op.outcome == "INDETERMINATE")
        record("d-node-kill9", seed, report, batch=BATCH, calls_cut_off=cut_off,
               through_victim=len(on_victim))
        assert cut_off > 0  # the kill caught calls in flight, and their retries went elsewhere
        assert report.ok, report.summary()
        assert report.lost == report.duplicates == report.oversold == 0
        assert report.granted_final == INVENTORY
        assert set(result.final.values()) <= {"GRANTED", "ALREADY_CLAIMED", "SOLD_OUT"}
    finally:
        client.close()
        victim.stop()
