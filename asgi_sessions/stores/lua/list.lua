-- List an owner's live sessions, pruning the index as it goes.
-- KEYS[1]: the owner's sorted set. ARGV: key prefix, owner, now. Returns member (the
-- hash's name after the prefix), created, updated, expires and device ('' for a record
-- written before devices were kept) of each live session, and drops members whose hash
-- vanished (Redis expired it natively), expired by our clock, or now belongs to someone
-- else.
local okey, prefix, owner, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for _, sid in ipairs(redis.call('ZRANGE', okey, 0, -1)) do
  local key = prefix .. sid
  local m = redis.call('HMGET', key, 'm:e', 'm:c', 'm:u', 'm:o', 'm:d')
  if m[1] and m[4] == owner and tonumber(m[1]) > now then
    table.insert(out, sid); table.insert(out, m[2])
    table.insert(out, m[3]); table.insert(out, m[1]); table.insert(out, m[5] or '')
  else
    if m[1] and m[4] == owner then redis.call('DEL', key) end
    redis.call('ZREM', okey, sid)
  end
end
return out
