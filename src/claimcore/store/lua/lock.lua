#!lua
-- lock.lua: a lease-style lock held by one owner at a time (one reshard per campaign).
--
-- KEYS[1]  cc:{C}:reshard   STRING the holder's token, with an expiry
-- ARGV     op ('take' | 'extend' | 'release'), owner token, ttl_ms
-- Returns  1 if done, 0 if another owner holds the lock
--
-- The lock expires by itself, so a node that dies mid-reshard blocks the next
-- attempt for at most ttl_ms; the holder extends it while it works.

local holder = redis.call('GET', KEYS[1])
if ARGV[1] == 'take' then
  if holder and holder ~= ARGV[2] then return 0 end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if holder ~= ARGV[2] then return 0 end
if ARGV[1] == 'extend' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) else redis.call('DEL', KEYS[1]) end
return 1
