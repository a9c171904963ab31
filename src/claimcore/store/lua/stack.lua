#!lua
-- stack.lua: one campaign's part of an order that stacks vouchers of several campaigns.
--
-- KEYS[1]  cc:{C:s}:state    HASH epoch, moving; counters redeemed, subsidy
-- KEYS[2]  cc:{C:s}:users    HASH user -> "count|last_voucher|last_at|rid1,rid2,..."
-- KEYS[3]  cc:{C:s}:reqs     HASH "user|request_id" -> "voucher|granted_at|channel"
-- KEYS[4]  cc:{C:s}:redeem   HASH redemption records (keyspace.py); a part being prepared is
--                            "v:<voucher>" -> "P|order|deadline|instance" and
--                            "o:<user>|<order>" -> "P|...|deadline|instance", and once
--                            committed "R|...|sns|instance"
-- KEYS[5]  cc:{C:s}:log      STREAM the shard's ledger (an entry at commit only)
-- ARGV     op, epoch, now_ms (the node's clock; unused), user, order_id,
--          instance (the stacked order's identity: a digest of its content, stacking.py), then by op:
--   prepare  merchant, amount, min_spend, value, valid_for_ms, channel, sns, deadline (Redis time),
--            margin, vouchers...
--            -> { 1, subsidy } 1 PREPARED (now or before);
--               { 9, subsidy, at } 9 COMMITTED_BEFORE;
--               { code, 0, 0, vouchers... } refused as redeem.lua: 2 ALREADY_REDEEMED, 3 EXPIRED,
--               4 NOT_OWNER, 6 BELOW_MINIMUM_SPEND, 8 ORDER_ID_REUSED;
--               { 13, voucher, record } 13 STALE_PREPARE: a voucher is held by another order's
--               stale preparation (store/replies.py StackCode names these)
--   commit   -> { 1 } committed (now or before); { 2 } nothing prepared by this instance (aborted)
--   abort    -> { 1 } aborted (or nothing of this instance there); { 2 } committed already
-- and { -2, epoch } / { -3, epoch } as claim.lua. stacking.py runs the protocol: prepare every
-- part, decide once (holds.lua, the decision naming the instance), commit every part; or abort
-- them. A part is committed or aborted only by its own instance: an order of another content
-- that reuses the order id can neither take nor settle it. Expiry is judged at prepare, by this
-- shard's Redis clock, as redeem.lua does (and recorded the same way when found).

-- #include _epoch
-- #include _vouchers
-- #include _orders

local refused = epoch_refusal(KEYS[1], ARGV[2])
if refused then return refused end
local op, user, order, instance = ARGV[1], ARGV[4], ARGV[5], ARGV[6]
local now, now_s = redis_now()
local okey = order_field(user, order)
local rec = redis.call('HGET', KEYS[4], okey)

if op == 'commit' then
  if not rec then return { 2 } end
  if rec:sub(1, 1) == 'R' then return { 1 } end
  if rec:sub(1, 1) ~= 'P' or instance_of(rec) ~= instance then return { 2 } end
  local _, used, merchant, amount, subsidy, _, channel, sns = parse_order(rec)
  record_redemption(KEYS[1], KEYS[4], KEYS[5], user, order, used, merchant, amount, subsidy, channel, sns,
    '|' .. instance, now_s)
  return { 1 }
end

if op == 'abort' then
  if not rec then return { 1 } end
  if rec:sub(1, 1) ~= 'P' then return { 2 } end
  if instance_of(rec) ~= instance then return { 1 } end
  local _, used = parse_order(rec)
  for v in string.gmatch(used, '[^,]+') do
    local use = redis.call('HGET', KEYS[4], 'v:' .. v)
    if use and use:sub(1, 2) == 'P|' and use_order(use) == order then
      redis.call('HDEL', KEYS[4], 'v:' .. v)
    end
  end
  redis.call('HDEL', KEYS[4], okey)
  return { 1 }
end

-- prepare
local merchant, amount, min_spend, value = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local valid_for, channel, sns, deadline, margin = tonumber(ARGV[11]), ARGV[12], ARGV[13], ARGV[14], tonumber(ARGV[15])
local vouchers = {}
for i = 16, #ARGV do vouchers[#vouchers + 1] = ARGV[i] end
local wanted = table.concat(vouchers, ',')
if rec then
  local state, used, _, _, subsidy, at = parse_order(rec)
  if used == wanted and state == 'P' and instance_of(rec) == instance then return { 1, tonumber(subsidy) } end
  if used == wanted and state == 'R' and instance_of(rec) == instance then
    return { 9, tonumber(subsidy), tonumber(at) }
  end
  return { 8, 0, 0 }
end

refused = refuse_vouchers(KEYS, user, vouchers, amount, min_spend, valid_for, now, now_s, margin, true)
if refused then return refused end

local subsidy = math.min(amount, value * #vouchers)
local fields = {}
for _, v in ipairs(vouchers) do
  fields[#fields + 1] = 'v:' .. v; fields[#fields + 1] = 'P|' .. order .. '|' .. deadline .. '|' .. instance
end
fields[#fields + 1] = okey
fields[#fields + 1] = order_record('P', wanted, merchant, ARGV[8], subsidy, now_s, channel, sns)
  .. '|' .. deadline .. '|' .. instance
redis.call('HSET', KEYS[4], unpack(fields))
index_order(KEYS[4], user, order)
return { 1, subsidy }
