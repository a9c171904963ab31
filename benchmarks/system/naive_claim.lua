#!lua
-- naive_claim.lua: one claim for one user, as a team would write it in an afternoon.
-- The benchmark baseline only; claimcore's own script is src/claimcore/store/lua/claim.lua.
--
-- KEYS[1]  nv:{C}:campaign  HASH stock, seq, limit, starts, ends, paused,
--                                value_cents, min_spend_cents, category
-- KEYS[2]  nv:{C}:users     HASH user -> "count|last_voucher|last_at"
-- KEYS[3]  nv:{C}:reqs      HASH "user|request_id" -> "voucher|granted_at|channel"
-- ARGV     now_ms, user_id, request_id, channel_id, voucher id prefix "<C>-"
--
-- Returns { code, voucher, at, value_cents, min_spend_cents, category }, or { -1 }
-- if the campaign does not exist. Codes as claim.lua's: 1 GRANTED, 2 GRANTED earlier
-- to this (user, request_id) (replay), 3 ALREADY_CLAIMED (voucher = latest),
-- 4 SOLD_OUT, 5 NOT_STARTED, 6 ENDED, 7 PAUSED.
--
-- The same checks as claim.lua, in the same order: replay, user limit,
-- window/pause, stock. All writes come last, stock first.

local c = redis.call('HMGET', KEYS[1], 'stock', 'seq', 'limit', 'starts', 'ends', 'paused',
  'value_cents', 'min_spend_cents', 'category')
if not c[1] then return { -1 } end

local function reply(code, voucher, at)
  return { code, voucher, at, c[7], c[8], c[9] }
end

local user, rid, chan = ARGV[2], ARGV[3], ARGV[4]
local rkey = user .. '|' .. rid
local rec = redis.call('HGET', KEYS[3], rkey)
if rec then
  local vid, at = string.match(rec, '^([^|]*)|([^|]*)|')
  return reply(2, vid, at)
end

local count, lvid, lat = 0, '', '0'
local urec = redis.call('HGET', KEYS[2], user)
if urec then
  count, lvid, lat = string.match(urec, '^(%d+)|([^|]*)|(.*)$')
  count = tonumber(count)
end
if count >= tonumber(c[3]) then return reply(3, lvid, lat) end

local now, ends = tonumber(ARGV[1]), tonumber(c[5])
if c[6] == '1' then return reply(7, '', '0') end
if now < tonumber(c[4]) then return reply(5, '', '0') end
if ends > 0 and now >= ends then return reply(6, '', '0') end

local stock = tonumber(c[1])
if stock <= 0 then return reply(4, '', '0') end
local seq = tonumber(c[2]) + 1
local vid = ARGV[5] .. seq
redis.call('HSET', KEYS[1], 'stock', stock - 1, 'seq', seq)
redis.call('HSET', KEYS[2], user, (count + 1) .. '|' .. vid .. '|' .. ARGV[1])
redis.call('HSET', KEYS[3], rkey, vid .. '|' .. ARGV[1] .. '|' .. chan)
return reply(1, vid, ARGV[1])
