-- The usual save, on its own short path: keys set in a live record, nothing deleted, no
-- owner or expiry change, no move. write.lua does everything else (and this too); the
-- two must agree on it, which the model checker's programs check on every store.
-- Measured on one Redis 7.0 (`INFO commandstats`, bench/RESULTS.md "Redis write: where
-- the time goes"): 14-18 us a call, against 21-26 for write.lua and 2.5-3 for SET.
--
-- KEYS[1] the session's hash. ARGV: index prefix (+ owner = an owner's index), member
-- (the index entry), now, default expires-at (already capped) as text and in whole
-- milliseconds, cap ('' for none), then field/value pairs to set.
-- Returns 0 if the record is gone; 1 if it now ends at the default expires-at sent and
-- has no expiry setting of its own (the usual case: a number is the cheapest reply to
-- convert, a table costs ~3 us); else {expires-at, expiry setting}.
local key = KEYS[1]
local now = tonumber(ARGV[3])
local cur = redis.call('HMGET', key, 'm:e', 'm:o', 'm:x', 'm:m')
-- A sealed record (m:m) has moved to another slot: it is gone for everyone but its mover.
if not cur[1] or tonumber(cur[1]) <= now or cur[4] then return 0 end

-- When the record ends, from the stored expiry setting (expiry.resolve_expires_at).
local expiry = cur[3]
local ends_text, ends_ms = ARGV[4], ARGV[5]
if expiry then
  local kind = string.sub(expiry, 1, 2)
  local idle = 0
  if kind == 's:' then idle = tonumber(string.sub(expiry, 3)) end
  if kind == 'a:' or idle ~= 0 then
    local ends
    if kind == 'a:' then ends = tonumber(string.sub(expiry, 3)) else ends = now + idle end
    if ARGV[6] ~= '' then ends = math.min(ends, tonumber(ARGV[6])) end
    ends_text = string.format('%.17g', ends)
    ends_ms = math.ceil(ends * 1000)
  end
end

-- The pairs straight from ARGV: no table built and copied on every save.
redis.call('HSET', key, 'm:e', ends_text, 'm:u', ARGV[3], unpack(ARGV, 7))
redis.call('PEXPIREAT', key, ends_ms)
local owner = cur[2]
if owner then
  -- The owner's index follows the session's end, and lives as long as its longest one.
  local okey = ARGV[1] .. owner
  redis.call('ZADD', okey, ends_text, ARGV[2])
  local top = redis.call('ZRANGE', okey, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', okey, math.ceil(tonumber(top[2]) * 1000))
end
if expiry then return {ends_text, expiry} end
return 1
