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

-- #include _vouchers

local st = redis.call('HMGET', KEYS[1], 'epoch', 'moving')
local epoch, node_epoch = tonumber(st[1] or '0'), tonumber(ARGV[1])
if node_epoch < epoch then return { -2, epoch } end
if node_epoch > epoch or st[2] == '1' then return { -3, epoch } end

local STALE_MARGIN_MS = 1000  -- the clock margin of every hold (snregistry.MARGIN_MS)
local user, order = ARGV[3], ARGV[4]
local now, now_s = redis_now()
local amount, min_spend, value = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local valid_for = tonumber(ARGV[9])
local vouchers = {}
for i = 13, #ARGV do vouchers[#vouchers + 1] = ARGV[i] end
local wanted = table.concat(vouchers, ',')

local okey = 'o:' .. user .. '|' .. order
local prior = redis.call('HGET', KEYS[4], okey)
if prior then
  local state, used, _, _, subsidy, at = string.match(prior, '^(%a)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
  if state == 'R' and used == wanted then
    local out = { 1, tonumber(subsidy), tonumber(at) }
    for _, v in ipairs(vouchers) do out[#out + 1] = v end
    return out
  end
  return { 8, 0, 0 }
end

local granted_at = grants_of(KEYS[2], KEYS[3], user)
local function fault(code, pick)
  local out = { code, 0, 0 }
  for _, v in ipairs(vouchers) do
    if pick(v) then out[#out + 1] = v end
  end
  return out
end

local not_owned = function(v) return granted_at[v] == nil end
for _, v in ipairs(vouchers) do
  if not_owned(v) then return fault(4, not_owned) end
end
local states = {}
for _, v in ipairs(vouchers) do
  local use = redis.call('HGET', KEYS[4], 'v:' .. v)
  states[v] = use_state(use, now, STALE_MARGIN_MS)
  if states[v] == 'stale' then return { 13, v, use } end
end
local used = function(v) return states[v] == 'used' or states[v] == 'released' end
for _, v in ipairs(vouchers) do
  if used(v) then return fault(2, used) end
end
local newly_expired = function(v) return states[v] == 'free' and valid_for > 0 and now >= granted_at[v] + valid_for end
local expired = function(v) return states[v] == 'expired' or newly_expired(v) end
for _, v in ipairs(vouchers) do
  if expired(v) then
    record_expiries(KEYS[1], KEYS[4], KEYS[5], user, vouchers, newly_expired, now, now_s)
    return fault(3, expired)
  end
end
if amount < min_spend * #vouchers then return fault(6, function() return true end) end
local sn_trusted_until = tonumber(ARGV[12])
if sn_trusted_until > 0 and now > sn_trusted_until then return { 12, 0, 0 } end

local subsidy = math.min(amount, value * #vouchers)
local fields = {}
for _, v in ipairs(vouchers) do
  fields[#fields + 1] = 'v:' .. v; fields[#fields + 1] = 'R|' .. order .. '|' .. now_s
end
fields[#fields + 1] = okey
fields[#fields + 1] = 'R|' .. wanted .. '|' .. ARGV[5] .. '|' .. ARGV[6] .. '|' .. subsidy .. '|' .. now_s
  .. '|' .. ARGV[10] .. '|' .. ARGV[11]
redis.call('HSET', KEYS[4], unpack(fields))
index_order(KEYS[4], user, order)
redis.call('HINCRBY', KEYS[1], 'redeemed', #vouchers)
redis.call('HINCRBY', KEYS[1], 'subsidy', subsidy)
redis.call('XADD', KEYS[5], '*', 'e', 'redeem', 't', now_s, 'u', user, 'o', order, 'm', ARGV[5],
  'a', ARGV[6], 's', subsidy, 'v', wanted, 'c', ARGV[10], 'n', ARGV[11])
local out = { 1, subsidy, now }
for _, v in ipairs(vouchers) do out[#out + 1] = v end
return out
