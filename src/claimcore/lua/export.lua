#!lua
-- export.lua: read the records of users about to move off this shard (reshard.py).
--
-- KEYS[1]  cc:{C:s}:users
-- KEYS[2]  cc:{C:s}:reqs
-- ARGV[1]  the users, one per line
-- Returns  { users, reqs }: lines "user<TAB>user_record" and "user|request_id<TAB>record"
--
-- One argument in, two out, whatever the number of users: a reshard moves
-- tens of thousands of records while claims of the movers wait, and every
-- argument costs the node microseconds to pack. Ids and records never hold
-- tabs or newlines (claimcore.validation), so the lines need no escaping.

local users, reqs = {}, {}
for user in string.gmatch(ARGV[1], '[^\n]+') do
  local urec = redis.call('HGET', KEYS[1], user)
  if urec then
    users[#users + 1] = user .. '\t' .. urec
    for rid in string.gmatch(string.match(urec, '^[^|]*|[^|]*|[^|]*|(.*)$'), '[^,]+') do
      local field = user .. '|' .. rid
      local rec = redis.call('HGET', KEYS[2], field)
      if rec then reqs[#reqs + 1] = field .. '\t' .. rec end
    end
  end
end
return { table.concat(users, '\n'), table.concat(reqs, '\n') }
