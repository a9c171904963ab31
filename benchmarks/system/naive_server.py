"""The naive baseline: grpc.aio + redis-py asyncio, one EVALSHA per claim.

What a team would write in an afternoon: validate, run naive_claim.lua for the
one claim, answer. No micro-batching, no sharding, no admission control, no
local caches (the campaign's terms come back from the script on every call),
no sold-out shortcut. It is correct (per-user limit, stock, idempotency
record: see naive_claim.lua), and configured like a claimcore node (same gRPC
options, a pool of 64 Redis connections, uvloop), so the comparison isolates
claimcore's design.

    python -m benchmarks.system.naive_server --port 50062 --redis redis://127.0.0.1:6379/0

Campaigns are created directly in Redis with `create_campaign` (the runner does it).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path
from typing import Any

import grpc
import redis
import redis.asyncio as aioredis
import uvloop
from benchmarks.system.common import CATEGORY, MIN_SPEND_CENTS, VALUE_CENTS, serve

from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

SCRIPT = (Path(__file__).parent / "naive_claim.lua").read_text()
OUTCOMES = {1: pb.OUTCOME_GRANTED, 2: pb.OUTCOME_GRANTED, 3: pb.OUTCOME_ALREADY_CLAIMED,
            4: pb.OUTCOME_SOLD_OUT,
            5: pb.OUTCOME_NOT_STARTED, 6: pb.OUTCOME_ENDED, 7: pb.OUTCOME_PAUSED}
ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")  # keeps '|' and '{}' out of keys and records
CHANNEL = re.compile(r"[A-Za-z0-9._-]{0,64}")


def keys(campaign_id: str) -> list[str]:
    tag = f"nv:{{{campaign_id}}}"
    return [f"{tag}:campaign", f"{tag}:users", f"{tag}:reqs"]


def create_campaign(client: redis.Redis, campaign_id: str, inventory: int, per_user_limit: int = 1) -> None:
    """A campaign open now and forever, with the shared voucher terms (sync client)."""
    client.hset(keys(campaign_id)[0], mapping={
        "stock": inventory, "seq": 0, "limit": per_user_limit, "starts": 0, "ends": 0, "paused": 0,
        "value_cents": VALUE_CENTS, "min_spend_cents": MIN_SPEND_CENTS, "category": CATEGORY,
    })


class NaiveService(pb_grpc.ClaimServiceServicer):
    def __init__(self, client: aioredis.Redis) -> None:
        self.claim_script = client.register_script(SCRIPT)  # EVALSHA, reloaded on NOSCRIPT

    async def claim(self, req: pb.ClaimRequest, context: grpc.aio.ServicerContext) -> pb.ClaimResponse:
        if not (ID.fullmatch(req.campaign_id) and ID.fullmatch(req.user_id)
                and ID.fullmatch(req.request_id) and CHANNEL.fullmatch(req.channel_id)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad id")
        now = time.time_ns() // 1_000_000
        out: list[Any] = await self.claim_script(
            keys=keys(req.campaign_id),
            args=[now, req.user_id, req.request_id, req.channel_id, f"{req.campaign_id}-"],
        )
        if out[0] == -1:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no campaign {req.campaign_id}")
        code, voucher_id, at, value_cents, min_spend_cents, category = out
        reply = pb.ClaimResponse(outcome=OUTCOMES[code])
        if code in (1, 2, 3):
            granted = code != 3
            reply.voucher.CopyFrom(pb.Voucher(
                voucher_id=voucher_id, campaign_id=req.campaign_id, user_id=req.user_id,
                request_id=req.request_id if granted else "", granted_at_ms=int(at),
                value_cents=int(value_cents), min_spend_cents=int(min_spend_cents), category=category,
                channel_id=req.channel_id if granted else "",
            ))
        return reply

    async def Claim(self, request: pb.ClaimRequest, context: grpc.aio.ServicerContext) -> pb.ClaimResponse:
        return await self.claim(request, context)

    async def ClaimBatch(self, request: pb.ClaimBatchRequest,
                         context: grpc.aio.ServicerContext) -> pb.ClaimBatchResponse:
        replies = await asyncio.gather(*(self.claim(c, context) for c in request.claims))
        return pb.ClaimBatchResponse(replies=replies)


async def run(port: int, redis_url: str) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, decode_responses=True)
    client = aioredis.Redis(connection_pool=pool)
    try:
        await serve(NaiveService(client), port)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    args = parser.parse_args()
    uvloop.run(run(args.port, args.redis))


if __name__ == "__main__":
    main()
