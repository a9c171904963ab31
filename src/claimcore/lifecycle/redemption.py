"""Redemption (核销) and reversal of vouchers.

A voucher is redeemed on its user's shard, where the user's grant records
are: redeem.lua checks ownership, use, validity and minimum spend and
records the order in one atomic step, so two redemptions of one voucher can
never both pass, and a reversal racing a redemption sees it whole or not at
all. Both scripts append to the shard's ledger in the same step.

Before redeem.lua, the node checks the merchant (merchants.py); then, if the
node has one, the external verifier is asked (verifier.py), and the order's SN
codes are held (snregistry.py). An order stacking vouchers of several campaigns
passes the same checks per campaign, then is redeemed all or none in two phases
(stacking.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from claimcore import validation as v
from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.clock import now_ms
from claimcore.lifecycle.merchants import Merchants
from claimcore.lifecycle.snregistry import SnHoldLost, SnRegistry, owner_of
from claimcore.lifecycle.stacking import Part, StackedOrder, order_instance, settle_prepared
from claimcore.lifecycle.verifier import Verifier, VerifierUnavailable, VerifyRequest
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import shard_keys
from claimcore.store.replies import RedeemCode, ReverseCode, refusal
from claimcore.v1.claims_pb2 import RedeemOutcome

# Why a redemption was refused, for the reply's detail.
DETAILS = {
    RedeemCode.ALREADY_REDEEMED: "used by another order",
    RedeemCode.EXPIRED: "past its validity",
    RedeemCode.NOT_OWNER: "not a voucher of this user in this campaign",
    RedeemCode.BELOW_MINIMUM_SPEND: "order amount under the minimum spend of the vouchers",
    RedeemCode.ORDER_ID_REUSED: "this order id was redeemed with other vouchers, or reversed",
}


@dataclass(frozen=True)
class Redeemed:
    code: int                # a RedeemOutcome: redeem.lua's or stack.lua's code, or one decided here
    vouchers: list[str]      # REDEEMED: the vouchers used; otherwise the ones at fault
    subsidy_cents: int = 0
    at_ms: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Reversed:
    code: int                # reverse.lua's (ReverseCode)
    returned: list[str]
    expired: list[str]
    at_ms: int = 0


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


class Redemptions:
    """A node's redemptions and reversals, with its merchant and SN registries."""

    def __init__(self, inventory: RedisInventory, campaigns: CampaignCache,
                 verifier: Verifier | None = None) -> None:
        self.inventory = inventory
        self.campaigns = campaigns
        self.verifier = verifier
        self.sns = SnRegistry(inventory)
        self.merchants = Merchants(inventory)

    # ------------------------------------------------------------ redeem and reverse

    async def redeem(self, config: CampaignConfig, user_id: str, voucher_ids: list[str], merchant_id: str,
                     order_id: str, amount_cents: int, sn_codes: list[str], channel_id: str) -> Redeemed:
        vouchers = sorted(set(voucher_ids))
        if len(vouchers) != len(voucher_ids):
            raise v.InvalidInput("voucher_ids repeats a voucher")
        if len(vouchers) > config.max_vouchers_per_order:
            return Redeemed(RedeemOutcome.REDEEM_OUTCOME_NOT_STACKABLE, vouchers, detail=(
                f"at most {config.max_vouchers_per_order} voucher(s) of this campaign per order"))
        merchant = (await self.merchants.of_campaign(config.campaign_id)).get(merchant_id)
        if merchant is None:
            return Redeemed(RedeemOutcome.REDEEM_OUTCOME_MERCHANT_NOT_ALLOWED, [],
                            detail=f"merchant {merchant_id} is not registered for this campaign")
        why_not = merchant.allowed_in(config)
        if why_not:
            return Redeemed(RedeemOutcome.REDEEM_OUTCOME_MERCHANT_NOT_ALLOWED, [], detail=why_not)
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
                return Redeemed(RedeemOutcome.REDEEM_OUTCOME_SN_ALREADY_SUBSIDISED, [],
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

    async def redeem_stacked(self, parts: list[Part], user_id: str, merchant_id: str, order_id: str,
                             amount_cents: int, sn_codes: list[str], channel_id: str) -> Redeemed:
        """One order using vouchers of several campaigns: all parts redeemed, or none.

        Each campaign's rules apply to its part, the verifier and the SN codes to the whole
        order; then its parts are prepared, decided and committed (or aborted) as stacking.py
        says.
        """
        for config, vouchers in parts:
            if not config.stackable:
                return Redeemed(RedeemOutcome.REDEEM_OUTCOME_NOT_STACKABLE, vouchers, detail=(
                    f"campaign {config.campaign_id}'s vouchers may not be combined with others"))
            if len(vouchers) > config.max_vouchers_per_order:
                return Redeemed(RedeemOutcome.REDEEM_OUTCOME_NOT_STACKABLE, vouchers, detail=(
                    f"at most {config.max_vouchers_per_order} voucher(s) of {config.campaign_id} per order"))
            merchant = (await self.merchants.of_campaign(config.campaign_id)).get(merchant_id)
            why_not = (f"merchant {merchant_id} is not registered for campaign {config.campaign_id}"
                       if merchant is None else merchant.allowed_in(config))
            if why_not:
                return Redeemed(RedeemOutcome.REDEEM_OUTCOME_MERCHANT_NOT_ALLOWED, [], detail=why_not)
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
        order = StackedOrder(self.inventory, self.campaigns, parts, user_id, order_id, order_instance(
            parts, user_id, order_id, merchant_id, amount_cents, sn_codes))
        if sn_codes:
            trusted_until, taken, token = await self.sns.hold(owner, list(sn_codes))
            if taken:
                return Redeemed(RedeemOutcome.REDEEM_OUTCOME_SN_ALREADY_SUBSIDISED, [],
                                detail=f"{', '.join(taken)}: subsidised already, or being subsidised")
            held = list(sn_codes)
        deadline = await order.deadline(trusted_until)
        replies, refused_part = await order.prepare(merchant_id, amount_cents, channel_id, sn_codes, deadline)
        if refused_part is not None:
            await order.abort()
            if held:
                await self.sns.drop(owner, token, held)
            config, reply = refused_part
            return Redeemed(int(reply[0]), [str(x) for x in reply[3:]],
                            detail=f"campaign {config.campaign_id}: {DETAILS.get(int(reply[0]), '')}")
        if not await order.decide(deadline):
            await order.abort()
            if held:
                await self.sns.drop(owner, token, held)
            raise SnHoldLost(f"order {order_id}: prepared too late to decide; retry")
        await order.commit()
        if held:
            await self.sns.commit(owner, held)
        return Redeemed(RedeemOutcome.REDEEM_OUTCOME_REDEEMED, every_voucher, sum(int(r[1]) for r in replies),
                        now_ms())

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
            return Redeemed(RedeemOutcome.REDEEM_OUTCOME_VERIFICATION_UNAVAILABLE, [], detail=str(exc))
        if not verdict.ok:
            return Redeemed(RedeemOutcome.REDEEM_OUTCOME_NOT_VERIFIED, [],
                            detail=verdict.reason or "refused by the verifier")
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
        if int(reply[0]) != ReverseCode.REVERSED:
            return Reversed(int(reply[0]), [], [])
        sns = _split(reply[4])
        if sns:  # the refunded products may be subsidised again
            await self.sns.release(owner_of(config.campaign_id, user_id, order_id), sns)
        return Reversed(ReverseCode.REVERSED, _split(reply[2]), _split(reply[3]), int(reply[1]))
