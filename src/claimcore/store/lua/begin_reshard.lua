#!lua
-- begin_reshard.lua: publish a campaign's new shard map, or find the one being built.
--
-- KEYS[1]  cc:{C}:campaign   HASH with the live map: shards, epoch, slots (shards ever
--                            made), and while resharding: status resharding, prev_shards
-- ARGV     target shard count
-- Returns  { verdict, prev_shards, shards, epoch, slots } where verdict is
--   'started'  the map now says `target` shards at epoch+1 (status resharding);
--   'resume'   a reshard to `target` was started and not finished: finish it;
--   'same'     the campaign already has `target` shards; nothing changed;
--   'busy'     an unfinished reshard to another count holds the campaign;
--   'missing'  no ready campaign has this id.
--
-- The map is published before any shard is fenced: a node that reloads it
-- mid-reshard routes by the new map, and shards not yet fenced answer MOVING.

local h = redis.call('HMGET', KEYS[1], 'status', 'shards', 'epoch', 'slots', 'prev_shards')
local status, shards, epoch, slots = h[1], tonumber(h[2] or '0'), tonumber(h[3] or '0'), tonumber(h[4] or '0')
local target = tonumber(ARGV[1])
if status == 'resharding' then
  local verdict = 'busy'
  if shards == target then verdict = 'resume' end
  return { verdict, tonumber(h[5]), shards, epoch, slots }
end
if status ~= 'ready' then return { 'missing', 0, 0, 0, 0 } end
if shards == target then return { 'same', shards, shards, epoch, slots } end
epoch = epoch + 1
slots = math.max(slots, target)
redis.call('HSET', KEYS[1], 'status', 'resharding', 'prev_shards', shards, 'shards', target,
  'epoch', epoch, 'slots', slots)
return { 'started', shards, target, epoch, slots }
