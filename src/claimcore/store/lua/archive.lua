#!lua
-- archive.lua: archive or unarchive a campaign, or clear its pause unless it is archived: the
-- one place that decides whether a campaign is open to claims when it is taken off the lists.
--
-- KEYS[1]  cc:{C}:campaign   HASH (create_campaign.lua); this script keeps its 'archived' flag
-- ARGV     op ('archive' | 'unarchive' | 'resume'), ends_at_ms (0: never), sold_out (1: the
--          caller found no stock left anywhere, nothing moving and no round to come)
-- Returns  1 done (now, or before: a resend answers the same), 0 refused (archive: the campaign
--          is open; resume: it is archived and paused), -1 no such campaign
--
-- Open means: not paused, not ended by this Redis's clock, and not sold out. Pause and resume
-- both write this hash's 'paused' after (pause) or before (resume, through this script) the
-- shards' flags, so a campaign seen paused here is paused on every shard, and a resume racing
-- an archive either clears the pause first (the archive is refused) or is refused itself. A
-- claim only ever takes stock, so it cannot turn a sold-out reading into an open campaign.
-- #include _clock

local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'ready' and status ~= 'resharding' then return -1 end
local op = ARGV[1]
local archived = redis.call('HGET', KEYS[1], 'archived') == '1'
if op == 'unarchive' then
  if archived then redis.call('HSET', KEYS[1], 'archived', 0) end
  return 1
end
if op == 'resume' then
  -- refused only while paused: re-applying "not paused" (a reshard does) changes nothing here
  if archived and redis.call('HGET', KEYS[1], 'paused') == '1' then return 0 end
  redis.call('HSET', KEYS[1], 'paused', 0)
  return 1
end
if archived then return 1 end
local ends_at = tonumber(ARGV[2])
local ended = ends_at > 0 and ends_at <= redis_ms()
local paused = redis.call('HGET', KEYS[1], 'paused') == '1'
if not (paused or ended or ARGV[3] == '1') then return 0 end
redis.call('HSET', KEYS[1], 'archived', 1)
return 1
