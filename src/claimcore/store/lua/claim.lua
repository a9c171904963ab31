#!lua
-- claim.lua: grant vouchers of one campaign shard to a batch of claims, atomically.
--
-- KEYS[1]  cc:{C:s}:state   HASH stock, seq, granted, limit, starts, ends, paused; returning
--                           (recycled stock, claimable once Redis TIME reaches returning_at)
-- KEYS[2]  cc:{C:s}:users   HASH user -> "count|last_voucher|last_at|rid1,rid2,..."
-- KEYS[3]  cc:{C:s}:reqs    HASH "user|request_id" -> "voucher|granted_at|channel"
-- KEYS[4]  cc:{C:s}:log     STREAM the shard's ledger: one entry per call that granted,
--                           e=grant t=now g="user<TAB>request_id<TAB>voucher<TAB>channel" lines
-- KEYS[5]  cc:{C:s}:elig    HASH user -> "allowed|denied|region|tags" (eligibility.lua), read
--                           only when the campaign has a rule or eligibility data was loaded
-- ARGV[1]  now_ms (front node clock): the campaign window and the grant's time. Decisions another
--          node must agree with (expiry, holds, recycled stock) use Redis TIME instead
-- ARGV[2]  voucher id prefix "<C>-<s>-"
-- ARGV[3]  epoch of the shard map the node routed by (see reshard.py)
-- ARGV[4]  until when the node's category holds are trusted, in Redis time (categories.py); 0 = none
-- ARGV[5..] triples: user_id, request_id, channel_id  (at most 1000 triples)
--
-- Returns { stock_left, code_1, voucher_1, at_1, code_2, ... } with one
-- (code, voucher, at) per triple, in order, or, with nothing written:
--   { -1 }         the shard does not exist;
--   { -2, epoch }  STALE: the node's map is older than the shard's (the campaign
--                  was resharded): reload the map and route again;
--   { -3, epoch }  MOVING: the shard is frozen while users move in, or not yet
--                  at the node's (newer) epoch (or not yet made): retry shortly;
--   { -4 }         the node's category holds are no longer trusted: hold again.
-- Codes: 1 GRANTED now, 2 GRANTED earlier to this request_id (replay),
-- 3 ALREADY_CLAIMED (user at limit; voucher = latest, if the caller's channel issued it), 4 EMPTY (this shard has
-- no stock; the node may borrow from other shards), 5 NOT_STARTED, 6 ENDED,
-- 7 PAUSED, 8 NOT_ELIGIBLE (at = why: 1 deny list, 2 allow list, 3 region, 4 tag; the
-- numbers of claimcore.v1.NotEligibleReason), 9 OTHER_CHANNEL (a replay of a request granted
-- through another channel: answered without that grant, as a channel never learns another's).
-- The idempotency key is (campaign, user, request_id), this campaign's reqs field "user|request_id":
-- request ids are made by many independent apps, so the same id from two users names two claims.
--
-- Order per claim: replay, user limit, eligibility, window/pause, stock. Every check runs
-- before any write, and all writes happen at the end in three HSETs, stock
-- first: an error can never leave a grant recorded without its decrement. The
-- ledger entry comes last: one XADD per call, not per grant, to keep the hot
-- path cheap (ledger.py expands it).

-- #include _returning
-- #include _grants

local st = redis.call('HMGET', KEYS[1], 'stock', 'seq', 'granted', 'limit', 'starts', 'ends', 'paused',
  'epoch', 'moving', 'elig', 'eligdata', 'returning', 'returning_at', 'returning_next', 'returning_next_at')
local epoch, node_epoch = tonumber(st[8] or '0'), tonumber(ARGV[3])
if not st[1] then
  if node_epoch > 0 then return { -3, 0 } end  -- a reshard published it; fence.lua makes it next
  return { -1 }
end
if node_epoch < epoch then return { -2, epoch } end
if node_epoch > epoch or st[9] == '1' then return { -3, epoch } end
local trusted_until = tonumber(ARGV[4])
if trusted_until > 0 then  -- category holds are judged by Redis time, as holds.lua set them
  if redis_ms() > trusted_until then return { -4 } end
end
local stock, seq, granted = tonumber(st[1]), tonumber(st[2]), tonumber(st[3])
-- Recycled stock joins once its delay is over, by this shard's clock (_returning says why).
local returned, r1, a1, r2, a2 = 0, 0, 0, 0, 0
if (st[12] and st[12] ~= '0') or (st[14] and st[14] ~= '0') then
  returned, r1, a1, r2, a2 = due_returning(st, 12, redis_ms())
  stock = stock + returned
end
local limit, starts, ends = tonumber(st[4]), tonumber(st[5]), tonumber(st[6])
local now = tonumber(ARGV[1])
local prefix = ARGV[2]

local closed = 0
if st[7] == '1' then closed = 7
elseif now < starts then closed = 5
elseif ends > 0 and now >= ends then closed = 6 end

-- Eligibility: the campaign's rule "allow|regions|tags" and the user's record.
local rule = st[10] or ''
local check_elig = rule ~= '' or st[11] == '1'
local rule_allow, rule_regions, rule_tags
if check_elig then rule_allow, rule_regions, rule_tags = string.match(rule, '^(%d?)|?([^|]*)|?(.*)$') end
-- 0 when the user may claim, else why not (NotEligibleReason): the first rule that refuses, in the
-- order deny list, allow list, region, tag. A user without a record is on no list, of no region,
-- with no tag.
local function not_eligible(user)
  local rec = redis.call('HGET', KEYS[5], user)
  local allowed, denied, region, tags = '0', '0', '', ''
  if rec then allowed, denied, region, tags = string.match(rec, '^(%d)|(%d)|([^|]*)|(.*)$') end
  if denied == '1' then return 1 end
  if rule_allow == '1' and allowed ~= '1' then return 2 end
  if rule_regions ~= '' and not string.find(',' .. rule_regions .. ',', ',' .. region .. ',', 1, true) then
    return 3
  end
  for tag in string.gmatch(rule_tags, '[^,]+') do
    if not string.find(',' .. tags .. ',', ',' .. tag .. ',', 1, true) then return 4 end
  end
  return 0
end

local out = { 0 }
local new_reqs, new_users = {}, {}    -- records written by this batch, by key
local req_args, user_args = {}, {}
local logged = {}                     -- ledger lines of this call's grants
local granted_before = granted

for i = 5, #ARGV, 3 do
  local user, rid, chan = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local rkey = user .. '|' .. rid
  local rec = new_reqs[rkey] or redis.call('HGET', KEYS[3], rkey)
  if rec then
    local rvid, rat, rchan = parse_grant(rec)
    if rchan == chan then
      out[#out + 1] = 2; out[#out + 1] = rvid; out[#out + 1] = rat
    else
      out[#out + 1] = 9; out[#out + 1] = ''; out[#out + 1] = 0
    end
  else
    local urec = new_users[user] or redis.call('HGET', KEYS[2], user)
    local count, lvid, lat, rids = 0, '', 0, ''
    if urec then
      count, lvid, lat, rids = string.match(urec, '^(%d+)|([^|]*)|([^|]*)|(.*)$')
      count = tonumber(count)
    end
    local why = 0                     -- NOT_ELIGIBLE's reason, for a user below the limit
    if check_elig and count < limit then why = not_eligible(user) end
    if count >= limit then
      -- the latest voucher, unless another channel issued it (a channel never learns that)
      local last = new_reqs[user .. '|' .. string.match(rids, '([^,]*)$')] or
        redis.call('HGET', KEYS[3], user .. '|' .. string.match(rids, '([^,]*)$'))
      if last and select(3, parse_grant(last)) ~= chan then lvid, lat = '', 0 end
      out[#out + 1] = 3; out[#out + 1] = lvid; out[#out + 1] = lat
    elseif why ~= 0 then
      out[#out + 1] = 8; out[#out + 1] = ''; out[#out + 1] = why
    elseif closed ~= 0 then
      out[#out + 1] = closed; out[#out + 1] = ''; out[#out + 1] = 0
    elseif stock <= 0 then
      out[#out + 1] = 4; out[#out + 1] = ''; out[#out + 1] = 0
    else
      stock = stock - 1
      seq = seq + 1
      granted = granted + 1
      local vid = prefix .. seq
      if rids ~= '' then rids = rids .. ',' .. rid else rids = rid end
      -- ARGV[1], not `now`: Lua prints numbers >= 1e14 in exponent form
      new_reqs[rkey] = vid .. '|' .. ARGV[1] .. '|' .. chan
      new_users[user] = (count + 1) .. '|' .. vid .. '|' .. ARGV[1] .. '|' .. rids
      req_args[#req_args + 1] = rkey; req_args[#req_args + 1] = new_reqs[rkey]
      logged[#logged + 1] = user .. '\t' .. rid .. '\t' .. vid .. '\t' .. chan
      out[#out + 1] = 1; out[#out + 1] = vid; out[#out + 1] = ARGV[1]
    end
  end
end

if returned > 0 then  -- joined, even if nothing was granted
  redis.call('HSET', KEYS[1], 'stock', stock)
  write_returning(KEYS[1], r1, a1, r2, a2)
end
if granted ~= granted_before then
  for user, urec in pairs(new_users) do
    user_args[#user_args + 1] = user; user_args[#user_args + 1] = urec
  end
  redis.call('HSET', KEYS[1], 'stock', stock, 'seq', seq, 'granted', granted)
  redis.call('HSET', KEYS[2], unpack(user_args))
  redis.call('HSET', KEYS[3], unpack(req_args))
  redis.call('XADD', KEYS[4], '*', 'e', 'grant', 't', ARGV[1], 'g', table.concat(logged, '\n'))
end
out[1] = stock
return out
