-- Delete sessions and their owner-index entries.
-- KEYS: session hashes (on a cluster: in one slot). ARGV: key prefix, index prefix (+ owner
-- = that owner's index, in the same slot). Returns how many existed.
local prefix, index = ARGV[1], ARGV[2]
local n = 0
for _, key in ipairs(KEYS) do
  local owner = redis.call('HGET', key, 'm:o')
  if owner then
    redis.call('ZREM', index .. owner, string.sub(key, #prefix + 1))
  end
  n = n + redis.call('DEL', key)
end
return n
