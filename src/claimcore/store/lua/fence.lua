#!lua
-- fence.lua: move one shard to a new epoch of its campaign's shard map (reshard.py).
--
-- KEYS[1]  cc:{C:s}:state
-- ARGV     epoch, moving (1 = frozen: claims get MOVING until unfrozen),
--          per_user_limit, starts_at_ms, ends_at_ms, paused, eligibility rule, eligdata
-- Returns  { epoch before, 1 if the shard was created now }
--
-- eligdata is set on every shard, made now or revived (a retired shard a reshard up brings
-- back): a deny list loaded after that shard retired must hold there too. A fence sent again
-- after its reshard unfroze the shard (a resend) does not freeze it again: `thawed` says which
-- epoch was unfrozen.
--
-- From here on claim.lua and lend.lua refuse callers on any other epoch, so a
-- node still routing by the old map can never write to this shard again. A
-- shard that does not exist yet (the campaign grows) is created empty; a
-- retired one keeps its seq, so voucher ids stay unique if it comes back.

local st = redis.call('HMGET', KEYS[1], 'epoch', 'stock', 'thawed')
local before = tonumber(st[1] or '0')
local epoch = tonumber(ARGV[1])
if before > epoch then return redis.error_reply('fence: shard is at epoch ' .. before .. ', newer than ' .. epoch) end
local created = 0
if not st[2] then
  redis.call('HSET', KEYS[1], 'stock', 0, 'seq', 0, 'granted', 0, 'limit', ARGV[3],
    'starts', ARGV[4], 'ends', ARGV[5], 'paused', ARGV[6], 'elig', ARGV[7], 'eligdata', ARGV[8])
  created = 1
end
if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'eligdata', 1) end
local moving = ARGV[2]
if tonumber(st[3] or '-1') == epoch then moving = '0' end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'moving', moving)
return { before, created }
