"""Redemption (核销) and reversal of vouchers, and the merchants allowed to redeem.

A voucher is redeemed on its user's shard, where the user's grant records
are: redeem.lua checks ownership, use, validity and minimum spend and
records the order in one atomic step, so two redemptions of one voucher can
never both pass, and a reversal racing a redemption sees it whole or not at
all. Both scripts append to the shard's ledger in the same step.

Merchants are registered per campaign in the campaign's hash slot
(`cc:{C}:merchants`). The node checks the merchant before calling
redeem.lua, from a cache that lives MERCHANT_TTL_S: a merchant registered
through one node can redeem through any node within that time. Then, if the
node has one, the external verifier is asked (verifier.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from claimcore import validation as v
from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.lifecycle.snregistry import (
    HOLD_MS,
    MARGIN_MS,
    SnHoldLost,
    SnRegistry,
    owner_of,
    stack_decided,
    stack_owner,
)
from claimcore.lifecycle.verifier import Verifier, VerifierUnavailable, VerifyRequest
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import SN_BUCKETS, merchants_key, shard_keys, stack_key
from claimcore.store.replies import refusal

MERCHANT_TTL_S = 1.0


class RedeemCode:
    """redeem.lua's and reverse.lua's result codes (see their headers)."""

    REDEEMED = 1
    ALREADY_REDEEMED = 2
    EXPIRED = 3
    NOT_OWNER = 4
    MERCHANT_NOT_ALLOWED = 5   # decided by the node
    BELOW_MINIMUM_SPEND = 6
    NOT_STACKABLE = 7          # decided by the node
    ORDER_ID_REUSED = 8
    NOT_VERIFIED = 9              # decided by the external verifier
    VERIFICATION_UNAVAILABLE = 10  # the verifier did not answer in time
    SN_ALREADY_SUBSIDISED = 11     # decided with the SN registry (snregistry.py)
    SN_HOLD_LOST = 12              # redeem.lua: the SN holds are no longer trusted
    STALE_PREPARE = 13             # a voucher is held by a stacked order's stale preparation
    COMMITTED_BEFORE = 9           # stack.lua prepare: this part was committed already (a replay)
    REVERSED = 1
    ORDER_NOT_FOUND = 2


# Why a redemption was refused, for the reply's detail.
DETAILS = {
    RedeemCode.ALREADY_REDEEMED: "used by another order",
    RedeemCode.EXPIRED: "past its validity",
    RedeemCode.NOT_OWNER: "not a voucher of this user in this campaign",
    RedeemCode.BELOW_MINIMUM_SPEND: "order amount under the minimum spend of the vouchers",
    RedeemCode.ORDER_ID_REUSED: "this order id was redeemed with other vouchers, or reversed",
}


@dataclass(frozen=True)
class Merchant:
    campaign_id: str
    merchant_id: str
    name: str = ""
    category: str = ""
    region: str = ""

    def check(self) -> None:
        v.check_id("campaign_id", self.campaign_id, v.CAMPAIGN_ID)
        v.check_id("merchant_id", self.merchant_id, v.MERCHANT_ID)
        v.check_id("category", self.category, v.CATEGORY)
        if self.region:
            v.check_id("region", self.region, v.REGION)
        if len(self.name) > v.MAX_NAME or any(ord(c) < 32 or c == "|" for c in self.name):
            raise v.InvalidInput(f"name must be at most {v.MAX_NAME} printable characters, no '|'")

    def allowed_in(self, config: CampaignConfig) -> str:
        """'' if this merchant may redeem the campaign's vouchers, else why not."""
        if config.category and self.category != config.category:
            return f"merchant category {self.category!r} is not the campaign's {config.category!r}"
        if config.regions and self.region not in config.regions:
            return f"merchant region {self.region!r} is not among the campaign's regions"
        return ""


@dataclass(frozen=True)
class Redeemed:
    code: int
    vouchers: list[str]      # REDEEMED: the vouchers used; otherwise the ones at fault
    subsidy_cents: int = 0
    at_ms: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Reversed:
    code: int
    returned: list[str]
    expired: list[str]
    at_ms: int = 0


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


async def stack_op(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig, op: str,
                   user_id: str, order_id: str, instance: str, args: list[Any]) -> list[Any]:
    """stack.lua's `op` on the user's shard of one campaign, for one stacked-order instance."""
    async def call(c: CampaignConfig) -> list[Any]:
        shard = shard_of(user_id, c.shards)
        keys = list(shard_keys(c.campaign_id, shard).redemption)
        reply = await scripts.STACK(inventory.redis, keys,
                                    [op, c.epoch, now_ms(), user_id, order_id, instance, *args])
        if int(reply[0]) < 0:
            raise refusal(c.campaign_id, shard, reply)
        return reply

    return await campaigns.on_live_map(config, call)


async def settle_prepared(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig,
                          user_id: str, record: str) -> None:
    """A voucher prepared ("P|order|deadline|instance") by a stacked order whose deadline passed:
    commit its part if that very order instance was decided, else abort it. Found by a redemption
    or preparation that wants the voucher, and by the expiry sweep (recycling.py)."""
    _, stale_order, _, instance = record.split("|", 3)
    decided = await stack_decided(inventory, user_id, stale_order, record)
    await stack_op(inventory, campaigns, config, "commit" if decided else "abort", user_id, stale_order,
                   instance, [])


class Redemptions:
    def __init__(self, inventory: RedisInventory, campaigns: CampaignCache,
                 verifier: Verifier | None = None) -> None:
        self.inventory = inventory
        self.campaigns = campaigns
        self.verifier = verifier
        self.sns = SnRegistry(inventory)
        self._merchants: dict[str, tuple[float, dict[str, Merchant]]] = {}

    # ------------------------------------------------------------ merchants

    async def register_merchant(self, config: CampaignConfig, merchant: Merchant) -> Merchant:
        merchant.check()
        why_not = merchant.allowed_in(config)
        if why_not:
            raise v.InvalidInput(why_not)
        await self.inventory.redis.hset(merchants_key(config.campaign_id), merchant.merchant_id,
                                        f"{merchant.category}|{merchant.region}|{merchant.name}")
        self._merchants.pop(config.campaign_id, None)
        return merchant

    async def merchants(self, campaign_id: str, fresh: bool = False) -> dict[str, Merchant]:
        cached = self._merchants.get(campaign_id)
        if cached and not fresh and cached[0] > time.monotonic():
            return cached[1]
        raw = await self.inventory.redis.hgetall(merchants_key(campaign_id))
        found = {}
        for merchant_id, record in raw.items():
            category, region, name = record.split("|", 2)
            found[merchant_id] = Merchant(campaign_id, merchant_id, name, category, region)
        self._merchants[campaign_id] = (time.monotonic() + MERCHANT_TTL_S, found)
        return found

    # ------------------------------------------------------------ redeem and reverse

    async def redeem(self, config: CampaignConfig, user_id: str, voucher_ids: list[str], merchant_id: str,
                     order_id: str, amount_cents: int, sn_codes: list[str], channel_id: str) -> Redeemed:
        vouchers = sorted(set(voucher_ids))
        if len(vouchers) != len(voucher_ids):
            raise v.InvalidInput("voucher_ids repeats a voucher")
        if len(vouchers) > config.max_vouchers_per_order:
            return Redeemed(RedeemCode.NOT_STACKABLE, vouchers, detail=(
                f"at most {config.max_vouchers_per_order} voucher(s) of this campaign per order"))
        merchant = (await self.merchants(config.campaign_id)).get(merchant_id)
        if merchant is None:
            return Redeemed(RedeemCode.MERCHANT_NOT_ALLOWED, [],
                            detail=f"merchant {merchant_id} is not registered for this campaign")
        why_not = merchant.allowed_in(config)
        if why_not:
            return Redeemed(RedeemCode.MERCHANT_NOT_ALLOWED, [], detail=why_not)
        # A replay of a recorded order is neither verified nor SN-held again; the read is only
        # worth a round trip when there is a verifier or SN codes.
        recorded = (self.verifier is not None or bool(sn_codes)) and \
            await self._order_recorded(config, user_id, order_id)
        if self.verifier is not None and not recorded:
            refused = await self._verify(VerifyRequest(
                config.campaign_id, config.category, user_id, vouchers, merchant_id, order_id, amount_cents,
                list(sn_codes)))
            if refused is not None:
                return refused
        owner, held, trusted_until = owner_of(config.campaign_id, user_id, order_id), [], 0
        token = ""
        if sn_codes and not recorded:
            trusted_until, taken, token = await self.sns.hold(owner, list(sn_codes))
            if taken:
                return Redeemed(RedeemCode.SN_ALREADY_SUBSIDISED, [],
                                detail=f"{', '.join(taken)}: subsidised already, or being subsidised")
            held = list(sn_codes)

        async def call(c: CampaignConfig) -> Any:
            shard = shard_of(user_id, c.shards)
            keys = list(shard_keys(c.campaign_id, shard).redemption)
            reply = await scripts.REDEEM(self.inventory.redis, keys, [
                c.epoch, now_ms(), user_id, order_id, merchant_id, amount_cents, c.min_spend_cents,
                c.value_cents, c.valid_for_ms, channel_id, ",".join(sn_codes), trusted_until, *vouchers])
            if int(reply[0]) < 0:
                raise refusal(c.campaign_id, shard, reply)
            return reply

        # If this raises, the outcome is unknown: the holds stay until their deadline, and
        # whoever wants those SN codes next settles them from this order's record.
        reply = await self.campaigns.on_live_map(config, call)
        if int(reply[0]) == RedeemCode.STALE_PREPARE:  # settle the dead stacked order, then once more
            await settle_prepared(self.inventory, self.campaigns, config, user_id, str(reply[2]))
            reply = await self.campaigns.on_live_map(config, call)
        code = int(reply[0])
        if held:
            if code == RedeemCode.REDEEMED:
                await self.sns.commit(owner, held)
            else:  # only this attempt's holds: a use recorded by an earlier attempt stays
                await self.sns.drop(owner, token, held)
        if code == RedeemCode.SN_HOLD_LOST:
            raise SnHoldLost(f"order {order_id}: SN holds expired before it was recorded; retry")
        return Redeemed(code, [str(x) for x in reply[3:]], int(reply[1]), int(reply[2]))

    # ------------------------------------------------------------ stacking across campaigns

    async def redeem_stacked(self, parts: list[tuple[CampaignConfig, list[str]]], user_id: str,
                             merchant_id: str, order_id: str, amount_cents: int, sn_codes: list[str],
                             channel_id: str) -> Redeemed:
        """One order using vouchers of several campaigns: all parts redeemed, or none.

        Two phases across the campaigns' hash slots: prepare every part (stack.lua marks
        its vouchers P until a deadline), decide once (holds.lua in the stack registry,
        only before deadline - margin), then commit every part; on any refusal abort the
        prepared ones. A part left prepared by a node that died is settled by whoever
        meets it after deadline + margin, from the decision: committed if decided, else
        aborted.
        """
        for config, vouchers in parts:
            if not config.stackable:
                return Redeemed(RedeemCode.NOT_STACKABLE, vouchers, detail=(
                    f"campaign {config.campaign_id}'s vouchers may not be combined with others"))
            if len(vouchers) > config.max_vouchers_per_order:
                return Redeemed(RedeemCode.NOT_STACKABLE, vouchers, detail=(
                    f"at most {config.max_vouchers_per_order} voucher(s) of {config.campaign_id} per order"))
            merchant = (await self.merchants(config.campaign_id)).get(merchant_id)
            why_not = (f"merchant {merchant_id} is not registered for campaign {config.campaign_id}"
                       if merchant is None else merchant.allowed_in(config))
            if why_not:
                return Redeemed(RedeemCode.MERCHANT_NOT_ALLOWED, [], detail=why_not)
        primary = parts[0][0]
        every_voucher = [v for _, vouchers in parts for v in vouchers]
        if self.verifier is not None:
            refused = await self._verify(VerifyRequest(
                primary.campaign_id, primary.category, user_id, every_voucher, merchant_id, order_id,
                amount_cents, list(sn_codes)))
            if refused is not None:
                return refused
        owner, held = owner_of(primary.campaign_id, user_id, order_id), []
        trusted_until, token = 0, ""
        # The order's identity: a retry of the same order is the same instance; another order
        # reusing the id is not, and can neither commit nor settle this one's parts.
        instance = hashlib.sha1(repr((user_id, order_id, merchant_id, amount_cents, sorted(sn_codes), sorted(
            (c.campaign_id, sorted(v)) for c, v in parts))).encode()).hexdigest()[:16]
        if sn_codes:
            trusted_until, taken, token = await self.sns.hold(owner, list(sn_codes))
            if taken:
                return Redeemed(RedeemCode.SN_ALREADY_SUBSIDISED, [],
                                detail=f"{', '.join(taken)}: subsidised already, or being subsidised")
            held = list(sn_codes)
        deadline = await self.inventory.redis_time_ms() + HOLD_MS  # Redis time, as every hold's
        if trusted_until:
            deadline = min(deadline, trusted_until)
        args = [merchant_id, amount_cents, "", "", "", channel_id, ",".join(sn_codes), deadline, MARGIN_MS]
        replies = await asyncio.gather(*(
            self._prepare(c, user_id, order_id, instance, sorted(v), args) for c, v in parts))
        refusal_ = next(((c, r) for (c, _), r in zip(parts, replies, strict=True)
                         if int(r[0]) not in (1, RedeemCode.COMMITTED_BEFORE)), None)
        if refusal_ is not None:
            await self._abort(parts, user_id, order_id, instance)
            if held:
                await self.sns.drop(owner, token, held)
            config, reply = refusal_
            return Redeemed(int(reply[0]), [str(x) for x in reply[3:]],
                            detail=f"campaign {config.campaign_id}: {DETAILS.get(int(reply[0]), '')}")
        decision = stack_owner(user_id, order_id, instance)
        decided = await scripts.HOLDS(self.inventory.redis, [stack_key(shard_of(decision, SN_BUCKETS))],
                                      ["decide", decision, "", deadline, MARGIN_MS, decision])
        if int(decided[0]) != 0:
            await self._abort(parts, user_id, order_id, instance)
            if held:
                await self.sns.drop(owner, token, held)
            raise SnHoldLost(f"order {order_id}: prepared too late to decide; retry")
        await asyncio.gather(*(stack_op(self.inventory, self.campaigns, c, "commit", user_id, order_id,
                                        instance, []) for c, _ in parts))
        if held:
            await self.sns.commit(owner, held)
        return Redeemed(RedeemCode.REDEEMED, every_voucher, sum(int(r[1]) for r in replies), now_ms())

    async def _prepare(self, config: CampaignConfig, user_id: str, order_id: str, instance: str,
                       vouchers: list[str], args: list[Any]) -> list[Any]:
        args = list(args)
        args[2:5] = [config.min_spend_cents, config.value_cents, config.valid_for_ms]
        prepare = [*args, *vouchers]
        reply = await stack_op(self.inventory, self.campaigns, config, "prepare", user_id, order_id,
                               instance, prepare)
        if int(reply[0]) == RedeemCode.STALE_PREPARE:
            await settle_prepared(self.inventory, self.campaigns, config, user_id, str(reply[2]))
            reply = await stack_op(self.inventory, self.campaigns, config, "prepare", user_id, order_id,
                                   instance, prepare)
        return reply

    async def _abort(self, parts: list[tuple[CampaignConfig, list[str]]], user_id: str, order_id: str,
                     instance: str) -> None:
        await asyncio.gather(*(stack_op(self.inventory, self.campaigns, c, "abort", user_id, order_id,
                                        instance, []) for c, _ in parts))

    async def _order_recorded(self, config: CampaignConfig, user_id: str, order_id: str) -> bool:
        """Whether this order was redeemed (or reversed) already: a replay is not verified again,
        nor are its SN codes held again. (Read from the user's shard by the node's map; during a
        reshard that may miss, which costs only a verification and a hold.)"""
        redeem_key = shard_keys(config.campaign_id, shard_of(user_id, config.shards)).redeem
        return bool(await self.inventory.redis.hexists(redeem_key, f"o:{user_id}|{order_id}"))

    async def _verify(self, request: VerifyRequest) -> Redeemed | None:
        """None to go on; else the refusal."""
        assert self.verifier is not None
        try:
            verdict = await self.verifier.verify(request)
        except VerifierUnavailable as exc:
            return Redeemed(RedeemCode.VERIFICATION_UNAVAILABLE, [], detail=str(exc))
        if not verdict.ok:
            return Redeemed(RedeemCode.NOT_VERIFIED, [], detail=verdict.reason or "refused by the verifier")
        return None

    async def reverse(self, config: CampaignConfig, user_id: str, order_id: str) -> Reversed:
        async def call(c: CampaignConfig) -> Any:
            shard = shard_of(user_id, c.shards)
            keys = list(shard_keys(c.campaign_id, shard).redemption)
            reply = await scripts.REVERSE(self.inventory.redis, keys,
                                          [c.epoch, now_ms(), user_id, order_id, c.valid_for_ms])
            if int(reply[0]) < 0:
                raise refusal(c.campaign_id, shard, reply)
            return reply

        reply = await self.campaigns.on_live_map(config, call)
        if int(reply[0]) != RedeemCode.REVERSED:
            return Reversed(int(reply[0]), [], [])
        sns = _split(reply[4])
        if sns:  # the refunded products may be subsidised again
            await self.sns.release(owner_of(config.campaign_id, user_id, order_id), sns)
        return Reversed(RedeemCode.REVERSED, _split(reply[2]), _split(reply[3]), int(reply[1]))
