"""AdminService: create, inspect, list, pause, resume, archive and reshard campaigns; read their
ledger; register the merchants that may redeem their vouchers."""

from __future__ import annotations

import dataclasses

import grpc

from claimcore import validation as v
from claimcore.campaign import CampaignConfig
from claimcore.lifecycle import eligibility, ledger, recycling
from claimcore.lifecycle.merchants import Merchant
from claimcore.lifecycle.redemption import Redemptions
from claimcore.node.errors import abort_with, grpc_errors
from claimcore.store.campaign_cache import CampaignCache, CampaignNotFound
from claimcore.store.inventory import CampaignStatus, RedisInventory
from claimcore.store.replies import ArchiveCode, CampaignConflict
from claimcore.store.reshard import reshard
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(self, inventory: RedisInventory, campaigns: CampaignCache, redemptions: Redemptions) -> None:
        self.inventory = inventory
        self.campaigns = campaigns
        self.redemptions = redemptions

    async def status(self, campaign_id: str) -> CampaignStatus:
        v.check_id("campaign_id", campaign_id, v.CAMPAIGN_ID)
        status = await self.inventory.load_campaign(campaign_id)
        if status is None:
            raise CampaignNotFound(campaign_id)
        return status

    async def info(self, campaign_id: str) -> pb.CampaignInfo:
        status = await self.status(campaign_id)
        figures = await self.inventory.figures(status.config)
        return pb.CampaignInfo(
            campaign=status.config.to_proto(),
            paused=status.paused,
            granted=sum(figures.granted),
            remaining=figures.total_remaining,
            sold_out_at_ms=status.sold_out_at_ms,
            created_at_ms=status.created_at_ms,
            shards=[
                pb.ShardFigures(shard=s, remaining=r, granted=g, retired=s >= status.config.shards)
                for s, (r, g) in enumerate(zip(figures.remaining, figures.granted, strict=True))
            ],
            shard_epoch=status.config.epoch,
            resharding=status.resharding,
            held_for_rounds=figures.held,
            archived=status.archived,
        )

    async def CreateCampaign(self, request: pb.CreateCampaignRequest,
                             context: grpc.aio.ServicerContext) -> pb.CreateCampaignResponse:
        async with grpc_errors(context):
            if not request.HasField("campaign"):
                raise v.InvalidInput("campaign is required")
            config = CampaignConfig.from_proto(request.campaign)
            try:
                await self.inventory.create_campaign(config)
            except CampaignConflict:
                await abort_with(context, "CAMPAIGN_EXISTS",
                                 f"campaign {config.campaign_id} exists with another config",
                                 campaign_id=config.campaign_id)
            self.campaigns.put(config.campaign_id, config)
            return pb.CreateCampaignResponse(campaign=await self.info(config.campaign_id))
        raise AssertionError("unreachable")

    async def GetCampaign(self, request: pb.GetCampaignRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetCampaignResponse:
        async with grpc_errors(context):
            return pb.GetCampaignResponse(campaign=await self.info(request.campaign_id))
        raise AssertionError("unreachable")

    async def ListCampaigns(self, request: pb.ListCampaignsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListCampaignsResponse:
        async with grpc_errors(context):
            return pb.ListCampaignsResponse(
                campaign_ids=await self.inventory.list_campaigns(request.include_archived))
        raise AssertionError("unreachable")

    async def _set_paused(self, request: pb.PauseCampaignRequest | pb.ResumeCampaignRequest,
                          context: grpc.aio.ServicerContext, paused: bool) -> pb.CampaignInfo:
        async with grpc_errors(context):
            status = await self.status(request.campaign_id)
            # archive.lua refuses the resume of an archived paused campaign (the race with an
            # archive); one archived while ended or sold out is refused here.
            if (not paused and status.archived) or not await self.inventory.set_paused(status.config, paused):
                await abort_with(context, "CAMPAIGN_ARCHIVED",
                                 f"campaign {request.campaign_id} is archived: unarchive it first",
                                 campaign_id=request.campaign_id)
            return await self.info(request.campaign_id)
        raise AssertionError("unreachable")

    async def _set_archived(self, request: pb.ArchiveCampaignRequest | pb.UnarchiveCampaignRequest,
                            context: grpc.aio.ServicerContext, archived: bool) -> pb.CampaignInfo:
        async with grpc_errors(context):
            status = await self.status(request.campaign_id)
            code = await self.inventory.set_archived(status.config, archived)
            if code == ArchiveCode.MISSING:
                raise CampaignNotFound(request.campaign_id)
            if code == ArchiveCode.REFUSED:
                await abort_with(context, "CAMPAIGN_OPEN",
                                 f"campaign {request.campaign_id} is open: pause it first",
                                 campaign_id=request.campaign_id)
            return await self.info(request.campaign_id)
        raise AssertionError("unreachable")

    async def ArchiveCampaign(self, request: pb.ArchiveCampaignRequest,
                              context: grpc.aio.ServicerContext) -> pb.ArchiveCampaignResponse:
        return pb.ArchiveCampaignResponse(campaign=await self._set_archived(request, context, True))

    async def UnarchiveCampaign(self, request: pb.UnarchiveCampaignRequest,
                                context: grpc.aio.ServicerContext) -> pb.UnarchiveCampaignResponse:
        return pb.UnarchiveCampaignResponse(campaign=await self._set_archived(request, context, False))

    async def PauseCampaign(self, request: pb.PauseCampaignRequest,
                            context: grpc.aio.ServicerContext) -> pb.PauseCampaignResponse:
        return pb.PauseCampaignResponse(campaign=await self._set_paused(request, context, True))

    async def ResumeCampaign(self, request: pb.ResumeCampaignRequest,
                             context: grpc.aio.ServicerContext) -> pb.ResumeCampaignResponse:
        return pb.ResumeCampaignResponse(campaign=await self._set_paused(request, context, False))

    async def Reshard(self, request: pb.ReshardRequest,
                      context: grpc.aio.ServicerContext) -> pb.ReshardResponse:
        async with grpc_errors(context):
            v.check_id("campaign_id", request.campaign_id, v.CAMPAIGN_ID)
            done = await reshard(self.inventory, request.campaign_id, request.shards)
            status = await self.status(request.campaign_id)
            self.campaigns.put(request.campaign_id, status.config)
            return pb.ReshardResponse(
                campaign=await self.info(request.campaign_id), from_shards=done.from_shards,
                to_shards=done.to_shards, shard_epoch=done.epoch, moved_users=done.moved_users,
                moved_records=done.moved_records, moved_stock=done.moved_stock,
                frozen_ms=done.frozen_ms, took_ms=done.took_ms, resumed=done.resumed,
            )
        raise AssertionError("unreachable")

    async def ExportEvents(self, request: pb.ExportEventsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ExportEventsResponse:
        async with grpc_errors(context):
            config = (await self.status(request.campaign_id)).config
            events, cursor, more = await ledger.read_page(
                self.inventory, config, request.cursor, request.limit or ledger.DEFAULT_PAGE,
                request.time_order)
            return pb.ExportEventsResponse(
                events=[pb.Event(**dataclasses.asdict(e)) for e in events], next_cursor=cursor, more=more)
        raise AssertionError("unreachable")

    async def Reconcile(self, request: pb.ReconcileRequest,
                        context: grpc.aio.ServicerContext) -> pb.ReconcileResponse:
        async with grpc_errors(context):
            config = (await self.status(request.campaign_id)).config
            figures, events = await ledger.reconcile(self.inventory, config)
            return pb.ReconcileResponse(ok=all(f.ok for f in figures), events=events, figures=[
                pb.ReconcileFigure(name=f.name, from_ledger=f.from_ledger, live=f.live, ok=f.ok)
                for f in figures])
        raise AssertionError("unreachable")

    async def RegisterMerchant(self, request: pb.RegisterMerchantRequest,
                               context: grpc.aio.ServicerContext) -> pb.RegisterMerchantResponse:
        async with grpc_errors(context):
            given = request.merchant
            merchant = Merchant(given.campaign_id, given.merchant_id, given.name, given.category,
                                given.region)
            merchant.check()
            config = (await self.status(given.campaign_id)).config
            await self.redemptions.merchants.register(config, merchant)
            return pb.RegisterMerchantResponse(merchant=given)
        raise AssertionError("unreachable")

    async def ListMerchants(self, request: pb.ListMerchantsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListMerchantsResponse:
        async with grpc_errors(context):
            await self.status(request.campaign_id)
            found = await self.redemptions.merchants.of_campaign(request.campaign_id, fresh=True)
            return pb.ListMerchantsResponse(merchants=[
                pb.Merchant(**dataclasses.asdict(m)) for _, m in sorted(found.items())])
        raise AssertionError("unreachable")

    async def UpdateEligibility(self, request: pb.UpdateEligibilityRequest,
                                context: grpc.aio.ServicerContext) -> pb.UpdateEligibilityResponse:
        async with grpc_errors(context):
            config = (await self.status(request.campaign_id)).config
            records = [
                eligibility.Eligibility(r.user_id, r.allowed, r.denied, r.region, tuple(r.tags), r.remove)
                for r in request.records]
            updated = await eligibility.update(self.inventory, self.campaigns, config, records)
            return pb.UpdateEligibilityResponse(updated=updated)
        raise AssertionError("unreachable")

    async def RecycleExpired(self, request: pb.RecycleExpiredRequest,
                             context: grpc.aio.ServicerContext) -> pb.RecycleExpiredResponse:
        async with grpc_errors(context):
            config = (await self.status(request.campaign_id)).config
            recycled = await recycling.recycle_expired(self.inventory, self.campaigns, config)
            return pb.RecycleExpiredResponse(recycled=recycled)
        raise AssertionError("unreachable")
