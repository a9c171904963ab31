-- _vouchers.lua: the voucher helpers that redeem, stack, reverse and recycle share: a voucher's
-- use, its validity, the checks of an order's vouchers, and the stock of recycled ones. Not a
-- script of its own: scripts.py puts it in place of a script's `-- #include _vouchers` line (why
-- includes, and not a Redis Functions library: scripts.py's header).

-- #include _returning
-- #include _grants

local STALE_MARGIN_MS = 1000  -- the clock margin of every hold (snregistry.MARGIN_MS)

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

-- Whether a voucher granted at `granted_at` is past its validity `valid_for` (0: none) at `now`,
-- by this shard's Redis clock.
local function past_validity(granted_at, valid_for, now)
  return valid_for > 0 and now >= granted_at + valid_for
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

-- An order's refusal (redeem.lua, stack.lua prepare): { code, 0, 0, the vouchers at_fault(v) names }.
local function refusal(code, vouchers, at_fault)
  local out = { code, 0, 0 }
  for _, v in ipairs(vouchers) do
    if at_fault(v) then out[#out + 1] = v end
  end
  return out
end

-- The checks redeem.lua and stack.lua's prepare make of an order (`keys`: their KEYS),
-- in this order; the first that fails gives the reply, nil if none does:
--   4 NOT_OWNER          naming the vouchers the user was not granted
--   { 13, voucher, use } a voucher held by a stacked order's stale preparation: settle, try again
--   2 ALREADY_REDEEMED   naming the vouchers in use or released; with `first_in_use` (stack.lua)
--                        the first one met, before any later voucher is looked at
--   3 EXPIRED            naming the vouchers expired or past validity; those found past it just now
--                        are recorded (record_expiries)
--   6 BELOW_MINIMUM_SPEND  naming them all: `amount` is under `min_spend` for each voucher
local function refuse_vouchers(keys, user, vouchers, amount, min_spend, valid_for, now, now_s, margin,
                               first_in_use)
  local granted_at = grants_of(keys[2], keys[3], user)
  local not_owned = function(v) return granted_at[v] == nil end
  for _, v in ipairs(vouchers) do
    if not_owned(v) then return refusal(4, vouchers, not_owned) end
  end
  local states = {}
  local in_use = function(v) return states[v] == 'used' or states[v] == 'released' end
  for _, v in ipairs(vouchers) do
    local use = redis.call('HGET', keys[4], 'v:' .. v)
    states[v] = use_state(use, now, margin)
    if states[v] == 'stale' then return { 13, v, use } end
    if first_in_use and in_use(v) then return refusal(2, vouchers, function(x) return x == v end) end
  end
  for _, v in ipairs(vouchers) do
    if in_use(v) then return refusal(2, vouchers, in_use) end
  end
  local newly_expired = function(v)
    return states[v] == 'free' and past_validity(granted_at[v], valid_for, now)
  end
  local expired = function(v) return states[v] == 'expired' or newly_expired(v) end
  for _, v in ipairs(vouchers) do
    if expired(v) then
      record_expiries(keys[1], keys[4], keys[5], user, vouchers, newly_expired, now, now_s)
      return refusal(3, vouchers, expired)
    end
  end
  if amount < min_spend * #vouchers then return refusal(6, vouchers, function() return true end) end
  return nil
end
