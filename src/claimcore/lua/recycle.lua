#!lua
-- recycle.lua: vouchers that expired unused, or that their users gave up, go back to stock.
--
-- KEYS[1]  cc:{C:s}:state    HASH epoch, moving; stock, and the counter recycled
-- KEYS[2]  cc:{C:s}:users    HASH user -> "count|last_voucher|last_at|rid1,rid2,..."
-- KEYS[3]  cc:{C:s}:reqs     HASH "user|request_id" -> "voucher|granted_at|channel"
-- KEYS[4]  cc:{C:s}:redeem   HASH "v:<voucher>" -> "<state>|order|at" (redeem.lua)
-- KEYS[5]  cc:{C:s}:log      STREAM the shard's ledger
-- ARGV     epoch, now_ms, op, valid_for_ms, then pairs user, voucher
--   op 'expire'   each voucher past its validity and unused is marked E and its stock comes back
--   op 'release'  each voucher still valid and unused is marked L (its user gave it up), and
--                 its stock comes back
-- Returns  { n recycled, then per pair: 1 recycled, 0 not (in use, already back, not the
--          user's, or not expired / expired) }, or { -2, epoch } / { -3, epoch } as claim.lua
--
-- Once each: the mark is written with the stock in one step, and a voucher with a mark
-- (R used, E expired, L released) is never recycled again. The user keeps their count:
-- the per-user limit still counts a voucher they let expire or gave up.

local st = redis.call('HMGET', KEYS[1], 'epoch', 'moving')
local epoch, node_epoch = tonumber(st[1] or '0'), tonumber(ARGV[1])
if node_epoch < epoch then return { -2, epoch } end
if node_epoch > epoch or st[2] == '1' then return { -3, epoch } end

local now, op, valid_for = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local mark = 'E'
if op == 'release' then mark = 'L' end
local out, lines, fields = { 0 }, {}, {}
for i = 5, #ARGV, 2 do
  local user, voucher = ARGV[i], ARGV[i + 1]
  local granted_at
  local urec = redis.call('HGET', KEYS[2], user)
  if urec then
    for rid in string.gmatch(string.match(urec, '^[^|]*|[^|]*|[^|]*|(.*)$'), '[^,]+') do
      local rec = redis.call('HGET', KEYS[3], user .. '|' .. rid)
      if rec then
        local vid, at = string.match(rec, '^([^|]*)|([^|]*)|')
        if vid == voucher then granted_at = tonumber(at) end
      end
    end
  end
  local use = redis.call('HGET', KEYS[4], 'v:' .. voucher)
  local free = use == nil or use == false or string.sub(use, 1, 1) == 'F'
  local expired = valid_for > 0 and granted_at ~= nil and now >= granted_at + valid_for
  local ok = granted_at ~= nil and free and fields['v:' .. voucher] == nil
  if op == 'expire' then ok = ok and expired else ok = ok and not expired end
  if ok then
    fields['v:' .. voucher] = mark .. '|-|' .. ARGV[2]
    lines[#lines + 1] = user .. '\t' .. voucher
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #lines > 0 then
  local args = {}
  for field, value in pairs(fields) do args[#args + 1] = field; args[#args + 1] = value end
  redis.call('HSET', KEYS[4], unpack(args))
  redis.call('HINCRBY', KEYS[1], 'stock', #lines)
  redis.call('HINCRBY', KEYS[1], 'recycled', #lines)
  redis.call('XADD', KEYS[5], '*', 'e', op, 't', ARGV[2], 'g', table.concat(lines, '\n'))
end
out[1] = #lines
return out
