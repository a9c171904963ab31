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

import logging
import time
from typing import Any

import grpc

from claimcore import validation as v
from claimcore._fast import shard_of
from claimcore._fast.claim_wire import (
    WireError,
    claim_fields_ok,
    decode_claim_batch,
    encode_claim_batch_reply,
    encode_claim_reply,
)
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
    Ineligible,
    ItemResult,
)
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

NOT_STARTED = ItemResult(Code.NOT_STARTED, "", 0)

OUTCOMES = {
    Code.GRANTED: pb.OUTCOME_GRANTED,
    Code.REPLAY: pb.OUTCOME_GRANTED,
    Code.ALREADY_CLAIMED: pb.OUTCOME_ALREADY_CLAIMED,
    Code.NOT_STARTED: pb.OUTCOME_NOT_STARTED,
    Code.ENDED: pb.OUTCOME_ENDED,
    Code.PAUSED: pb.OUTCOME_PAUSED,
    Code.NOT_ELIGIBLE: pb.OUTCOME_NOT_ELIGIBLE,
    Code.SOLD_OUT: pb.OUTCOME_SOLD_OUT,
    # A replay of a request another channel was granted: not this channel's grant, so no voucher.
    Code.OTHER_CHANNEL: pb.OUTCOME_ALREADY_CLAIMED,
}

# A claim's fields, as ClaimRequest orders them: campaign, user, request, channel, device, client_ip.
Row = tuple[str, str, str, str, str, str]
# A ClaimResponse as claim_wire encodes it: (outcome, retry_after_ms, detail, voucher or None), a voucher
# being Voucher's nine fields in order, and for NOT_ELIGIBLE a fifth, not_eligible_reason. Replies are
# built as these tuples and written straight to bytes: no protobuf object per claim.
Voucher = tuple[str, str, str, str, int, int, int, str, str]
Reply = tuple[int, int, str, Voucher | None] | tuple[int, int, str, None, int]


def row_of(req: pb.ClaimRequest) -> Row:
    return (req.campaign_id, req.user_id, req.request_id, req.channel_id, req.device_id, req.client_ip)


def voucher_of(config: CampaignConfig, user_id: str, request_id: str, channel_id: str,
               voucher_id: str, granted_at_ms: int) -> Voucher:
    return (voucher_id, config.campaign_id, user_id, request_id, granted_at_ms, config.value_cents,
            config.min_spend_cents, config.category, channel_id)


def reply_for(config: CampaignConfig, row: Row, result: ItemResult, channel: str) -> Reply:
    code = result.code
    # A replay comes back only to the channel that was granted (another channel's gets
    # OTHER_CHANNEL), so the caller's channel is the one the grant recorded.
    if code == Code.GRANTED or code == Code.REPLAY:
        return (pb.OUTCOME_GRANTED, 0, "",
                voucher_of(config, row[1], row[2], channel, result.voucher_id, result.granted_at_ms))
    if code == Code.ALREADY_CLAIMED:
        return (pb.OUTCOME_ALREADY_CLAIMED, 0, "",
                voucher_of(config, row[1], "", "", result.voucher_id, result.granted_at_ms))
    if code == Code.NOT_STARTED:
        return (pb.OUTCOME_NOT_STARTED, max(0, config.starts_at_ms - now_ms()), "", None)
    if code == Code.NOT_ELIGIBLE:  # why rides in the time's place (claim.lua, categories.py)
        return (pb.OUTCOME_NOT_ELIGIBLE, 0, "", None, result.granted_at_ms)
    return (OUTCOMES[code], 0, "", None)


def check_row(row: Row) -> None:
    """validation.check_claim, with the five id checks made at once in the Cython codec."""
    if not claim_fields_ok(row[0], row[1], row[2], row[3], row[4]):
        v.check_claim(*row)  # raises InvalidInput naming the field
        raise AssertionError(f"claim_wire and validation disagree on {row!r}")
    if row[5]:
        v.check_ip("client_ip", row[5])


def pb_voucher(voucher: Voucher) -> pb.Voucher:
    return pb.Voucher(voucher_id=voucher[0], campaign_id=voucher[1], user_id=voucher[2],
                      request_id=voucher[3], granted_at_ms=voucher[4], value_cents=voucher[5],
                      min_spend_cents=voucher[6], category=voucher[7], channel_id=voucher[8])


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
    def _channel(config: CampaignConfig, asked: str) -> str:
        """The channel the claim runs as: the caller's own, which the campaign must be open to."""
        channel = auth.current().channel_for(asked)
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

    def _limited(self, config: CampaignConfig, row: Row, channel: str,
                 hints: tuple[str, str]) -> Reply | None:
        """The anti-scalper verdict (security/abuse.py): None to go on, else the reply refusing the claim."""
        if self.limits is None:
            return None
        device, ip = row[4] or hints[0], row[5] or hints[1]
        refused = self.limits.check(channel, row[1], device, ip, time.monotonic_ns())
        if refused is None:
            return None
        self.metrics.dropped(config.campaign_id, "abuse")
        if refused.outcome == RATE_LIMITED:
            return (pb.OUTCOME_RATE_LIMITED, refused.retry_after_ms, refused.reason, None)
        return (pb.OUTCOME_NOT_ELIGIBLE, 0, refused.reason, None, Ineligible.BLOCKED)

    def _start(self, config: CampaignConfig, row: Row, channel: str, hints: tuple[str, str]
               ) -> Reply | tuple[int, ClaimItem]:
        """The reply if the node can answer at once, else (shard, item): the claim to queue."""
        if config.starts_at_ms and now_ms() < config.starts_at_ms:
            return reply_for(config, row, NOT_STARTED, channel)
        limited = self._limited(config, row, channel, hints)
        if limited is not None:
            return limited
        item = ClaimItem(row[1], row[2], channel)
        snapshot = self.soldout.snapshot(config.campaign_id)
        if snapshot is not None:
            answer = snapshot.answer(config, item)
            if answer is not None:  # else only Redis can tell (soldout.py)
                return reply_for(config, row, answer, channel)
        shard = shard_of(row[1], config.shards)
        wait_ms = self.admission.admit(config, shard)
        if wait_ms:
            self.metrics.dropped(config.campaign_id, "admission_rate")
            return (pb.OUTCOME_RATE_LIMITED, wait_ms, "admission rate exceeded", None)
        return shard, item

    async def Claim(self, request: pb.ClaimRequest, context: grpc.aio.ServicerContext) -> bytes:
        """The reply goes out as claim_wire's bytes (add_to_server registers no serializer)."""
        try:
            row = row_of(request)
            check_row(row)
            hints = self._hints(context)
            config = await self._config(row[0])
            channel = self._channel(config, row[3])
            started = self._start(config, row, channel, hints)
            if len(started) == 2:  # (shard, item): ask Redis
                try:
                    future = self.batcher.submit(config, *started)  # type: ignore[misc]
                except Overloaded:
                    self.metrics.dropped(config.campaign_id, "overloaded")
                    raise
                reply = reply_for(config, row, await future, channel)
            else:
                reply = started  # type: ignore[assignment]
            self.metrics.claimed(config.campaign_id, reply[0])
            return encode_claim_reply(reply)
        except Exception as exc:
            await abort_for(context, exc, request.campaign_id, request.request_id)

    async def ClaimBatch(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Bytes in, bytes out (claim_wire): no protobuf object per claim."""
        rows: list[Row] = []
        try:
            try:
                rows, first_bad = decode_claim_batch(request)
            except WireError as exc:
                raise v.MalformedRequest(f"request is not a valid ClaimBatchRequest: {exc}") from None
            if not 1 <= len(rows) <= v.MAX_BATCH:
                raise v.InvalidInput(f"a batch holds 1 to {v.MAX_BATCH} claims, not {len(rows)}", "claims")
            bad = first_bad if first_bad >= 0 else len(rows)
            for i, row in enumerate(rows):  # the first bad item is reported, as check_claim words it
                if i == bad or row[5]:
                    try:
                        v.check_claim(*row)
                    except v.InvalidInput as exc:
                        raise v.InvalidInput(f"claims[{i}]: {exc}", f"claims[{i}].{exc.field}") from None
                    if i == bad:
                        raise AssertionError(f"claim_wire and validation disagree on {row!r}")
            hints = self._hints(context)
            configs = {cid: await self._config(cid) for cid in {row[0] for row in rows}}
            channels: list[str] = []
            allowed: dict[tuple[str, str], str] = {}  # (campaign, channel asked) -> channel it runs as
            for i, row in enumerate(rows):  # a forbidden item refuses the whole batch, before any write
                channel = allowed.get((row[0], row[3]))
                if channel is None:
                    try:
                        channel = allowed[row[0], row[3]] = self._channel(configs[row[0]], row[3])
                    except auth.PermissionDenied as exc:
                        raise auth.PermissionDenied(f"claims[{i}]: {exc}", exc.reason) from None
                channels.append(channel)
            replies: list[Reply | None] = []
            queued: list[tuple[CampaignConfig, int, ClaimItem]] = []
            for row, channel in zip(rows, channels, strict=True):
                config = configs[row[0]]
                started = self._start(config, row, channel, hints)
                if len(started) == 2:
                    queued.append((config, *started))  # type: ignore[arg-type]
                    replies.append(None)
                else:
                    replies.append(started)  # type: ignore[arg-type]
            if queued:
                try:
                    future = self.batcher.submit_group(queued)
                except Overloaded:
                    for config, _, _ in queued:
                        self.metrics.dropped(config.campaign_id, "overloaded")
                    raise
                results = iter(await future)
                for i, reply in enumerate(replies):
                    if reply is None:
                        row = rows[i]
                        replies[i] = reply_for(configs[row[0]], row, next(results), channels[i])
            claimed = self.metrics.claimed
            for row, reply in zip(rows, replies, strict=True):
                claimed(row[0], reply[0])  # type: ignore[index]
            return encode_claim_batch_reply(replies)
        except Exception as exc:
            ids = {row[0] for row in rows}
            await abort_for(context, exc, ids.pop() if len(ids) == 1 else "")

    async def GetClaim(self, request: pb.GetClaimRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetClaimResponse:
        async with grpc_errors(context):
            v.check_id("campaign_id", request.campaign_id, v.CAMPAIGN_ID)
            v.check_id("user_id", request.user_id, v.USER_ID)
            if request.request_id:
                v.check_id("request_id", request.request_id, v.REQUEST_ID)
            config = await self._config(request.campaign_id)
            records = scope.visible(auth.current(), await scope.user_records(
                self.inventory, self.campaigns, config, request.user_id, request.request_id))
            return pb.GetClaimResponse(found=bool(records), vouchers=[
                pb_voucher(voucher_of(config, r.user_id, r.request_id, r.channel_id, r.voucher_id,
                                      r.granted_at_ms))
                for r in records
            ])
        raise AssertionError("unreachable")

    async def WatchCampaigns(self, request: pb.WatchCampaignsRequest,
                             context: grpc.aio.ServicerContext) -> None:
        await self.watches.serve(request, context)  # node/watch.py (CampaignStates), set by server.py


def add_to_server(service: ClaimService, server: Any) -> None:
    """What the generated add_ClaimServiceServicer_to_server does, but Claim and ClaimBatch send the
    bytes claim_wire wrote (no response serializer) and ClaimBatch takes its request as bytes (no
    request deserializer: claim_wire decodes it, and its errors are INVALID_ARGUMENT)."""
    name = pb.DESCRIPTOR.services_by_name["ClaimService"].full_name
    handlers = {
        "Claim": grpc.unary_unary_rpc_method_handler(
            service.Claim, request_deserializer=pb.ClaimRequest.FromString),
        "ClaimBatch": grpc.unary_unary_rpc_method_handler(service.ClaimBatch),
        "GetClaim": grpc.unary_unary_rpc_method_handler(
            service.GetClaim, request_deserializer=pb.GetClaimRequest.FromString,
            response_serializer=pb.GetClaimResponse.SerializeToString),
        "WatchCampaigns": grpc.unary_stream_rpc_method_handler(
            service.WatchCampaigns, request_deserializer=pb.WatchCampaignsRequest.FromString,
            response_serializer=pb.WatchCampaignsResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
