-- _epoch.lua: the shard-map epoch check that the scripts on a user's shard start with (claim.lua
-- makes the same check on the fields it reads anyway). Put in place by scripts.py (see there).

-- The refusal of a caller that routed by another epoch of the campaign's shard map than this
-- shard's (KEYS[1], its state), or nil: { -2, epoch } STALE, the caller's map is older (reload it,
-- route again); { -3, epoch } MOVING, the shard is frozen while a reshard moves users in, or not
-- yet at the caller's newer epoch (retry shortly). The caller returns it as its own reply.
local function epoch_refusal(state_key, caller_epoch)
  local st = redis.call('HMGET', state_key, 'epoch', 'moving')
  local epoch, node_epoch = tonumber(st[1] or '0'), tonumber(caller_epoch)
  if node_epoch < epoch then return { -2, epoch } end
  if node_epoch > epoch or st[2] == '1' then return { -3, epoch } end
  return nil
end
