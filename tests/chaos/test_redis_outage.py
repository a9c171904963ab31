"""Fault (e): Redis unreachable for seconds (killed, restarted only after DOWN_S).

While it is away, calls must fail fast: UNAVAILABLE, well within their deadline, never a
hang until the deadline. Nothing may be half-written (the history checker: conservation,
the users and reqs records agree, nothing acknowledged lost). Once redis-server is back,
the node recovers by itself and claims are granted again.
"""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest
from chaoslib import Burst, Fault, check, direct, granted_after, pick, record, requests_for, seeds

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.harness.history import History
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign

INVENTORY, SHARDS = pick(1500, 4000), 4
USERS = INVENTORY * 2
DOWN_S = pick(3.0, 5.0)
OUTAGES = pick(1, 2)
DEADLINE_S = 3.0
FAST_S = 1.0   # a call made while Redis is away must fail within this (a third of its deadline)


@pytest.mark.parametrize("seed", seeds("redis-outage", 1, 2))
def test_redis_unreachable_fails_fast_and_recovers(seed):
    rng = random.Random(seed)
    print(f"\nseed {seed}")
    server = EmbeddedRedis(appendfsync="always").start()
    node = LocalNode(server.url).start()
    client = direct(server.port)
    windows: list[tuple[float, float]] = []  # (killed, restart begun)

    def outage() -> None:
        server.kill()
        killed = time.monotonic()
        time.sleep(DOWN_S)
        windows.append((killed, time.monotonic()))
        server.start()

    try:
        with grpc.insecure_channel(node.address) as ch:
            cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=INVENTORY,
                                  shards=SHARDS).campaign.campaign_id
        requests = requests_for(seed, USERS, USERS // 5, USERS // 5)
        points = sorted(rng.randrange(len(requests) // 10, len(requests) // 4) for _ in range(OUTAGES))
        history = History()
        burst = Burst(history, [node.address], cid, clients=32, deadline_s=DEADLINE_S, pace_s=0.01,
                      retry_for_s=DOWN_S * 6, seed=seed)
        result = asyncio.run(burst.run(requests, [Fault(p, outage, "outage") for p in points]))
        report = check(history, client, cid)
        ops = history.ops
        # The calls begun while Redis was away (after the first 0.2 s, which in-flight calls
        # need to notice the dead connections).
        away = [op for op in ops for killed, restarted in windows
                if killed + 0.2 < op.t_invoke and op.t_complete is not None and op.t_complete < restarted]
        codes = {op.detail or op.outcome for op in away}
        slowest = max(op.duration or 0.0 for op in away)
        resumed = granted_after(history, cid, windows[-1][1])
        record("e-redis-outage", seed, report, outages=OUTAGES, down_s=DOWN_S, calls_while_away=len(away),
               codes_while_away=sorted(codes), slowest_while_away_s=round(slowest, 3),
               resumed_grants=resumed)
        assert len(windows) == OUTAGES and len(away) > 20
        assert codes == {"UNAVAILABLE"}, codes
        assert slowest < FAST_S
        assert resumed > 0                    # recovered by itself
        assert report.ok, report.summary()     # nothing half-written, nothing acknowledged lost
        assert report.granted_final == INVENTORY and result.gave_up == 0
    finally:
        client.close()
        node.stop()
        server.cleanup()
