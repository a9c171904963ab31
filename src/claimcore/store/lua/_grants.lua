-- _grants.lua: a user's grant records, as claim.lua writes them (keyspace.py):
--   users  user -> "count|last_voucher|last_at|rid1,rid2,..."
--   reqs   "user|request_id" -> "voucher|granted_at|channel"
-- Put in place by scripts.py (see there) in every script that reads them.

-- The request ids of a user record, one by one (for ... in request_ids(urec)).
local function request_ids(urec)
  return string.gmatch(string.match(urec, '^[^|]*|[^|]*|[^|]*|(.*)$'), '[^,]+')
end

-- A grant record's voucher, grant time (as stored: a string) and channel.
local function parse_grant(rec)
  return string.match(rec, '^([^|]*)|([^|]*)|(.*)$')
end

-- The user's vouchers and when each was granted, from their grant records.
local function grants_of(users_key, reqs_key, user)
  local granted_at = {}
  local urec = redis.call('HGET', users_key, user)
  if urec then
    for rid in request_ids(urec) do
      local rec = redis.call('HGET', reqs_key, user .. '|' .. rid)
      if rec then
        local vid, at = parse_grant(rec)
        granted_at[vid] = tonumber(at)
      end
    end
  end
  return granted_at
end
