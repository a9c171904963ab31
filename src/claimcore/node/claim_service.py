"""ClaimService: validate, route to a shard, admit, batch, answer.

Business outcomes travel in the reply; gRPC status codes are for calls that
failed (see the proto header). Errors from below are mapped in one place,
errors.py (`abort_for`, `grpc_errors`).

Deadlines need no code here: grpc.aio cancels the handler when the caller's
deadline passes and answers DEADLINE_EXCEEDED itself. Only the waiting is
cancelled: a claim already sent to Redis completes there (its outcome is
unknown to that caller), and one still queued is dropped by the batcher.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from claimcore import validation as v
from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.node.admission import Admission
from claimcore.node.batcher import ClaimBatcher, Overloaded
from claimcore.node.errors import abort_for, grpc_errors
from claimcore.node.metrics import NodeMetrics
from claimcore.node.soldout import SoldOutCache
from claimcore.security import auth, scope
from claimcore.security.abuse import RATE_LIMITED, AbuseLimits
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.replies import (
    ClaimItem,
    Code,
    ItemResult,
)
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

OUTCOMES = {
    Code.GRANTED: pb.GRANTED,
    Code.REPLAY: pb.GRANTED,
    Code.ALREADY_CLAIMED: pb.ALREADY_CLAIMED,
    Code.NOT_STARTED: pb.NOT_STARTED,
    Code.ENDED: pb.ENDED,
    Code.PAUSED: pb.PAUSED,
    Code.NOT_ELIGIBLE: pb.NOT_ELIGIBLE,
    Code.SOLD_OUT: pb.SOLD_OUT,
    # A replay of a request another channel was granted: not this channel's grant, so no voucher.
    Code.OTHER_CHANNEL: pb.ALREADY_CLAIMED,
}


def voucher_of(config: CampaignConfig, user_id: str, request_id: str, channel_id: str,
               voucher_id: str, granted_at_ms: int) -> pb.Voucher:
    return pb.Voucher(
        voucher_id=voucher_id, campaign_id=config.campaign_id, user_id=user_id,
        request_id=request_id, granted_at_ms=granted_at_ms, value_cents=config.value_cents,
        min_spend_cents=config.min_spend_cents, category=config.category, channel_id=channel_id,
    )


def reply_for(config: CampaignConfig, req: pb.ClaimRequest, result: ItemResult,
              channel: str) -> pb.ClaimReply:
    code = result.code
    # A replay comes back only to the channel that was granted (another channel's gets
    # OTHER_CHANNEL), so the caller's channel is the one the grant recorded.
    if code == Code.GRANTED or code == Code.REPLAY:
        return pb.ClaimReply(outcome=pb.GRANTED, voucher=voucher_of(
            config, req.user_id, req.request_id, channel, result.voucher_id, result.granted_at_ms))
    if code == Code.ALREADY_CLAIMED:
        return pb.ClaimReply(outcome=pb.ALREADY_CLAIMED, voucher=voucher_of(
            config, req.user_id, "", "", result.voucher_id, result.granted_at_ms))
    if code == Code.NOT_STARTED:
        return pb.ClaimReply(outcome=pb.NOT_STARTED,
                             retry_after_ms=max(0, config.starts_at_ms - now_ms()))
    return pb.ClaimReply(outcome=OUTCOMES[code])


class ClaimService(pb_grpc.ClaimServiceServicer):
    def __init__(self, inventory: RedisInventory, campaigns: CampaignCache,
                 admission: Admission, soldout: SoldOutCache, batcher: ClaimBatcher,
                 limits: AbuseLimits | None = None, metrics: NodeMetrics | None = None) -> None:
        self.inventory = inventory
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.limits = limits if limits is not None and limits.enabled else None
        self.campaigns = campaigns
        self.admission = admission
        self.soldout = soldout
        self.batcher = batcher

    async def _config(self, campaign_id: str) -> CampaignConfig:
        return await self.campaigns.require(campaign_id)

    @staticmethod
    def _channel(config: CampaignConfig, req: pb.ClaimRequest) -> str:
        """The channel the claim runs as: the caller's own, which the campaign must be open to."""
        channel = auth.current().channel_for(req.channel_id)
        scope.require_open_to(config, channel)
        return channel

    def _hints(self, context: grpc.aio.ServicerContext) -> tuple[str, str]:
        """The device and IP the call's metadata names (x-device-id, x-client-ip), checked."""
        if self.limits is None:
            return "", ""
        found = dict.fromkeys(("x-device-id", "x-client-ip"), "")
        for key, value in context.invocation_metadata() or ():
            if key in found and isinstance(value, str):
                found[key] = value
        v.check_id("metadata x-device-id", found["x-device-id"], v.DEVICE_ID)
        v.check_ip("metadata x-client-ip", found["x-client-ip"])
        return found["x-device-id"], found["x-client-ip"]

    def _limited(self, req: pb.ClaimRequest, channel: str, hints: tuple[str, str]) -> pb.ClaimReply | None:
        """The anti-scalper verdict (security/abuse.py): None to go on, else the reply refusing the claim."""
        if self.limits is None:
            return None
        device, ip = req.device_id or hints[0], req.client_ip or hints[1]
        refused = self.limits.check(channel, req.user_id, device, ip, time.monotonic_ns())
        if refused is None:
            return None
        self.metrics.dropped(req.campaign_id, "abuse")
        outcome = pb.RATE_LIMITED if refused.outcome == RATE_LIMITED else pb.NOT_ELIGIBLE
        return pb.ClaimReply(outcome=outcome, retry_after_ms=refused.retry_after_ms, detail=refused.reason)

    def _start(self, config: CampaignConfig, req: pb.ClaimRequest, channel: str, hints: tuple[str, str]
               ) -> pb.ClaimReply | asyncio.Future[ItemResult]:
        """Answer at once if the node can, else queue the claim for its shard."""
        if config.starts_at_ms and now_ms() < config.starts_at_ms:
            return reply_for(config, req, ItemResult(Code.NOT_STARTED, "", 0), channel)
        limited = self._limited(req, channel, hints)
        if limited is not None:
            return limited
        item = ClaimItem(req.user_id, req.request_id, channel)
        snapshot = self.soldout.snapshot(config.campaign_id)
        if snapshot is not None:
            answer = snapshot.answer(config, item)
            if answer is not None:  # else only Redis can tell (soldout.py)
                return reply_for(config, req, answer, channel)
        shard = shard_of(req.user_id, config.shards)
        wait_ms = self.admission.admit(config, shard)
        if wait_ms:
            self.metrics.dropped(config.campaign_id, "admission_rate")
            return pb.ClaimReply(outcome=pb.RATE_LIMITED, retry_after_ms=wait_ms,
                                 detail="admission rate exceeded")
        try:
            return self.batcher.submit(config, shard, item)
        except Overloaded:
            self.metrics.dropped(config.campaign_id, "overloaded")
            raise

    async def Claim(self, request: pb.ClaimRequest, context: grpc.aio.ServicerContext) -> pb.ClaimReply:
        try:
            v.check_claim(request.campaign_id, request.user_id, request.request_id, request.channel_id,
                          request.device_id, request.client_ip)
            hints = self._hints(context)
            config = await self._config(request.campaign_id)
            channel = self._channel(config, request)
            started = self._start(config, request, channel, hints)
            reply = (started if isinstance(started, pb.ClaimReply)
                     else reply_for(config, request, await started, channel))
            self.metrics.claimed(config.campaign_id, reply.outcome)
            return reply
        except Exception as exc:
            await abort_for(context, exc, request.campaign_id, request.request_id)

    async def ClaimBatch(self, request: pb.ClaimBatchRequest,
                         context: grpc.aio.ServicerContext) -> pb.ClaimBatchReply:
        try:
            claims = request.claims
            if not 1 <= len(claims) <= v.MAX_BATCH:
                raise v.InvalidInput(f"a batch holds 1 to {v.MAX_BATCH} claims, not {len(claims)}")
            for i, c in enumerate(claims):
                try:
                    v.check_claim(c.campaign_id, c.user_id, c.request_id, c.channel_id, c.device_id,
                                  c.client_ip)
                except v.InvalidInput as exc:
                    raise v.InvalidInput(f"claims[{i}]: {exc}") from None
            hints = self._hints(context)
            configs = {cid: await self._config(cid) for cid in {c.campaign_id for c in claims}}
            channels = []
            for i, c in enumerate(claims):  # a forbidden item refuses the whole batch, before any write
                try:
                    channels.append(self._channel(configs[c.campaign_id], c))
                except auth.PermissionDenied as exc:
                    raise auth.PermissionDenied(f"claims[{i}]: {exc}") from None
            started = [self._start(configs[c.campaign_id], c, ch, hints)
                       for c, ch in zip(claims, channels, strict=True)]
            pending = [s for s in started if not isinstance(s, pb.ClaimReply)]
            if pending:
                for outcome in await asyncio.gather(*pending, return_exceptions=True):
                    if isinstance(outcome, BaseException):
                        raise outcome
            replies = [
                s if isinstance(s, pb.ClaimReply) else reply_for(configs[c.campaign_id], c, s.result(), ch)
                for c, s, ch in zip(claims, started, channels, strict=True)
            ]
            claimed = self.metrics.claimed
            for c, reply in zip(claims, replies, strict=True):
                claimed(c.campaign_id, reply.outcome)
            return pb.ClaimBatchReply(replies=replies)
        except Exception as exc:
            ids = {c.campaign_id for c in request.claims}
            await abort_for(context, exc, ids.pop() if len(ids) == 1 else "")

    async def GetClaim(self, request: pb.GetClaimRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetClaimReply:
        async with grpc_errors(context):
            v.check_id("campaign_id", request.campaign_id, v.CAMPAIGN_ID)
            v.check_id("user_id", request.user_id, v.USER_ID)
            if request.request_id:
                v.check_id("request_id", request.request_id, v.REQUEST_ID)
            config = await self._config(request.campaign_id)
            records = scope.visible(auth.current(), await scope.user_records(
                self.inventory, self.campaigns, config, request.user_id, request.request_id))
            return pb.GetClaimReply(found=bool(records), vouchers=[
                voucher_of(config, r.user_id, r.request_id, r.channel_id, r.voucher_id, r.granted_at_ms)
                for r in records
            ])
        raise AssertionError("unreachable")

    async def WatchCampaigns(self, request: pb.WatchCampaignsRequest,
                             context: grpc.aio.ServicerContext) -> None:
        await self.watches.serve(request, context)  # node/watch.py (CampaignStates), set by server.py
