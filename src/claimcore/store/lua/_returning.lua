-- _returning.lua: recycled stock on its way back to a shard's stock (put in place by scripts.py
-- in claim.lua, lend.lua and, through _vouchers.lua, the scripts that recycle).
--
-- Recycled stock waits RETURN_DELAY_MS (inventory.RETURN_DELAY_MS), by this shard's Redis clock,
-- before a claim may take it: every node's sold-out snapshot sees it first (soldout.py), so no
-- node answers SOLD_OUT to a request another node has granted from it. `returning` is all of it;
-- it waits in two parts: the older (returning - returning_next, due at returning_at) and
-- `returning_next`, all that came back since (due at returning_next_at). A later return pushes
-- back only the newer part: vouchers recycled every second still come back.

-- #include _clock

local RETURN_DELAY_MS = 2000
local RETURNING = { 'returning', 'returning_at', 'returning_next', 'returning_next_at' }

-- The stock due by `now` out of the two parts (read by HMGET of RETURNING at st[i..i+3]), and the
-- parts left: due, older amount, its time, newer amount, its time.
local function due_returning(st, i, now)
  local r2, a2 = tonumber(st[i + 2] or '0'), tonumber(st[i + 3] or '0')
  local r1, a1 = tonumber(st[i] or '0') - r2, tonumber(st[i + 1] or '0')
  local due = 0
  if r1 > 0 and now >= a1 then due, r1 = due + r1, 0 end
  if r2 > 0 and now >= a2 then due, r2 = due + r2, 0 end
  if r1 == 0 and r2 > 0 then r1, a1, r2, a2 = r2, a2, 0, 0 end
  return due, r1, a1, r2, a2
end

local function write_returning(state_key, r1, a1, r2, a2)
  redis.call('HSET', state_key, 'returning', r1 + r2, 'returning_at', string.format('%d', a1),
    'returning_next', r2, 'returning_next_at', string.format('%d', a2))
end
