#!lua
-- eligibility.lua: load or change users' eligibility records on one shard (变更资格).
--
-- KEYS[1]  cc:{C:s}:state   HASH epoch, moving; eligdata set to 1 here
-- KEYS[2]  cc:{C:s}:elig    HASH user -> "allowed|denied|region|tag1,tag2"
-- KEYS[3]  cc:{C:s}:eligcalls  SET the ids of the calls applied here
-- ARGV[1]  epoch of the caller's shard map
-- ARGV[2]  lines "user<TAB>record", or "user<TAB>" to forget the user's record
-- ARGV[3]  the call's id (one per UpdateEligibility, eligibility.py)
-- Returns  { records written or removed (0 for a call applied before) }, or { -2, epoch } /
--          { -3, epoch } as claim.lua
--
-- A call sent again (the Redis client resends a call whose connection broke, however late)
-- changes nothing: otherwise an old update resent after a newer one would overwrite it.
--
-- Atomic with the claims of this shard: a claim sees a user's old record or
-- the new one. Once any record is here, claim.lua reads them for every claim
-- (eligdata), so a deny list works on a campaign without any other rule.

-- #include _epoch

local refused = epoch_refusal(KEYS[1], ARGV[1])
if refused then return refused end
if redis.call('SADD', KEYS[3], ARGV[3]) == 0 then return { 0 } end
local n = 0
for user, record in string.gmatch(ARGV[2], '([^\t\n]+)\t([^\n]*)') do
  if record == '' then redis.call('HDEL', KEYS[2], user) else redis.call('HSET', KEYS[2], user, record) end
  n = n + 1
end
redis.call('HSET', KEYS[1], 'eligdata', 1)
return { n }
