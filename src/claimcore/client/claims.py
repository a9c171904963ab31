"""A Python client for app backends: claims balanced over several front nodes, retried safely.

    async with ClaimClient(["10.0.0.5:50051", "10.0.0.6:50051"]) as client:
        reply = await client.claim("spring-2027", user_id="u-123")

Calls go round robin over the nodes. A call that fails in a way that leaves
its outcome unknown (UNAVAILABLE: a node died or Redis is away;
DEADLINE_EXCEEDED; RESOURCE_EXHAUSTED: a node shedding load) is sent again
to the next node with the same request_id, after a short jittered back-off.
That is always safe: claims are idempotent by (user_id, request_id), so a
retry gets the outcome already recorded, never a second voucher. If every
attempt fails, ClaimOutcomeUnknown carries the request_id to settle later
with get_claim.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Sequence
from typing import Any

import grpc

from claimcore.security.access import PLAINTEXT, Access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

RETRYABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
})


class ClaimOutcomeUnknown(Exception):
    """Every attempt failed in a way that leaves the outcome unknown: settle it with get_claim."""

    def __init__(self, request_id: str, last: grpc.aio.AioRpcError) -> None:
        super().__init__(f"request {request_id}: {last.code().name}: {last.details()}")
        self.request_id = request_id
        self.last = last


class ClaimClient:
    def __init__(self, targets: Sequence[str], *, deadline_s: float = 5.0, max_attempts: int = 5,
                 backoff_s: float = 0.05, reach: Access = PLAINTEXT, connections_per_node: int = 1) -> None:
        """reach: TLS and the channel's API key (access.py); plaintext without a key by default.

        connections_per_node: TCP connections (gRPC channels) opened to each node, calls going round
        robin over all of them. A node run with `serve --workers N` shares one port between N
        processes, and the kernel spreads connections, not calls, over them: give at least N.
        """
        if not targets:
            raise ValueError("ClaimClient needs at least one node's host:port")
        if max_attempts < 1 or deadline_s <= 0 or backoff_s < 0:
            raise ValueError("max_attempts must be >= 1, deadline_s > 0 and backoff_s >= 0")
        if connections_per_node < 1:
            raise ValueError("connections_per_node must be >= 1")
        self.deadline_s = deadline_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        # Ordered connection-major (every node's first connection, then every node's second, ...) so
        # that the round robin and a retry's "next" both move to another node. A local subchannel
        # pool keeps gRPC from sharing one connection between channels to the same target.
        own_connection = [("grpc.use_local_subchannel_pool", 1)] if connections_per_node > 1 else []
        self._channels = [reach.aio_channel(t, own_connection)
                          for _ in range(connections_per_node) for t in targets]
        self._stubs = [pb_grpc.ClaimServiceStub(ch) for ch in self._channels]
        self._next = itertools.cycle(range(len(self._stubs)))
        self.retries = 0  # calls sent again, over the client's life

    async def __aenter__(self) -> ClaimClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels))

    async def claim(self, campaign_id: str, user_id: str, request_id: str | None = None,
                    channel_id: str = "") -> pb.ClaimReply:
        """One claim; request_id defaults to a fresh one (keep it to retry later yourself)."""
        request = pb.ClaimRequest(campaign_id=campaign_id, user_id=user_id,
                                  request_id=request_id or uuid.uuid4().hex, channel_id=channel_id)
        return await self._call("Claim", request, request.request_id)

    async def claim_batch(self, claims: Sequence[pb.ClaimRequest]) -> pb.ClaimBatchReply:
        """Up to 1,000 claims in one call; each must carry its request_id (they are retried)."""
        if any(not c.request_id for c in claims):
            raise ValueError("every claim of a batch needs a request_id, so that a retry is safe")
        return await self._call("ClaimBatch", pb.ClaimBatchRequest(claims=claims), claims[0].request_id)

    async def get_claim(self, campaign_id: str, user_id: str, request_id: str = "") -> pb.GetClaimReply:
        """Settle a claim whose outcome is unknown, or list a user's vouchers."""
        request = pb.GetClaimRequest(campaign_id=campaign_id, user_id=user_id, request_id=request_id)
        return await self._call("GetClaim", request, request_id)

    async def _call(self, method: str, request: Any, request_id: str) -> Any:
        last: grpc.aio.AioRpcError | None = None
        first = next(self._next)
        for attempt in range(self.max_attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random()))
            stub = self._stubs[(first + attempt) % len(self._stubs)]  # each retry: the next node
            try:
                return await getattr(stub, method)(request, timeout=self.deadline_s)
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    raise  # INVALID_ARGUMENT, NOT_FOUND, ...: sending it again cannot help
                last = err
        assert last is not None
        raise ClaimOutcomeUnknown(request_id, last)
