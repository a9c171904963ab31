#!lua
-- holds.lua: things one owner at a time may have, across hash slots: SN codes (each
-- subsidised by one order, snregistry.py), categories (a person holds vouchers of one
-- campaign per category, categories.py) and stacked orders' decisions (stacking.py).
--
-- KEYS[1]  cc:{sn:b}:sns (or cc:{cat:<category>:b}:users, cc:{stack:b}:orders)  a registry HASH
--          thing -> "H|deadline_ms|tokens|owner"  held while the owner is decided, by the
--                                                 holders named in tokens (comma-joined)
--                or "U|0||owner"                  used: the owner has it for good
--          SN codes: owner "campaign|user|order_id"; users of a category: owner "campaign", one
--          token per flush that holds them; stacked orders: owner "user|order|instance"
-- ARGV     op, owner, token, arg (by op: hold_ms, a deadline, or a flag), margin_ms, then the things
--   hold     all or none, for arg ms: { 0, deadline } held (or already ours); { 1, things... } used
--            or held by other owners; { 2, thing, record, ... } held by owners past their deadline:
--            the caller must settle those first ('settle'), then hold again
--   hold_each  each thing on its own, for arg ms: { n, deadline, the n things used or held by
--            other owners..., then pairs thing, record of stale holds to settle }; the others are
--            held now (or were ours already)
--   commit   our holds become used                                   -> { 0 }
--   drop     this token's holds are let go (the owner's other holders' and uses stay) -> { 0 }
--   decide   the things become ours, used, if now <= arg (the order's deadline) - margin and no
--            one else has them: { 0 } decided (now or before), { 1 } too late or taken
--   release  our holds and uses are removed                          -> { 0 }
--   settle   ARGV[2] is the stale owner; things whose record is still that owner's stale hold
--            become used ("U", arg = 1) or free (arg = 0)              -> { 0 }
--
-- Time is this registry's Redis clock (TIME), never a node's: deadlines are set and judged by
-- it, and claim.lua / redeem.lua judge the holder's trust by their own shard's TIME. A hold is
-- trusted until deadline + margin by others, and by its own holder only until deadline -
-- margin: the margin covers two Redis masters' clocks disagreeing (NTP keeps them within
-- milliseconds), so a hold is never used by two owners, however wrong a node's clock. Holds
-- are let go only by the holder that took them (its token): one node's flush ending cannot free
-- a user another node's flush still holds for the same campaign.

-- #include _clock

local op, owner, token = ARGV[1], ARGV[2], ARGV[3]
local now, now_s = redis_now()
local margin = tonumber(ARGV[5])
local FIRST = 6
local deadline, deadline_s = tonumber(ARGV[4]), ARGV[4]           -- decide: the order's deadline
if op == 'hold' or op == 'hold_each' then
  deadline = now + tonumber(ARGV[4])
  deadline_s = string.format('%d', deadline)
end

local function parse(rec)
  local state, until_ms, tokens, who = string.match(rec, '^(%a)|([^|]*)|([^|]*)|(.*)$')
  return state, tonumber(until_ms), tokens, who
end

local function has(tokens, t) return string.find(',' .. tokens .. ',', ',' .. t .. ',', 1, true) ~= nil end

-- Our hold of `thing` (rec is its record, ours or none): joined by this token, deadline the later.
local function take(thing, rec)
  if not rec then
    redis.call('HSET', KEYS[1], thing, 'H|' .. deadline_s .. '|' .. token .. '|' .. owner)
    return
  end
  local state, until_ms, tokens = parse(rec)
  if state ~= 'H' then return end  -- used by us already
  if not has(tokens, token) then tokens = (tokens == '' and token) or (tokens .. ',' .. token) end
  local later = deadline_s
  if until_ms > deadline then later = string.match(rec, '^%a|([^|]*)|') end
  redis.call('HSET', KEYS[1], thing, 'H|' .. later .. '|' .. tokens .. '|' .. owner)
end

if op == 'hold' or op == 'hold_each' then
  local taken, stale, recs = {}, {}, {}
  for i = FIRST, #ARGV do
    local rec = redis.call('HGET', KEYS[1], ARGV[i])
    recs[i] = rec or false
    if rec then
      local state, until_ms, _, who = parse(rec)
      if who ~= owner then
        if state == 'U' or now <= until_ms + margin then taken[#taken + 1] = ARGV[i]
        else stale[#stale + 1] = ARGV[i]; stale[#stale + 1] = rec end
        recs[i] = nil
      end
    end
  end
  if op == 'hold' then
    if #taken > 0 then return { 1, unpack(taken) } end
    if #stale > 0 then return { 2, unpack(stale) } end
  end
  for i = FIRST, #ARGV do
    if recs[i] ~= nil then take(ARGV[i], recs[i] or nil) end
  end
  if op == 'hold' then return { 0, deadline } end
  local out = { #taken, deadline }
  for _, x in ipairs(taken) do out[#out + 1] = x end
  for _, x in ipairs(stale) do out[#out + 1] = x end
  return out
end

if op == 'decide' then
  for i = FIRST, #ARGV do
    local rec = redis.call('HGET', KEYS[1], ARGV[i])
    if rec then
      local state, _, _, who = parse(rec)
      if who ~= owner or state ~= 'U' then return { 1 } end
    elseif now > deadline - margin then
      return { 1 }
    end
  end
  for i = FIRST, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], 'U|0||' .. owner) end
  return { 0 }
end

for i = FIRST, #ARGV do
  local rec = redis.call('HGET', KEYS[1], ARGV[i])
  if rec then
    local state, until_ms, tokens, who = parse(rec)
    if who == owner then
      if op == 'drop' then
        if state == 'H' and has(tokens, token) then
          local left = {}
          for t in string.gmatch(tokens, '[^,]+') do if t ~= token then left[#left + 1] = t end end
          if #left == 0 then redis.call('HDEL', KEYS[1], ARGV[i])
          else
            local until_s = string.match(rec, '^%a|([^|]*)|')
            redis.call('HSET', KEYS[1], ARGV[i], 'H|' .. until_s .. '|' .. table.concat(left, ',') .. '|' .. who)
          end
        end
      elseif op == 'commit' then redis.call('HSET', KEYS[1], ARGV[i], 'U|0||' .. owner)
      elseif op == 'release' then redis.call('HDEL', KEYS[1], ARGV[i])
      elseif op == 'settle' and state == 'H' and now > until_ms + margin then
        if ARGV[4] == '1' then redis.call('HSET', KEYS[1], ARGV[i], 'U|0||' .. owner)
        else redis.call('HDEL', KEYS[1], ARGV[i]) end
      end
    end
  end
end
return { 0 }
