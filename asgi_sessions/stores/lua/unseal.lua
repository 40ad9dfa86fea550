-- Undo a seal (write.lua) after a move to another slot failed half-way: the record lives
-- on under its old key, in its owner's index again.
-- KEYS[1] the sealed hash. ARGV: index prefix, member, the member the move was bound for.
-- Returns 1, or 0 if the hash is gone or was not sealed for that move.
local key = KEYS[1]
local m = redis.call('HMGET', key, 'm:m', 'm:e', 'm:o')
if m[1] ~= ARGV[3] then return 0 end
redis.call('HDEL', key, 'm:m')
redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil(tonumber(m[2]) * 1000)))
if m[3] then
  local okey = ARGV[1] .. m[3]
  redis.call('ZADD', okey, m[2], ARGV[2])
  local top = redis.call('ZRANGE', okey, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', okey, string.format('%.0f', math.ceil(tonumber(top[2]) * 1000)))
end
return 1
