#!lua
-- lend.lua: take stock out of a donor shard for another shard of the same campaign.
--
-- KEYS[1]  cc:{C:d}:state    (donor)
-- KEYS[2]  cc:{C:d}:leases   HASH lease_id -> "dest|amount|at"
-- ARGV     want, lease_id, dest_shard, now_ms, epoch of the borrower's shard map
-- Returns  { taken, stock_left, donor_epoch }. taken may be 0 (donor empty or
--          missing); it is always 0 when the epochs differ: a node on an old map
--          must not move stock (the reshard drains retired shards once, after
--          fencing them, and no lease may be made behind its back).
--
-- Sending it again with the same lease_id (a resend after a lost reply) changes
-- nothing while the lease is recorded.
--
-- The stock leaves the donor and is recorded as a lease in the same call, so
-- stock + leases + granted stays constant; credit.lua then adds it to the
-- destination, and the lease is deleted only after that (see inventory.py).

local st = redis.call('HMGET', KEYS[1], 'stock', 'epoch')
local stock, epoch = tonumber(st[1] or '0'), tonumber(st[2] or '0')
local lent = redis.call('HGET', KEYS[2], ARGV[2])
if lent then  -- this lease was made already: a resend after a lost reply takes nothing more
  return { tonumber(string.match(lent, '^[^|]*|([^|]*)|')), stock, epoch }
end
if epoch ~= tonumber(ARGV[5]) then return { 0, stock, epoch } end
local taken = math.min(stock, tonumber(ARGV[1]))
if taken <= 0 then return { 0, stock, epoch } end
redis.call('HSET', KEYS[1], 'stock', stock - taken)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. '|' .. taken .. '|' .. ARGV[4])
return { taken, stock - taken, epoch }
