#!lua
-- create_campaign.lua: record a campaign's config, or compare with the one recorded.
--
-- KEYS[1]  cc:{C}:campaign   HASH spec (JSON), status (creating|ready|resharding), created_at,
--          paused, the live shard map (shards, epoch, slots; see begin_reshard.lua), and
--          sold_out_at (set once, by the first node that finds the campaign empty)
-- ARGV     spec_json, now_ms, shards
-- Returns  'created' (new, status creating), 'same' (identical spec exists),
--          or 'different' (another spec holds this id; nothing changed).

local spec = redis.call('HGET', KEYS[1], 'spec')
if spec then
  if spec == ARGV[1] then return 'same' end
  return 'different'
end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'status', 'creating', 'created_at', ARGV[2], 'paused', 0,
  'shards', ARGV[3], 'epoch', 0, 'slots', ARGV[3])
return 'created'
