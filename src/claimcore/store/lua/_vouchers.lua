-- _vouchers.lua: the voucher helpers that redeem, stack, reverse and recycle share. Not a script
-- of its own: scripts.py puts it in place of a script's `-- #include _vouchers` line, so each
-- script still runs as one EVALSHA (a shared library by Redis Functions would need FUNCTION LOAD on
-- every master and replica after every restart; a prelude travels with the script it serves).

-- #include _returning

-- Now, by this shard's Redis clock: the one clock that judges a voucher's expiry, whichever node
-- asks. Returned as a number and as a string (Lua prints big numbers in exponent form).
local function redis_now()
  local t = redis.call('TIME')
  local ms = string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  return tonumber(t[1] .. ms), t[1] .. ms
end

-- The user's vouchers and when each was granted, from their grant records.
local function grants_of(users_key, reqs_key, user)
  local granted_at = {}
  local urec = redis.call('HGET', users_key, user)
  if urec then
    for rid in string.gmatch(string.match(urec, '^[^|]*|[^|]*|[^|]*|(.*)$'), '[^,]+') do
      local rec = redis.call('HGET', reqs_key, user .. '|' .. rid)
      if rec then
        local vid, at = string.match(rec, '^([^|]*)|([^|]*)|')
        granted_at[vid] = tonumber(at)
      end
    end
  end
  return granted_at
end

-- What a voucher's use record (its "v:" field) says, for a script about to use or recycle it:
--   'free'     no record, or F (given back by a reversal): usable while valid
--   'used'     R (redeemed), or P (prepared by a stacked order) still within its deadline + margin
--   'stale'    P past deadline + margin: the stacked order must be settled first
--   'released' L (given up by its user)
--   'expired'  E (recycled as expired) or X (expired when its order was reversed)
-- A recycle mark (E, X, L) is final: no clock can make such a voucher usable again.
local function use_state(use, now, margin)
  if not use then return 'free' end
  local mark = string.sub(use, 1, 1)
  if mark == 'F' then return 'free' end
  if mark == 'E' or mark == 'X' then return 'expired' end
  if mark == 'L' then return 'released' end
  if mark == 'P' then
    local deadline = tonumber(string.match(use, '^P|[^|]*|([^|]*)'))
    if now > deadline + margin then return 'stale' end  -- deadlines are Redis time (holds.lua)
  end
  return 'used'
end

-- Stock of recycled vouchers back to the shard, claimable after RETURN_DELAY_MS (_returning), with its ledger
-- entry (`op` expire or release; lines "user<TAB>voucher"), all in the caller's atomic step.
local function give_back(state_key, log_key, op, lines, now, now_s)
  if #lines == 0 then return end
  local due, r1, a1, r2, a2 = due_returning(redis.call('HMGET', state_key, unpack(RETURNING)), 1, now)
  if r1 == 0 then r1, a1 = #lines, now + RETURN_DELAY_MS
  else r2, a2 = r2 + #lines, now + RETURN_DELAY_MS end
  if due > 0 then redis.call('HINCRBY', state_key, 'stock', due) end
  write_returning(state_key, r1, a1, r2, a2)
  redis.call('HINCRBY', state_key, 'recycled', #lines)
  redis.call('XADD', log_key, '*', 'e', op, 't', now_s, 'g', table.concat(lines, '\n'))
end

-- Of a user's vouchers, record those found expired just now (`newly_expired`: free and past
-- validity by this shard's clock) as expired (E), their stock given back: the one decision
-- every later script follows, written in the refusing script's own step.
local function record_expiries(state_key, redeem_key, log_key, user, vouchers, newly_expired, now, now_s)
  local lines = {}
  for _, x in ipairs(vouchers) do
    if newly_expired(x) then
      redis.call('HSET', redeem_key, 'v:' .. x, 'E|-|' .. now_s)
      lines[#lines + 1] = user .. '\t' .. x
    end
  end
  give_back(state_key, log_key, 'expire', lines, now, now_s)
end

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
