"""RedeemService: redeem vouchers on an order at a merchant, and reverse a refunded order.

Thin, like ClaimService: validate, find the campaign, call claimcore.lifecycle.redemption,
map the result. Business outcomes travel in the reply; gRPC status codes are
for calls that failed (an unknown outcome, UNAVAILABLE, is safe to retry:
both calls are idempotent by (user_id, order_id)).
"""

from __future__ import annotations

import re

import grpc

from claimcore import validation as v
from claimcore.campaign import CampaignConfig
from claimcore.lifecycle import recycling
from claimcore.lifecycle.redemption import DETAILS, Redeemed, Redemptions
from claimcore.node.errors import grpc_errors
from claimcore.node.metrics import NodeMetrics
from claimcore.security import auth, scope
from claimcore.store.campaign_cache import CampaignCache
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc

VOUCHER_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")

class RedeemService(pb_grpc.RedeemServiceServicer):
    def __init__(self, redemptions: Redemptions, campaigns: CampaignCache,
                 metrics: NodeMetrics | None = None) -> None:
        self.redemptions = redemptions
        self.campaigns = campaigns
        self.metrics = metrics if metrics is not None else NodeMetrics()

    async def _config(self, campaign_id: str) -> CampaignConfig:
        v.check_id("campaign_id", campaign_id, v.CAMPAIGN_ID)
        return await self.campaigns.require(campaign_id)

    async def Redeem(self, request: pb.RedeemRequest, context: grpc.aio.ServicerContext) -> pb.RedeemResponse:
        async with grpc_errors(context):
            v.check_id("user_id", request.user_id, v.USER_ID)
            v.check_id("merchant_id", request.merchant_id, v.MERCHANT_ID)
            v.check_id("order_id", request.order_id, v.ORDER_ID)
            v.check_id("channel_id", request.channel_id, v.CHANNEL_ID)
            v.check_range("number of voucher_ids", len(request.voucher_ids), 1, v.MAX_VOUCHERS_PER_ORDER)
            for voucher in request.voucher_ids:
                v.check_id("voucher_id", voucher, VOUCHER_ID)
            v.check_range("order_amount_cents", request.order_amount_cents, 0, v.MAX_MONEY_CENTS)
            v.check_range("number of sn_codes", len(request.sn_codes), 0, v.MAX_SN_CODES)
            for sn in request.sn_codes:
                v.check_id("sn_code", sn, v.SN_CODE)
            config = await self._config(request.campaign_id)
            channel = auth.current().channel_for(request.channel_id)
            await self._require_issued(config, request.user_id, list(request.voucher_ids))
            if request.stacked:
                done = await self._redeem_stacked(config, request, channel)
            else:
                done = await self.redemptions.redeem(
                    config, request.user_id, list(request.voucher_ids), request.merchant_id, request.order_id,
                    request.order_amount_cents, list(request.sn_codes), channel)
            self.metrics.redeemed(config.campaign_id, done.code)
            detail = done.detail or DETAILS.get(done.code, "")
            if done.vouchers and done.code != pb.RedeemOutcome.REDEEM_OUTCOME_REDEEMED:
                detail = f"{', '.join(done.vouchers)}: {detail}"
            return pb.RedeemResponse(outcome=done.code, voucher_ids=done.vouchers,
                                  subsidy_cents=done.subsidy_cents, redeemed_at_ms=done.at_ms, detail=detail)
        raise AssertionError("unreachable")

    async def _require_issued(self, config: CampaignConfig, user_id: str, vouchers: list[str]) -> None:
        await scope.require_issued(auth.current(), self.redemptions.inventory, self.campaigns, config,
                                   user_id, vouchers)

    async def _redeem_stacked(self, config: CampaignConfig, request: pb.RedeemRequest,
                              channel: str) -> Redeemed:
        parts = [(config, list(request.voucher_ids))]
        for part in request.stacked:
            v.check_range("number of a stacked campaign's voucher_ids", len(part.voucher_ids), 1,
                          v.MAX_VOUCHERS_PER_ORDER)
            for voucher in part.voucher_ids:
                v.check_id("voucher_id", voucher, VOUCHER_ID)
            parts.append((await self._config(part.campaign_id), list(part.voucher_ids)))
            await self._require_issued(parts[-1][0], request.user_id, parts[-1][1])
        if len({c.campaign_id for c, _ in parts}) != len(parts):
            raise v.InvalidInput("stacked: a campaign_id appears twice in one order (or is the order's own "
                                 "campaign_id): list its vouchers once")
        if len({x for _, vs in parts for x in vs}) != sum(len(vs) for _, vs in parts):
            raise v.InvalidInput("voucher_ids repeats a voucher")
        return await self.redemptions.redeem_stacked(
            parts, request.user_id, request.merchant_id, request.order_id, request.order_amount_cents,
            list(request.sn_codes), channel)

    async def Reverse(self, request: pb.ReverseRequest,
                      context: grpc.aio.ServicerContext) -> pb.ReverseResponse:
        async with grpc_errors(context):
            v.check_id("user_id", request.user_id, v.USER_ID)
            v.check_id("order_id", request.order_id, v.ORDER_ID)
            config = await self._config(request.campaign_id)
            await scope.require_own_order(auth.current(), self.redemptions.inventory, config,
                                          request.user_id, request.order_id)
            done = await self.redemptions.reverse(config, request.user_id, request.order_id)
            return pb.ReverseResponse(outcome=done.code, returned_voucher_ids=done.returned,
                                   expired_voucher_ids=done.expired, reversed_at_ms=done.at_ms)
        raise AssertionError("unreachable")

    async def Release(self, request: pb.ReleaseRequest,
                      context: grpc.aio.ServicerContext) -> pb.ReleaseResponse:
        async with grpc_errors(context):
            v.check_id("user_id", request.user_id, v.USER_ID)
            v.check_id("voucher_id", request.voucher_id, VOUCHER_ID)
            config = await self._config(request.campaign_id)
            await self._require_issued(config, request.user_id, [request.voucher_id])
            released = await recycling.release(self.redemptions.inventory, self.campaigns, config,
                                               request.user_id, request.voucher_id)
            return pb.ReleaseResponse(released=released, detail="" if released else (
                "not released: not this user's voucher, in use, or expired"))
        raise AssertionError("unreachable")
