#!lua
-- forget.lua: delete the records of users who moved off this shard (reshard.py).
--
-- KEYS[1]  cc:{C:s}:users
-- KEYS[2]  cc:{C:s}:reqs
-- KEYS[3]  cc:{C:s}:redeem
-- KEYS[4]  cc:{C:s}:elig
-- ARGV[1]  the users, one per line (their records are already on their new shard)
-- ARGV[2]  the redemption fields export.lua returned for them, one per line
-- Returns  the number of user records deleted

-- #include _grants

local gone = 0
for user in string.gmatch(ARGV[1], '[^\n]+') do
  redis.call('HDEL', KEYS[4], user)
  local urec = redis.call('HGET', KEYS[1], user)
  if urec then
    for rid in request_ids(urec) do
      redis.call('HDEL', KEYS[2], user .. '|' .. rid)
    end
    gone = gone + redis.call('HDEL', KEYS[1], user)
  end
end
for field in string.gmatch(ARGV[2], '[^\n]+') do
  redis.call('HDEL', KEYS[3], field)
end
return gone
