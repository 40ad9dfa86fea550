-- Delete sessions and their owner-index entries.
-- KEYS: session hashes. ARGV[1]: prefix. Returns how many existed.
local prefix = ARGV[1]
local n = 0
for _, key in ipairs(KEYS) do
  local owner = redis.call('HGET', key, 'm:o')
  if owner then
    redis.call('ZREM', prefix .. 'owner:' .. owner, string.sub(key, #prefix + 1))
  end
  n = n + redis.call('DEL', key)
end
return n
