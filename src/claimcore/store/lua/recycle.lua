#!lua
-- recycle.lua: vouchers that expired unused, or that their users gave up, go back to stock.
--
-- KEYS[1]  cc:{C:s}:state    HASH epoch, moving; returning, returning_at, and the counter recycled
-- KEYS[2]  cc:{C:s}:users    HASH user -> "count|last_voucher|last_at|rid1,rid2,..."
-- KEYS[3]  cc:{C:s}:reqs     HASH "user|request_id" -> "voucher|granted_at|channel"
-- KEYS[4]  cc:{C:s}:redeem   HASH "v:<voucher>" -> "<state>|order|at" (redeem.lua)
-- KEYS[5]  cc:{C:s}:log      STREAM the shard's ledger
-- ARGV     epoch, now_ms (the node's clock; unused: this shard's Redis TIME judges), op,
--          valid_for_ms, then pairs user, voucher
--   op 'expire'   each voucher past its validity and unused is marked E and its stock comes back
--   op 'release'  each voucher still valid and unused is marked L (its user gave it up), and
--                 its stock comes back; one found expired is recycled as expired instead (E)
-- Returns  { n recycled now, then per pair: 1 recycled now; 2 done before by the same op (L for
--          release, E or X for expire: a resend answers alike); 3 (release) expired, recycled
--          as such; 4 (expire) held by a stacked order's stale preparation: settle it, sweep
--          again; 0 not (in use, not the user's, released, or not expired / expired) },
--          or { -2, epoch } / { -3, epoch } as claim.lua
--
-- Once each: the mark is written with the stock in one step, and a voucher with a mark
-- (R used, E / X expired, L released) is never recycled again. Expiry is judged by this shard's
-- Redis clock, never by a node's. Recycled stock is claimable RETURN_DELAY_MS later (_vouchers).
-- The user keeps their count: the per-user limit still counts a voucher they let expire or gave up.

-- #include _epoch
-- #include _vouchers

local refused = epoch_refusal(KEYS[1], ARGV[1])
if refused then return refused end

local now, now_s = redis_now()
local op, valid_for = ARGV[3], tonumber(ARGV[4])
local out, fields = { 0 }, {}
local expired_lines, released_lines = {}, {}
local grants = {}
for i = 5, #ARGV, 2 do
  local user, voucher = ARGV[i], ARGV[i + 1]
  grants[user] = grants[user] or grants_of(KEYS[2], KEYS[3], user)
  local granted_at = grants[user][voucher]
  local use = fields['v:' .. voucher] or redis.call('HGET', KEYS[4], 'v:' .. voucher)
  local state = use_state(use, now, STALE_MARGIN_MS)
  local expired = granted_at ~= nil and past_validity(granted_at, valid_for, now)
  local code = 0
  if granted_at == nil then
    code = 0
  elseif state == 'free' and expired then
    fields['v:' .. voucher] = 'E|-|' .. now_s
    expired_lines[#expired_lines + 1] = user .. '\t' .. voucher
    code = 1
    if op == 'release' then code = 3 end
  elseif state == 'free' and op == 'release' then
    fields['v:' .. voucher] = 'L|-|' .. now_s
    released_lines[#released_lines + 1] = user .. '\t' .. voucher
    code = 1
  elseif (state == 'released' and op == 'release') or (state == 'expired' and op == 'expire') then
    code = 2
  elseif state == 'stale' and op == 'expire' then
    code = 4
  end
  out[#out + 1] = code
end
if #expired_lines + #released_lines > 0 then
  local args = {}
  for field, value in pairs(fields) do args[#args + 1] = field; args[#args + 1] = value end
  redis.call('HSET', KEYS[4], unpack(args))
  give_back(KEYS[1], KEYS[5], 'expire', expired_lines, now, now_s)
  give_back(KEYS[1], KEYS[5], 'release', released_lines, now, now_s)
end
out[1] = #expired_lines + #released_lines
return out
