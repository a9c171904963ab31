#!lua
-- init_shard.lua: create one campaign shard with its initial stock, once.
--
-- KEYS[1]  cc:{C:s}:state
-- ARGV     stock, per_user_limit, starts_at_ms, ends_at_ms, eligibility rule ("" = none)
-- Returns  1 if created, 0 if the shard already existed (left unchanged).

if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'seq', 0, 'granted', 0,
  'limit', ARGV[2], 'starts', ARGV[3], 'ends', ARGV[4], 'paused', 0, 'elig', ARGV[5])
return 1
