-- The HMAC key that places each owner's sessions in a cluster slot (see
-- asgi_sessions.stores.redis_layout): read it, or store the proposed one if there is none.
-- KEYS[1] its name. ARGV[1] the value to keep if there is none yet. Returns the value kept.
local value = redis.call('GET', KEYS[1])
if value then return value end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
