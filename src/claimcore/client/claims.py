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

Concurrent claim() calls are batched (batching.py): the claims waiting at the
same moment go out together as one ClaimBatch per node, each caller getting
its own reply, deadline and retries. docs/client.md says how to use it all,
and sync.py holds the same client for thread-based backends.

With watch=True the client also follows the campaigns it claims in
(watch.py: CampaignWatch, over ClaimService.WatchCampaigns) and answers a new
claim of a sold-out campaign itself: SOLD_OUT with detail watch.LOCAL_DETAIL,
counted in `answered_locally`, sending nothing. A request id this client has
already sent (a retry of an unknown outcome, a replay) always goes to a node.
docs/architecture.md, "The pushed campaign state", says what a local answer
means and where it differs from a node's.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from claimcore import validation
from claimcore.client.batching import BatchStats, ClaimBatcher, Metadata
from claimcore.client.watch import CampaignWatch
from claimcore.security.access import PLAINTEXT, Access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

# Statuses that leave the outcome unknown (or say nothing was done yet): sent again, to the next
# node. Safe for every call of this client: claims are idempotent by (user_id, request_id),
# redeem and reverse by (user_id, order_id), release by voucher (docs/redemption.md).
RETRYABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
})
DEFAULT_MAX_BATCH = 100
DEFAULT_LINGER_S = 0.001


class ClaimOutcomeUnknown(Exception):
    """Every attempt failed in a way that leaves the outcome unknown: settle it with get_claim.

    request_id is the claim's request id (for redeem and reverse: the order id; for release:
    the voucher id): send the call again with it, or settle it."""

    def __init__(self, request_id: str, last: grpc.aio.AioRpcError) -> None:
        super().__init__(f"request {request_id}: {last.code().name}: {last.details()}")
        self.request_id = request_id
        self.last = last


class ClaimClient:
    def __init__(self, targets: Sequence[str], *, deadline_s: float = 5.0, max_attempts: int = 5,
                 backoff_s: float = 0.05, reach: Access = PLAINTEXT, connections_per_node: int = 1,
                 max_batch: int = DEFAULT_MAX_BATCH, linger_s: float = DEFAULT_LINGER_S,
                 metadata: Sequence[tuple[str, str]] = (), watch: bool = False) -> None:
        """reach: TLS and the channel's API key (access.py); plaintext without a key by default.

        watch: answer new claims of a sold-out campaign locally, from the state the nodes push (see
        the module docstring). The client then remembers every (campaign, user, request id) it has
        sent, about 100 bytes each, to never answer one of them locally.

        deadline_s: how long one attempt of a call may take (a call's `timeout` overrides it).
        max_batch (1 .. 1,000) and linger_s: how claim() batches (batching.py; docs/client.md).
        metadata: sent with every call (each call may add its own).

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
        if not 1 <= max_batch <= validation.MAX_BATCH or linger_s < 0:
            raise ValueError(f"max_batch must be 1 to {validation.MAX_BATCH} and linger_s >= 0")
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
        self._redeem_stubs = [pb_grpc.RedeemServiceStub(ch) for ch in self._channels]
        self._next = itertools.cycle(range(len(self._stubs)))
        self.metadata: Metadata = tuple((str(k), str(v)) for k, v in metadata)
        self._batcher = ClaimBatcher(self._stubs, self._pick, RETRYABLE, max_batch=max_batch,
                                     linger_s=linger_s)
        self.retries = 0  # calls sent again, over the client's life
        self.watch = CampaignWatch(targets, [], reach=reach) if watch else None
        self._sent: set[tuple[str, str, str]] = set()  # claims sent to a node (with watch only)
        self.answered_locally = 0  # claims answered SOLD_OUT from the pushed state, sending nothing

    async def __aenter__(self) -> ClaimClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.watch is not None:
            await self.watch.close()
        await self._batcher.close()
        await asyncio.gather(*(ch.close() for ch in self._channels))

    def _pick(self) -> int:
        """The connection a batch of first attempts goes to: the next in the round robin that is not
        known to be down (after a node died, its connection fails fast; its turn goes to the others)."""
        for _ in range(len(self._channels)):
            index = next(self._next)
            if self._channels[index].get_state() != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                return index
        return index

    @property
    def batching(self) -> BatchStats:
        """What claim()'s batcher sent so far: calls, claims, why each lane left."""
        return self._batcher.stats

    async def claim(self, campaign_id: str, user_id: str, request_id: str | None = None,
                    channel_id: str = "", *, device_id: str = "", client_ip: str = "",
                    timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
                    ) -> pb.ClaimResponse:
        """One claim, batched with the other callers' (batching.py). request_id defaults to a fresh
        one (keep it to retry later yourself); device_id and client_ip are the end user's, for the
        anti-scalper limits. Malformed input raises INVALID_ARGUMENT here, for this caller only."""
        request = pb.ClaimRequest(campaign_id=campaign_id, user_id=user_id,
                                  request_id=request_id or uuid.uuid4().hex, channel_id=channel_id,
                                  device_id=device_id, client_ip=client_ip)
        try:
            validation.check_claim(campaign_id, user_id, request.request_id, channel_id, device_id,
                                   client_ip)
        except validation.InvalidInput as exc:
            raise invalid_argument(str(exc)) from None
        if self.watch is not None:
            local = self._local_answer(request)
            if local is not None:
                return local
        return await self._send_claim(request, self._metadata(metadata), self._timeout(timeout))

    def _local_answer(self, request: pb.ClaimRequest) -> pb.ClaimResponse | None:
        """SOLD_OUT from the pushed state for a claim this client never sent, else None (and the
        claim is remembered as sent). The campaign is watched from its first claim on."""
        assert self.watch is not None
        cid = request.campaign_id
        if cid not in self.watch.campaign_ids:
            self.watch.add([cid])
            self.watch.start()
        key = (cid, request.user_id, request.request_id)
        if key in self._sent:
            return None  # it may hold a grant: only a node can say
        local = self.watch.local_answer(cid)
        if local is not None:
            self.answered_locally += 1
            return local
        self._sent.add(key)
        return None

    async def _send_claim(self, request: pb.ClaimRequest, metadata: Metadata,
                          timeout: float) -> pb.ClaimResponse:
        """Where a claim goes to the nodes: in the next batch to leave, and each retry (same
        request_id) in a batch to the node after the one that failed. A claim whose batch was
        refused for another claim's fault is sent again alone, to the same node."""
        node: int | None = None  # a first attempt goes with whichever batch leaves next
        alone = False  # once its batch was refused, a claim goes in unary calls
        last: grpc.aio.AioRpcError | None = None
        jitter = random.random()
        for attempt in range(self.max_attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + jitter))
            try:
                if alone:
                    assert node is not None
                    return await self._stubs[node].Claim(request, timeout=timeout, metadata=metadata)
                ticket = self._batcher.submit(request, node, metadata, timeout)
                try:
                    return await asyncio.wait_for(ticket.future, timeout)
                except grpc.aio.AioRpcError:
                    if not ticket.refused:
                        raise
                # Refused as a whole (a rejected batch writes nothing): this claim alone, to the
                # same node, tells whether the fault was its own. The same attempt, not a retry.
                alone, node = True, ticket.node
                return await self._stubs[node].Claim(request, timeout=timeout, metadata=metadata)
            except TimeoutError:
                last, jitter = deadline_exceeded(timeout), random.random()
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    raise  # INVALID_ARGUMENT, NOT_FOUND, ...: sending it again cannot help
                # A failed batch's claims share one jitter, so that their retries batch again.
                last, jitter = err, (random.random() if alone else ticket.jitter)
            sent_to = node if alone else ticket.node  # None: it timed out before its batch left
            if sent_to is not None:
                node = (sent_to + 1) % len(self._stubs)  # the retry goes to the next node
        assert last is not None
        raise ClaimOutcomeUnknown(request.request_id, last)

    async def claim_batch(self, claims: Sequence[pb.ClaimRequest], *, timeout: float | None = None,
                          metadata: Sequence[tuple[str, str]] = ()) -> pb.ClaimBatchResponse:
        """Up to 1,000 claims in one call; each must carry its request_id (they are retried)."""
        if any(not c.request_id for c in claims):
            raise ValueError("every claim of a batch needs a request_id, so that a retry is safe")
        return await self._call(self._stubs, "ClaimBatch", pb.ClaimBatchRequest(claims=claims),
                                claims[0].request_id, timeout, metadata)

    async def get_claim(self, campaign_id: str, user_id: str, request_id: str = "", *,
                        timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
                        ) -> pb.GetClaimResponse:
        """Settle a claim whose outcome is unknown, or list a user's vouchers."""
        request = pb.GetClaimRequest(campaign_id=campaign_id, user_id=user_id, request_id=request_id)
        return await self._call(self._stubs, "GetClaim", request, request_id, timeout, metadata)

    async def redeem(self, campaign_id: str, user_id: str, voucher_ids: Sequence[str], merchant_id: str,
                     order_id: str, order_amount_cents: int, *, sn_codes: Sequence[str] = (),
                     channel_id: str = "", stacked: Mapping[str, Sequence[str]] | None = None,
                     timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
                     ) -> pb.RedeemResponse:
        """Use vouchers on an order at a merchant (docs/redemption.md); stacked: other campaigns'
        vouchers on the same order, by campaign id. Idempotent by (user_id, order_id): retried."""
        request = pb.RedeemRequest(
            campaign_id=campaign_id, user_id=user_id, voucher_ids=voucher_ids, merchant_id=merchant_id,
            order_id=order_id, order_amount_cents=order_amount_cents, sn_codes=sn_codes,
            channel_id=channel_id, stacked=[pb.StackedVouchers(campaign_id=c, voucher_ids=ids)
                                            for c, ids in (stacked or {}).items()])
        return await self._call(self._redeem_stubs, "Redeem", request, order_id, timeout, metadata)

    async def reverse(self, campaign_id: str, user_id: str, order_id: str, *,
                      timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
                      ) -> pb.ReverseResponse:
        """A refunded order: its vouchers go back to their user. Idempotent: retried."""
        request = pb.ReverseRequest(campaign_id=campaign_id, user_id=user_id, order_id=order_id)
        return await self._call(self._redeem_stubs, "Reverse", request, order_id, timeout, metadata)

    async def release(self, campaign_id: str, user_id: str, voucher_id: str, *,
                      timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
                      ) -> pb.ReleaseResponse:
        """The user gives up an unused voucher: its stock goes back, once. Idempotent: retried."""
        request = pb.ReleaseRequest(campaign_id=campaign_id, user_id=user_id, voucher_id=voucher_id)
        return await self._call(self._redeem_stubs, "Release", request, voucher_id, timeout, metadata)

    def _metadata(self, extra: Sequence[tuple[str, str]]) -> Metadata:
        return (*self.metadata, *((str(k), str(v)) for k, v in extra)) if extra else self.metadata

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self.deadline_s
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        return timeout

    async def _call(self, stubs: Sequence[Any], method: str, request: Any, request_id: str,
                    timeout: float | None, metadata: Sequence[tuple[str, str]]) -> Any:
        """One unary call, retried to the next node while its status leaves the outcome unknown."""
        per_attempt, sent_metadata = self._timeout(timeout), self._metadata(metadata)
        last: grpc.aio.AioRpcError | None = None
        first = self._pick()
        for attempt in range(self.max_attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random()))
            stub = stubs[(first + attempt) % len(stubs)]  # each retry: the next node
            try:
                return await getattr(stub, method)(request, timeout=per_attempt, metadata=sent_metadata)
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    raise  # INVALID_ARGUMENT, NOT_FOUND, ...: sending it again cannot help
                last = err
        assert last is not None
        raise ClaimOutcomeUnknown(request_id, last)


def invalid_argument(details: str) -> grpc.aio.AioRpcError:
    """The error a node would answer for malformed input, raised before anything is sent."""
    return grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details)


def deadline_exceeded(timeout: float) -> grpc.aio.AioRpcError:
    """A claim's attempt ran out of time while its batch waited or was in flight."""
    return grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                f"no answer within {timeout:g} s")
