#!lua
-- export.lua: read the records of users about to move off this shard (reshard.py).
--
-- KEYS[1]  cc:{C:s}:users
-- KEYS[2]  cc:{C:s}:reqs
-- KEYS[3]  cc:{C:s}:redeem
-- KEYS[4]  cc:{C:s}:elig
-- ARGV[1]  the users, one per line
-- Returns  { users, reqs, redeem, elig }: lines "user<TAB>user_record",
--          "user|request_id<TAB>record", "field<TAB>value" of the users' redemption records
--          (their vouchers' use; every order and reversal, by the user's order index "i:<user>"
--          and by their vouchers' marks; the index itself), and "user<TAB>eligibility"
--
-- One argument in, four out, whatever the number of users: a reshard moves
-- tens of thousands of records while claims of the movers wait, and every
-- argument costs the node microseconds to pack. Ids and records never hold
-- tabs or newlines (claimcore.validation), so the lines need no escaping.

-- #include _grants
-- #include _orders

local users, reqs, redeem, elig = {}, {}, {}, {}
local function take(field)
  local value = redis.call('HGET', KEYS[3], field)
  if value then redeem[#redeem + 1] = field .. '\t' .. value end
  return value
end
for user in string.gmatch(ARGV[1], '[^\n]+') do
  local erec = redis.call('HGET', KEYS[4], user)
  if erec then elig[#elig + 1] = user .. '\t' .. erec end
  local urec = redis.call('HGET', KEYS[1], user)
  local orders = {}
  if urec then
    users[#users + 1] = user .. '\t' .. urec
    for rid in request_ids(urec) do
      local field = user .. '|' .. rid
      local rec = redis.call('HGET', KEYS[2], field)
      if rec then
        reqs[#reqs + 1] = field .. '\t' .. rec
        local use = take('v:' .. parse_grant(rec))
        if use then orders[use_order(use)] = true end
      end
    end
  end
  local index = take('i:' .. user)
  if index then
    for order in string.gmatch(index, '[^,]+') do orders[order] = true end
  end
  for order in pairs(orders) do
    take(order_field(user, order))
    take(reversal_field(user, order))
  end
end
return { table.concat(users, '\n'), table.concat(reqs, '\n'), table.concat(redeem, '\n'),
  table.concat(elig, '\n') }
