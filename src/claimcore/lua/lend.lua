#!lua
-- lend.lua: take stock out of a donor shard for another shard of the same campaign.
--
-- KEYS[1]  cc:{C:d}:state    (donor)
-- KEYS[2]  cc:{C:d}:leases   HASH lease_id -> "dest|amount|at", "dest|amount|at|C" once credited
-- ARGV     want, lease_id, dest_shard, now_ms, epoch of the borrower's shard map
-- Returns  { taken, stock_left, donor_epoch }. taken may be 0 (donor empty or
--          missing); it is always 0 when the epochs differ: a node on an old map
--          must not move stock (the reshard drains retired shards once, after
--          fencing them, and no lease may be made behind its back).
--
-- Sending it again with the same lease_id (a resend after a lost reply, however late) takes
-- nothing more: lease records are kept, marked C, after their credit (inventory.py).
--
-- The stock leaves the donor and is recorded as a lease in the same call, so
-- stock + returning + leases + granted stays constant; credit.lua then adds it to the
-- destination, and only then is the lease marked credited. Recycled stock whose delay is
-- over joins the donor's stock first, as claim.lua would.

local st = redis.call('HMGET', KEYS[1], 'stock', 'epoch', 'returning', 'returning_at')
local stock, epoch = tonumber(st[1] or '0'), tonumber(st[2] or '0')
local lent = redis.call('HGET', KEYS[2], ARGV[2])
if lent then  -- this lease was made already: a resend after a lost reply takes nothing more
  return { tonumber(string.match(lent, '^[^|]*|([^|]*)|')), stock, epoch }
end
if epoch ~= tonumber(ARGV[5]) then return { 0, stock, epoch } end
if st[3] and st[3] ~= '0' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) >= tonumber(st[4]) then
    stock = stock + tonumber(st[3])
    redis.call('HSET', KEYS[1], 'stock', stock, 'returning', 0)
  end
end
local taken = math.min(stock, tonumber(ARGV[1]))
if taken <= 0 then return { 0, stock, epoch } end
redis.call('HSET', KEYS[1], 'stock', stock - taken)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. '|' .. taken .. '|' .. ARGV[4])
return { taken, stock - taken, epoch }
