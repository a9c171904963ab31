-- _orders.lua: the order records of a shard's redeem hash (keyspace.py), written by redeem.lua and
-- stack.lua, given back by reverse.lua, moved by export.lua. Put in place by scripts.py (see there).
--   "o:<user>|<order>"  "state|vouchers|merchant|amount|subsidy|at|channel|sns", then
--                       "|instance" on a stacked order's committed part, "|deadline|instance"
--                       on a prepared one; state R redeemed, P prepared (stack.lua), V reversed
--   "r:<user>|<order>"  "at|returned|expired": the reversal
--   "i:<user>"          "order1,order2,...": the user's orders
-- and the order a voucher's use mark ("v:<voucher>" -> "state|order|...") names.

local function order_field(user, order) return 'o:' .. user .. '|' .. order end
local function reversal_field(user, order) return 'r:' .. user .. '|' .. order end

-- An order record's state, vouchers (comma-joined), merchant, amount, subsidy, at, channel, sns.
local function parse_order(rec)
  return string.match(rec, '^(%a)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)')
end

-- An order record, without what a stacked order's part adds after its sns.
local function order_record(state, vouchers, merchant, amount, subsidy, at, channel, sns)
  return state .. '|' .. vouchers .. '|' .. merchant .. '|' .. amount .. '|' .. subsidy .. '|' .. at
    .. '|' .. channel .. '|' .. sns
end

-- The stacked-order instance a record ends with (an order record or a P use mark of a part).
local function instance_of(rec) return string.match(rec, '|([^|]*)$') end

-- The order a voucher's use mark names ('-' for a recycle mark).
local function use_order(use) return string.match(use, '^%a|([^|]*)|') end

-- Add an order to the user's order index "i:<user>" (once): a reshard moves every order and
-- reversal record of a moving user by it (export.lua), not only those their vouchers point at.
local function index_order(redeem_key, user, order)
  local index = redis.call('HGET', redeem_key, 'i:' .. user)
  if not index then
    redis.call('HSET', redeem_key, 'i:' .. user, order)
  elseif not string.find(',' .. index .. ',', ',' .. order .. ',', 1, true) then
    redis.call('HSET', redeem_key, 'i:' .. user, index .. ',' .. order)
  end
end

-- Record an order as redeemed, in the caller's atomic step: its vouchers (`used`, comma-joined)
-- marked R, its order record (followed by `tail`: '' for an order of one campaign, '|instance'
-- for a stacked order's part), the shard's redeemed and subsidy counters, a `redeem` ledger entry.
local function record_redemption(state_key, redeem_key, log_key, user, order, used, merchant, amount,
                                 subsidy, channel, sns, tail, now_s)
  local fields, n = {}, 0
  for v in string.gmatch(used, '[^,]+') do
    n = n + 1
    fields[#fields + 1] = 'v:' .. v; fields[#fields + 1] = 'R|' .. order .. '|' .. now_s
  end
  fields[#fields + 1] = order_field(user, order)
  fields[#fields + 1] = order_record('R', used, merchant, amount, subsidy, now_s, channel, sns) .. tail
  redis.call('HSET', redeem_key, unpack(fields))
  redis.call('HINCRBY', state_key, 'redeemed', n)
  redis.call('HINCRBY', state_key, 'subsidy', subsidy)
  redis.call('XADD', log_key, '*', 'e', 'redeem', 't', now_s, 'u', user, 'o', order, 'm', merchant,
    'a', amount, 's', subsidy, 'v', used, 'c', channel, 'n', sns)
end
