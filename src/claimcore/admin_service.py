"""AdminService: create, inspect, list, pause and resume campaigns."""

from __future__ import annotations

import grpc

from claimcore import validation as v
from claimcore.campaign import CampaignConfig
from claimcore.campaigns import CampaignCache, CampaignNotFound
from claimcore.claim_service import grpc_errors
from claimcore.inventory import CampaignConflict, RedisInventory
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(self, inventory: RedisInventory, campaigns: CampaignCache) -> None:
        self.inventory = inventory
        self.campaigns = campaigns

    async def info(self, campaign_id: str) -> pb.CampaignInfo:
        v.check_id("campaign_id", campaign_id, v.CAMPAIGN_ID)
        status = await self.inventory.load_campaign(campaign_id)
        if status is None:
            raise CampaignNotFound(campaign_id)
        figures = await self.inventory.figures(status.config)
        return pb.CampaignInfo(
            campaign=status.config.to_proto(),
            paused=status.paused,
            granted=sum(figures.granted),
            remaining=figures.total_remaining,
            sold_out_at_ms=status.sold_out_at_ms,
            created_at_ms=status.created_at_ms,
            shards=[
                pb.ShardFigures(shard=s, remaining=r, granted=g)
                for s, (r, g) in enumerate(zip(figures.remaining, figures.granted, strict=True))
            ],
        )

    async def CreateCampaign(self, request: pb.CreateCampaignRequest,
                             context: grpc.aio.ServicerContext) -> pb.CampaignInfo:
        async with grpc_errors(context):
            if not request.HasField("campaign"):
                raise v.InvalidInput("campaign is required")
            config = CampaignConfig.from_proto(request.campaign)
            try:
                await self.inventory.create_campaign(config)
            except CampaignConflict:
                await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                    f"campaign {config.campaign_id} exists with another config")
            self.campaigns.put(config.campaign_id, config)
            return await self.info(config.campaign_id)
        raise AssertionError("unreachable")

    async def GetCampaign(self, request: pb.GetCampaignRequest,
                          context: grpc.aio.ServicerContext) -> pb.CampaignInfo:
        async with grpc_errors(context):
            return await self.info(request.campaign_id)
        raise AssertionError("unreachable")

    async def ListCampaigns(self, request: pb.ListCampaignsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListCampaignsReply:
        async with grpc_errors(context):
            return pb.ListCampaignsReply(campaign_ids=await self.inventory.list_campaigns())
        raise AssertionError("unreachable")

    async def _set_paused(self, request: pb.GetCampaignRequest,
                          context: grpc.aio.ServicerContext, paused: bool) -> pb.CampaignInfo:
        async with grpc_errors(context):
            info = await self.info(request.campaign_id)
            await self.inventory.set_paused(CampaignConfig.from_proto(info.campaign), paused)
            return await self.info(request.campaign_id)
        raise AssertionError("unreachable")

    async def PauseCampaign(self, request: pb.GetCampaignRequest,
                            context: grpc.aio.ServicerContext) -> pb.CampaignInfo:
        return await self._set_paused(request, context, True)

    async def ResumeCampaign(self, request: pb.GetCampaignRequest,
                             context: grpc.aio.ServicerContext) -> pb.CampaignInfo:
        return await self._set_paused(request, context, False)
