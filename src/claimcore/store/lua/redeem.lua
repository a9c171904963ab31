#!lua
-- redeem.lua: use one or more of a user's vouchers on one order, all or none.
--
-- KEYS[1]  cc:{C:s}:state    HASH epoch, moving; counters redeemed, subsidy
-- KEYS[2]  cc:{C:s}:users    HASH user -> "count|last_voucher|last_at|rid1,rid2,..."
-- KEYS[3]  cc:{C:s}:reqs     HASH "user|request_id" -> "voucher|granted_at|channel"
-- KEYS[4]  cc:{C:s}:redeem   HASH redemption records (keyspace.py)
-- KEYS[5]  cc:{C:s}:log      STREAM the shard's ledger
-- ARGV     epoch, now_ms (the node's clock; unused: every time here is this shard's Redis TIME),
--          user, order_id, merchant_id, order_amount, min_spend, value,
--          valid_for_ms, channel, sn_codes (comma-joined), the SN holds' trusted-until time
--          (Redis time; 0 = no SN codes; holds.lua), then the voucher ids (sorted)
-- Returns  { 1, subsidy, at, vouchers... }        1 REDEEMED (now, or earlier for this order)
--          { code, 0, 0, vouchers at fault... }  2 ALREADY_REDEEMED, 3 EXPIRED, 4 NOT_OWNER,
--                                                6 BELOW_MINIMUM_SPEND, 8 ORDER_ID_REUSED,
--                                                12 SN_HOLD_LOST: the SN holds are no longer
--                                                to be trusted
--          { 13, voucher, record }               13 STALE_PREPARE: a voucher is held by a
--                                                stacked order's stale preparation (stack.lua):
--                                                settle it, try again
--          { -2, epoch } / { -3, epoch }         STALE / MOVING, as claim.lua
-- The codes (store/replies.py RedeemCode) are RedeemOutcome numbers of claims.proto where they
-- are one; the node decides 5, 7, 9, 10 and 11 itself (lifecycle/redemption.py).
--
-- The user's shard holds their grants, so ownership, use and validity are one
-- slot, checked and changed in one step: two redemptions of one voucher cannot
-- both pass. Every check runs before any write, but one: a voucher found expired (by this
-- shard's Redis clock, never the node's) is recorded as expired and its stock given back in
-- the refusal's own step, so every later script follows that one decision. A voucher with a
-- recycle mark (E, X expired; L given up) is never redeemed, whatever any clock says.
-- The order id joins the user's order index "i:<user>" (the user's orders move with them in
-- a reshard: export.lua).

-- #include _epoch
-- #include _vouchers
-- #include _orders

local refused = epoch_refusal(KEYS[1], ARGV[1])
if refused then return refused end

local user, order = ARGV[3], ARGV[4]
local now, now_s = redis_now()
local amount, min_spend, value = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local valid_for = tonumber(ARGV[9])
local vouchers = {}
for i = 13, #ARGV do vouchers[#vouchers + 1] = ARGV[i] end
local wanted = table.concat(vouchers, ',')

local prior = redis.call('HGET', KEYS[4], order_field(user, order))
if prior then
  local state, used, _, _, subsidy, at = parse_order(prior)
  if state == 'R' and used == wanted then
    local out = { 1, tonumber(subsidy), tonumber(at) }
    for _, v in ipairs(vouchers) do out[#out + 1] = v end
    return out
  end
  return { 8, 0, 0 }
end

refused = refuse_vouchers(KEYS, user, vouchers, amount, min_spend, valid_for, now, now_s, STALE_MARGIN_MS,
  false)
if refused then return refused end
local sn_trusted_until = tonumber(ARGV[12])
if sn_trusted_until > 0 and now > sn_trusted_until then return { 12, 0, 0 } end

local subsidy = math.min(amount, value * #vouchers)
record_redemption(KEYS[1], KEYS[4], KEYS[5], user, order, wanted, ARGV[5], ARGV[6], subsidy, ARGV[10],
  ARGV[11], '', now_s)
index_order(KEYS[4], user, order)
local out = { 1, subsidy, now }
for _, v in ipairs(vouchers) do out[#out + 1] = v end
return out
