#!lua
-- holds.lua: things one owner at a time may have, across hash slots: SN codes (each
-- subsidised by one order, snregistry.py) and categories (a person holds vouchers of one
-- campaign per category, categories.py).
--
-- KEYS[1]  cc:{sn:b}:sns (or cc:{cat:<category>:b}:users)  a registry HASH
--          thing -> "H|deadline_ms|owner" (held while the owner is decided)
--                or "U|0|owner" (used: the owner has it for good)
--          SN codes: owner "campaign|user|order_id"; users of a category: owner "campaign"
-- ARGV     op, owner, now_ms, deadline_ms, margin_ms, then the things
--   hold     all or none: { 0 } held (or already ours); { 1, sns... } used or held by other
--            orders; { 2, sn, record, ... } held by orders past their deadline: the caller
--            must settle those first ('settle'), then hold again
--   hold_each  each thing on its own: { n, the n things used or held by other owners...,
--            then pairs thing, record of stale holds to settle }; the others are held now
--            (or were ours already)
--   commit   our holds become used                                  -> { 0 }
--   drop     our holds (not our uses) are removed                    -> { 0 }
--   decide   the things become ours, used, if now <= deadline - margin and no one else has
--            them: { 0 } decided (now or before), { 1 } too late or taken (stacked orders)
--   release  our holds and uses are removed                         -> { 0 }
--   settle   ARGV[2] is the stale owner; SN codes whose record is still that owner's stale
--            hold become used ("U", ARGV[4] = 1) or free (ARGV[4] = 0) -> { 0 }
--
-- A hold is trusted until deadline + margin by others, and by its own owner only
-- until deadline - margin (redeem.lua and claim.lua refuse later): the margin covers the
-- clocks of two nodes disagreeing, so a hold is never used by two orders.

local op, owner = ARGV[1], ARGV[2]
local now, deadline, margin = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local function parse(rec)
  local state, until_ms, who = string.match(rec, '^(%a)|([^|]*)|(.*)$')
  return state, tonumber(until_ms), who
end

if op == 'hold' then
  local taken, stale = {}, {}
  for i = 6, #ARGV do
    local rec = redis.call('HGET', KEYS[1], ARGV[i])
    if rec then
      local state, until_ms, who = parse(rec)
      if who ~= owner then
        if state == 'U' or now <= until_ms + margin then taken[#taken + 1] = ARGV[i]
        else stale[#stale + 1] = ARGV[i]; stale[#stale + 1] = rec end
      end
    end
  end
  if #taken > 0 then return { 1, unpack(taken) } end
  if #stale > 0 then return { 2, unpack(stale) } end
  for i = 6, #ARGV do
    local rec = redis.call('HGET', KEYS[1], ARGV[i])
    if not rec or select(1, parse(rec)) == 'H' then
      redis.call('HSET', KEYS[1], ARGV[i], 'H|' .. ARGV[4] .. '|' .. owner)
    end
  end
  return { 0 }
end

if op == 'decide' then
  for i = 6, #ARGV do
    local rec = redis.call('HGET', KEYS[1], ARGV[i])
    if rec then
      local state, _, who = parse(rec)
      if who ~= owner or state ~= 'U' then return { 1 } end
    elseif now > deadline - margin then
      return { 1 }
    end
  end
  for i = 6, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], 'U|0|' .. owner) end
  return { 0 }
end

if op == 'hold_each' then
  local taken, stale = {}, {}
  for i = 6, #ARGV do
    local rec = redis.call('HGET', KEYS[1], ARGV[i])
    local state, until_ms, who
    if rec then state, until_ms, who = parse(rec) end
    if rec and who ~= owner then
      if state == 'U' or now <= until_ms + margin then taken[#taken + 1] = ARGV[i]
      else stale[#stale + 1] = ARGV[i]; stale[#stale + 1] = rec end
    elseif not rec or state == 'H' then
      redis.call('HSET', KEYS[1], ARGV[i], 'H|' .. ARGV[4] .. '|' .. owner)
    end
  end
  local out = { #taken }
  for _, x in ipairs(taken) do out[#out + 1] = x end
  for _, x in ipairs(stale) do out[#out + 1] = x end
  return out
end

for i = 6, #ARGV do
  local rec = redis.call('HGET', KEYS[1], ARGV[i])
  if rec then
    local state, until_ms, who = parse(rec)
    if who == owner then
      if op == 'drop' then
        if state == 'H' then redis.call('HDEL', KEYS[1], ARGV[i]) end
      elseif op == 'commit' then redis.call('HSET', KEYS[1], ARGV[i], 'U|0|' .. owner)
      elseif op == 'release' then redis.call('HDEL', KEYS[1], ARGV[i])
      elseif op == 'settle' and state == 'H' and now > until_ms + margin then
        if deadline == 1 then redis.call('HSET', KEYS[1], ARGV[i], 'U|0|' .. owner)
        else redis.call('HDEL', KEYS[1], ARGV[i]) end
      end
    end
  end
end
return { 0 }
