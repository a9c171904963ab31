#!lua
-- adopt.lua: take in the records of users who move to this shard (reshard.py).
--
-- KEYS[1]  cc:{C:s}:users
-- KEYS[2]  cc:{C:s}:reqs
-- KEYS[3]  cc:{C:s}:redeem
-- KEYS[4]  cc:{C:s}:elig
-- KEYS[5]  cc:{C:s}:state   eligdata set to 1 once an eligibility record arrives: claims here
--                           must check it, whatever the shard had before
-- ARGV     users, reqs, redeem, elig: the four blobs export.lua returned
-- Returns  the records written, per blob
--
-- HSETNX: a record already here is never overwritten, so copying the same
-- records twice (a reshard resumed after a crash) changes nothing.

local out = { 0, 0, 0, 0 }
for i = 1, 4 do
  for field, value in string.gmatch(ARGV[i], '([^\t\n]+)\t([^\n]*)') do
    out[i] = out[i] + redis.call('HSETNX', KEYS[i], field, value)
  end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[5], 'eligdata', 1) end
return out
