#!lua
-- credit.lua: add a lease's stock to its destination shard, exactly once.
--
-- KEYS[1]  cc:{C:s}:state      (destination)
-- KEYS[2]  cc:{C:s}:credited   SET of lease ids already credited here
-- ARGV     lease_id, amount, and for a later round its release time (unix ms; 0 or absent = none)
-- Returns  { 1 if credited now, 0 if credited before (or, for a round, not due yet by this
--          shard's Redis clock: rounds are released by Redis time, never by a node's clock);
--          stock after }
--
-- The lease id is recorded before the stock is added: if the second write
-- could fail, stock would be lost (undersell), never created (oversell).

-- #include _clock

if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('credit: destination shard missing') end
local not_before = tonumber(ARGV[3] or '0')
if not_before > 0 then
  if redis_ms() < not_before then
    return { 0, tonumber(redis.call('HGET', KEYS[1], 'stock')) }
  end
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return { 0, tonumber(redis.call('HGET', KEYS[1], 'stock')) }
end
return { 1, redis.call('HINCRBY', KEYS[1], 'stock', ARGV[2]) }
