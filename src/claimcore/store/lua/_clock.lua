-- _clock.lua: this shard's Redis clock (TIME), the one clock that judges expiry, holds, rounds and
-- recycled stock, whichever node asks. Put in place by scripts.py (see there) in the scripts that
-- read it, directly or through _returning.lua.

-- Now, in ms.
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Now, in ms, as a number and as a string (Lua prints big numbers in exponent form).
local function redis_now()
  local now = redis_ms()
  return now, string.format('%d', now)
end
