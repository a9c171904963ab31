#!lua
-- reverse.lua: a refunded order gives its vouchers back to their user, once.
--
-- KEYS[1]  cc:{C:s}:state    HASH epoch, moving; counters redeemed, subsidy
-- KEYS[2]  cc:{C:s}:users    HASH user -> "count|last_voucher|last_at|rid1,rid2,..."
-- KEYS[3]  cc:{C:s}:reqs     HASH "user|request_id" -> "voucher|granted_at|channel"
-- KEYS[4]  cc:{C:s}:redeem   HASH redemption records (keyspace.py)
-- KEYS[5]  cc:{C:s}:log      STREAM the shard's ledger
-- ARGV     epoch, now_ms, user, order_id, valid_for_ms
-- Returns  { 1, at, returned, expired, sns }  1 REVERSED now or earlier (replay): comma-joined
--                                        vouchers given back / past validity, kept used,
--                                        and the order's SN codes (free to subsidise again)
--          { 2 }                         2 ORDER_NOT_FOUND (store/replies.py ReverseCode)
--          { -2, epoch } / { -3, epoch } STALE / MOVING, as claim.lua
--
-- A voucher goes back to its user only if still valid, by this shard's Redis clock. One past
-- its validity is marked X and its stock comes back to the campaign in this same step (an
-- `expire` ledger event), exactly once: the mark is final (no script uses or recycles an X
-- voucher again), and it is written with the stock (docs/recycling.md).

-- #include _epoch
-- #include _vouchers
-- #include _orders

local refused = epoch_refusal(KEYS[1], ARGV[1])
if refused then return refused end

local user, order = ARGV[3], ARGV[4]
local now, now_s = redis_now()
local valid_for = tonumber(ARGV[5])
local okey, rkey = order_field(user, order), reversal_field(user, order)
local rec = redis.call('HGET', KEYS[4], okey)
if not rec or rec:sub(1, 1) == 'P' then return { 2 } end  -- P: a stacked order not yet decided
local _, used, _, _, subsidy, _, _, sns = parse_order(rec)  -- then maybe a stacked instance
sns = sns or ''
if rec:sub(1, 1) == 'V' then
  local at, returned, expired = string.match(redis.call('HGET', KEYS[4], rkey), '^([^|]*)|([^|]*)|(.*)$')
  return { 1, tonumber(at), returned, expired, sns }
end

local granted_at = grants_of(KEYS[2], KEYS[3], user)

local returned, expired, fields = {}, {}, {}
local n = 0
for v in string.gmatch(used, '[^,]+') do
  n = n + 1
  if not past_validity(granted_at[v] or 0, valid_for, now) then
    returned[#returned + 1] = v
    fields[#fields + 1] = 'v:' .. v; fields[#fields + 1] = 'F|' .. order .. '|' .. now_s
  else
    expired[#expired + 1] = v
    fields[#fields + 1] = 'v:' .. v; fields[#fields + 1] = 'X|' .. order .. '|' .. now_s
  end
end
local back, gone = table.concat(returned, ','), table.concat(expired, ',')
fields[#fields + 1] = okey; fields[#fields + 1] = 'V' .. rec:sub(2)
fields[#fields + 1] = rkey; fields[#fields + 1] = now_s .. '|' .. back .. '|' .. gone
redis.call('HSET', KEYS[4], unpack(fields))
redis.call('HINCRBY', KEYS[1], 'redeemed', -n)
redis.call('HINCRBY', KEYS[1], 'subsidy', 0 - tonumber(subsidy))  -- not -0: HINCRBY refuses '-0'
redis.call('XADD', KEYS[5], '*', 'e', 'reverse', 't', now_s, 'u', user, 'o', order,
  'v', back, 'x', gone)
local lines = {}
for _, v in ipairs(expired) do lines[#lines + 1] = user .. '\t' .. v end
give_back(KEYS[1], KEYS[5], 'expire', lines, now, now_s)
return { 1, now, back, gone, sns }
