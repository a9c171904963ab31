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

-- #include _returning

local st = redis.call('HMGET', KEYS[1], 'stock', 'epoch', unpack(RETURNING))
local stock, epoch = tonumber(st[1] or '0'), tonumber(st[2] or '0')
local lent = redis.call('HGET', KEYS[2], ARGV[2])
if lent then  -- this lease was made already: a resend after a lost reply takes nothing more
  return { tonumber(string.match(lent, '^[^|]*|([^|]*)|')), stock, epoch }
end
if epoch ~= tonumber(ARGV[5]) then return { 0, stock, epoch } end
if (st[3] and st[3] ~= '0') or (st[5] and st[5] ~= '0') then
  local due, r1, a1, r2, a2 = due_returning(st, 3, redis_ms())
  if due > 0 then
    stock = stock + due
    redis.call('HSET', KEYS[1], 'stock', stock)
    write_returning(KEYS[1], r1, a1, r2, a2)
  end
end
local taken = math.min(stock, tonumber(ARGV[1]))
if taken <= 0 then return { 0, stock, epoch } end
redis.call('HSET', KEYS[1], 'stock', stock - taken)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. '|' .. taken .. '|' .. ARGV[4])
return { taken, stock - taken, epoch }
