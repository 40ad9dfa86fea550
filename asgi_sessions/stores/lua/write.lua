-- Save one session: merge a change into its hash, or create it, or (move) merge and
-- rename it to a new id, atomically. asgi_sessions.stores.redis builds the arguments.
--
-- KEYS[1] the session's hash; KEYS[2] the hash it ends under (= KEYS[1] unless moving).
-- ARGV: index prefix (+ owner = an owner's index), member (the index entry: the hash's
-- name after the key prefix), new member, now, create, replace, owner changed, owner,
-- expiry changed, expiry, default expires-at (already capped), cap, created-at, seal,
-- default expires-at in whole milliseconds, device, number of deleted keys, the deleted
-- fields, the number of merge arguments and the merges, then field/value pairs to set. A
-- merge (asgi_sessions.stores.base.merge_value, which this mirrors) is field, 'i', delta
-- (a counter) or field, 'l', #seen, #appended, the seen items, the appended items (a list
-- used as a queue), items as the serializer's JSON texts: spliced as text, never decoded
-- and encoded again (cjson would write numbers and empty arrays differently). Flags are
-- '1' or '0'; owner, expiry and device are '-' (none) or '+' .. value; cap is '' (none)
-- or a timestamp. The device (m:d, opaque text: asgi_sessions.devices) is read only on a
-- create or an owner change: it is written exactly when the owner is, else kept. The
-- defaults come precomputed as text because string.format('%.17g') is the costliest line
-- here (measured: ~3.5 us).
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

local cur = redis.call('HMGET', src, 'm:e', 'm:c', 'm:o', 'm:x', 'm:m', 'm:d')
-- A sealed record (m:m) has moved to another slot: it is gone for everyone but its mover.
local live = cur[1] and tonumber(cur[1]) > now and not cur[5]
local created, stored_owner, owner, expiry, device
if create then
  if live then return {1} end
  -- A record only our clock calls dead is replaced, not merged into (nor its device kept).
  if cur[1] or cur[3] or cur[6] then redis.call('DEL', src) end
  created, stored_owner = ARGV[13], false
  owner, expiry, device = setting(ARGV[8]), setting(ARGV[10]), setting(ARGV[16])
else
  if not live then return {2} end
  created, stored_owner = cur[2], cur[3]
  owner, expiry, device = cur[3], cur[4], cur[6]
  if ARGV[7] == '1' then owner, device = setting(ARGV[8]), setting(ARGV[16]) end
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
local ends_text, ends_ms
local kind = expiry and string.sub(expiry, 1, 2)
local idle = 0
if kind == 's:' then idle = tonumber(string.sub(expiry, 3)) end
if kind == 'a:' or idle ~= 0 then
  local ends
  if kind == 'a:' then ends = tonumber(string.sub(expiry, 3)) else ends = now + idle end
  if ARGV[12] ~= '' then ends = math.min(ends, tonumber(ARGV[12])) end
  ends_text = string.format('%.17g', ends)
  ends_ms = math.ceil(ends * 1000)
else
  ends_text, ends_ms = ARGV[11], ARGV[15]
end

local rewrite = create or replace
if replace then redis.call('DEL', key) end
-- unpack() has a bounded stack: pass long argument lists in chunks.
local ndel = tonumber(ARGV[17])
local i = 18
if not rewrite then
  while i < 18 + ndel do
    local last = math.min(i + 499, 17 + ndel)
    redis.call('HDEL', key, unpack(ARGV, i, last))
    i = last + 1
  end
end
i = 18 + ndel
local nmerge = tonumber(ARGV[i])
local merged_away = false
if nmerge > 0 then
  -- The top-level items of a compact JSON array, as text; nil if it is not one.
  local function split(text)
    if string.sub(text, 1, 1) ~= '[' then return nil end
    local items = {}
    if text == '[]' then return items end
    local depth, start, p, n = 0, 2, 2, #text
    while p <= n do
      p = string.find(text, '[%[%]{}",]', p)
      if not p then return nil end
      local c = string.sub(text, p, p)
      if c == '"' then
        -- to the closing quote, past escaped characters
        p = p + 1
        repeat
          p = string.find(text, '["\\]', p)
          if not p then return nil end
          if string.sub(text, p, p) == '\\' then p = p + 2 else break end
        until false
      elseif c == '[' or c == '{' then
        depth = depth + 1
      elseif c == ',' then
        if depth == 0 then items[#items + 1] = string.sub(text, start, p - 1); start = p + 1 end
      elseif depth == 0 then
        if c ~= ']' or p ~= n then return nil end
        items[#items + 1] = string.sub(text, start, p - 1)
        return items
      else
        depth = depth - 1
      end
      p = p + 1
    end
    return nil
  end
  local j = i + 1
  local last = i + nmerge
  while j <= last do
    local field, kind = ARGV[j], ARGV[j + 1]
    local stored = redis.call('HGET', key, field)
    local value = stored
    if kind == 'i' then
      if not stored then
        value = ARGV[j + 2]
      elseif string.match(stored, '^%-?%d+$') then
        value = string.format('%.0f', tonumber(stored) + tonumber(ARGV[j + 2]))
      end
      j = j + 3
    else
      local nseen, nappend = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
      local first = j + 4
      local items = {}
      if stored then items = split(stored) end
      if items then
        -- Drop the longest tail of what this request saw that still leads the list.
        local drop = 0
        for k = math.min(nseen, #items), 1, -1 do
          local same = true
          for m = 1, k do
            if items[m] ~= ARGV[first + nseen - k + m - 1] then same = false; break end
          end
          if same then drop = k; break end
        end
        local out = {}
        for m = drop + 1, #items do out[#out + 1] = items[m] end
        for m = first + nseen, first + nseen + nappend - 1 do out[#out + 1] = ARGV[m] end
        if #out == 0 then value = false else value = '[' .. table.concat(out, ',') .. ']' end
      end
      j = first + nseen + nappend
    end
    if not value then
      if stored then redis.call('HDEL', key, field); merged_away = true end
    elseif value ~= stored then
      redis.call('HSET', key, field, value)
    end
  end
end
i = i + nmerge + 1
local nset = #ARGV - i + 1
-- Few keys (the usual save) go out with the metadata in one HSET below; many in chunks.
local pairs_left = {}
if nset <= 200 then
  for j = i, #ARGV do pairs_left[#pairs_left + 1] = ARGV[j] end
else
  while i <= #ARGV do
    local last = math.min(i + 999, #ARGV)
    redis.call('HSET', key, unpack(ARGV, i, last))
    i = last + 1
  end
end

local function unindex()
  if stored_owner then redis.call('ZREM', index .. stored_owner, sid) end
end

-- Emptiness is decided here, after the merge: only a record with no key left goes (a
-- concurrent request may have added one since this one loaded).
if nset == 0 and (replace or ndel > 0 or merged_away) then
  local left = 0
  if not replace then
    local meta = 3
    if cur[3] then meta = meta + 1 end
    if cur[4] then meta = meta + 1 end
    if cur[6] then meta = meta + 1 end
    left = redis.call('HLEN', key) - meta
  end
  if left <= 0 then
    redis.call('DEL', key)
    unindex()
    return {0, 0, ends_text, ''}
  end
end

local meta = pairs_left
local n = #meta
meta[n + 1] = 'm:e'; meta[n + 2] = ends_text; meta[n + 3] = 'm:u'; meta[n + 4] = ARGV[4]
if rewrite then
  meta[#meta + 1] = 'm:c'; meta[#meta + 1] = created
end
local gone = {}
if rewrite or ARGV[7] == '1' then
  if owner then
    meta[#meta + 1] = 'm:o'; meta[#meta + 1] = owner
  elseif not rewrite then
    gone[#gone + 1] = 'm:o'
  end
  if device then
    meta[#meta + 1] = 'm:d'; meta[#meta + 1] = device
  elseif not rewrite and cur[6] then
    gone[#gone + 1] = 'm:d'
  end
end
if expiry and (rewrite or ARGV[9] == '1') then
  meta[#meta + 1] = 'm:x'; meta[#meta + 1] = expiry
elseif not expiry and not rewrite and ARGV[9] == '1' then
  gone[#gone + 1] = 'm:x'
end
if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
if seal then
  meta[#meta + 1] = 'm:m'; meta[#meta + 1] = dsid
end
redis.call('HSET', key, unpack(meta))
-- A whole number of milliseconds (13 digits) goes to Redis exactly as Lua prints it.
if seal then
  -- The mover creates the record in its new slot next; if it dies first, this copy
  -- expires within a minute (the user is signed out, never in two places).
  redis.call('PEXPIREAT', key, math.min(tonumber(ends_ms), math.ceil(now * 1000) + 60000))
  unindex()
  return {3, redis.call('HGETALL', key)}
end
redis.call('PEXPIREAT', key, ends_ms)

if stored_owner and (stored_owner ~= owner or dsid ~= sid) then unindex() end
if owner then
  local okey = index .. owner
  redis.call('ZADD', okey, ends_text, dsid)
  -- The index lives as long as the owner's longest-lived session.
  local top = redis.call('ZRANGE', okey, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', okey, math.ceil(tonumber(top[2]) * 1000))
end
local reported = ''
if expiry then reported = '+' .. expiry end
return {0, 1, ends_text, reported}
