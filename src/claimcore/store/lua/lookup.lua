#!lua
-- lookup.lua: a user's grant records, read from the shard the node routed to.
--
-- KEYS[1]  cc:{C:s}:state
-- KEYS[2]  cc:{C:s}:users
-- KEYS[3]  cc:{C:s}:reqs
-- KEYS[4]  cc:{C:s}:redeem
-- ARGV     epoch of the node's shard map, user_id, request_id ('' = all of the user's),
--          and optionally an order_id: then the reply is { 0, the user's order record or '' }
-- Returns  { 0, field_1, record_1, ... }, or { -2, epoch } / { -3, epoch } as claim.lua
--
-- The epoch check and the read are one atomic step: a node on an old map
-- cannot read "no record" from a shard the user has moved away from.

-- #include _epoch
-- #include _grants
-- #include _orders

local refused = epoch_refusal(KEYS[1], ARGV[1])
if refused then return refused end
local user, rid = ARGV[2], ARGV[3]
if ARGV[4] then
  return { 0, redis.call('HGET', KEYS[4], order_field(user, ARGV[4])) or '' }
end
local fields = {}
if rid ~= '' then
  fields[1] = user .. '|' .. rid
else
  local urec = redis.call('HGET', KEYS[2], user)
  if not urec then return { 0 } end
  for r in request_ids(urec) do
    fields[#fields + 1] = user .. '|' .. r
  end
end
local out = { 0 }
local recs = redis.call('HMGET', KEYS[3], unpack(fields))
for i, rec in ipairs(fields) do
  if recs[i] then out[#out + 1] = rec; out[#out + 1] = recs[i] end
end
return out
