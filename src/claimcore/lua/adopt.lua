#!lua
-- adopt.lua: take in the records of users who move to this shard (reshard.py).
--
-- KEYS[1]  cc:{C:s}:users
-- KEYS[2]  cc:{C:s}:reqs
-- KEYS[3]  cc:{C:s}:redeem
-- ARGV     users, reqs, redeem: the three blobs export.lua returned
-- Returns  { user records written, grant records written, redemption records written }
--
-- HSETNX: a record already here is never overwritten, so copying the same
-- records twice (a reshard resumed after a crash) changes nothing.

local out = { 0, 0, 0 }
for i = 1, 3 do
  for field, value in string.gmatch(ARGV[i], '([^\t\n]+)\t([^\n]*)') do
    out[i] = out[i] + redis.call('HSETNX', KEYS[i], field, value)
  end
end
return out
