-- Save one session: merge a change into its hash, or create it, or (move) merge and
-- rename it to a new id, atomically. asgi_sessions.stores.redis builds the arguments.
--
-- KEYS[1] the session's hash; KEYS[2] the hash it ends under (= KEYS[1] unless moving).
-- ARGV: index prefix (+ owner = an owner's index), member (the index entry: the hash's
-- name after the key prefix), new member, now, create, replace, owner changed, owner,
-- expiry changed, expiry, default expires-at, cap, created-at, seal, number of deleted
-- keys, the deleted fields, then field/value pairs to set. Flags are '1' or '0'; owner
-- and expiry are '-' (none) or '+' .. value; cap is '' (none) or a timestamp.
-- seal: the merge for a move to another cluster slot (asgi_sessions.stores.redis_layout):
-- the merged record stays only as the mover's copy, marked m:m, dead to everyone else.
-- Returns {0, alive (1/0), expires-at, expiry ('' or '+' .. value)} on success, {1} if a
-- create (or the target of a move) found a live record, {2} if a merge found none,
-- {3, the sealed hash's fields and values} after a seal.
local src, dst = KEYS[1], KEYS[2]
local index, sid, dsid = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])
local create, replace, seal = ARGV[5] == '1', ARGV[6] == '1', ARGV[14] == '1'

local function setting(flag)
  if string.sub(flag, 1, 1) == '+' then return string.sub(flag, 2) end
  return false
end

local cur = redis.call('HMGET', src, 'm:e', 'm:c', 'm:o', 'm:x', 'm:m')
-- A sealed record (m:m) has moved to another slot: it is gone for everyone but its mover.
local live = cur[1] and tonumber(cur[1]) > now and not cur[5]
local created, stored_owner, owner, expiry
if create then
  if live then return {1} end
  -- A record only our clock calls dead is replaced, not merged into.
  if cur[1] or cur[3] then redis.call('DEL', src) end
  created, stored_owner = ARGV[13], false
  owner, expiry = setting(ARGV[8]), setting(ARGV[10])
else
  if not live then return {2} end
  created, stored_owner = cur[2], cur[3]
  owner, expiry = cur[3], cur[4]
  if ARGV[7] == '1' then owner = setting(ARGV[8]) end
  if ARGV[9] == '1' then expiry = setting(ARGV[10]) end
  if dst ~= src then
    local target = redis.call('HGET', dst, 'm:e')
    if target and tonumber(target) > now then return {1} end
    redis.call('RENAME', src, dst)
  end
end
local key = dst

-- When the record ends: the expiry setting in force after the merge, else the default,
-- never past the cap (asgi_sessions.expiry.resolve_expires_at).
local ends
if expiry and string.sub(expiry, 1, 2) == 'a:' then
  ends = tonumber(string.sub(expiry, 3))
else
  local idle = 0
  if expiry then idle = tonumber(string.sub(expiry, 3)) end
  if idle ~= 0 then ends = now + idle else ends = tonumber(ARGV[11]) end
end
if ARGV[12] ~= '' then ends = math.min(ends, tonumber(ARGV[12])) end
local ends_text = string.format('%.17g', ends)

local rewrite = create or replace
if replace then redis.call('DEL', key) end
-- unpack() has a bounded stack: pass long argument lists in chunks.
local ndel = tonumber(ARGV[15])
local i = 16
if not rewrite then
  while i < 16 + ndel do
    local last = math.min(i + 499, 15 + ndel)
    redis.call('HDEL', key, unpack(ARGV, i, last))
    i = last + 1
  end
end
i = 16 + ndel
local nset = #ARGV - i + 1
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('HSET', key, unpack(ARGV, i, last))
  i = last + 1
end

local function unindex()
  if stored_owner then redis.call('ZREM', index .. stored_owner, sid) end
end

-- Emptiness is decided here, after the merge: only a record with no key left goes (a
-- concurrent request may have added one since this one loaded).
if nset == 0 and (replace or ndel > 0) then
  local left = 0
  if not replace then
    local meta = 3
    if cur[3] then meta = meta + 1 end
    if cur[4] then meta = meta + 1 end
    left = redis.call('HLEN', key) - meta
  end
  if left <= 0 then
    redis.call('DEL', key)
    unindex()
    return {0, 0, ends_text, ''}
  end
end

local meta = {'m:e', ends_text, 'm:u', ARGV[4]}
if rewrite then
  table.insert(meta, 'm:c'); table.insert(meta, created)
end
if owner and (rewrite or ARGV[7] == '1') then
  table.insert(meta, 'm:o'); table.insert(meta, owner)
elseif not owner and not rewrite and ARGV[7] == '1' then
  redis.call('HDEL', key, 'm:o')
end
if expiry and (rewrite or ARGV[9] == '1') then
  table.insert(meta, 'm:x'); table.insert(meta, expiry)
elseif not expiry and not rewrite and ARGV[9] == '1' then
  redis.call('HDEL', key, 'm:x')
end
if seal then
  table.insert(meta, 'm:m'); table.insert(meta, dsid)
end
redis.call('HSET', key, unpack(meta))
local ends_ms = math.ceil(ends * 1000)
if seal then
  -- The mover creates the record in its new slot next; if it dies first, this copy
  -- expires within a minute (the user is signed out, never in two places).
  redis.call('PEXPIREAT', key, string.format('%.0f', math.min(ends_ms, now * 1000 + 60000)))
  unindex()
  return {3, redis.call('HGETALL', key)}
end
redis.call('PEXPIREAT', key, string.format('%.0f', ends_ms))

if stored_owner and (stored_owner ~= owner or dsid ~= sid) then unindex() end
if owner then
  local okey = index .. owner
  redis.call('ZADD', okey, ends_text, dsid)
  -- The index lives as long as the owner's longest-lived session.
  local top = redis.call('ZRANGE', okey, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', okey, string.format('%.0f', math.ceil(tonumber(top[2]) * 1000)))
end
local reported = ''
if expiry then reported = '+' .. expiry end
return {0, 1, ends_text, reported}
