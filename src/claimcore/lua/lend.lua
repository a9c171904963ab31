#!lua
-- lend.lua: take stock out of a donor shard for another shard of the same campaign.
--
-- KEYS[1]  cc:{C:d}:state    (donor)
-- KEYS[2]  cc:{C:d}:leases   HASH lease_id -> "dest|amount|at"
-- ARGV     want, lease_id, dest_shard, now_ms
-- Returns  { taken, stock_left }. taken may be 0 (donor empty or missing).
--
-- The stock leaves the donor and is recorded as a lease in the same call, so
-- stock + leases + granted stays constant; credit.lua then adds it to the
-- destination, and the lease is deleted only after that (see inventory.py).

local stock = tonumber(redis.call('HGET', KEYS[1], 'stock') or '0')
local want = tonumber(ARGV[1])
local taken = math.min(stock, want)
if taken <= 0 then return { 0, stock } end
redis.call('HSET', KEYS[1], 'stock', stock - taken)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. '|' .. taken .. '|' .. ARGV[4])
return { taken, stock - taken }
