-- describe: a consistent snapshot of a lock (read-only).
--
-- KEYS[1]  lock hash
-- KEYS[2]  waiters zset
-- returns  {state, lease, owner, token, count, TTL ms, live waiters}
--          (state false when the key is absent)
-- O(log waiters)
local now_ms = time_ms()
local f = redis.call('HMGET', KEYS[1], 'state', 'lease', 'owner', 'token', 'count')
local waiters = redis.call('ZCOUNT', KEYS[2], '(' .. now_ms, '+inf')
return { f[1], f[2], f[3], tonumber(f[4]) or 0, tonumber(f[5]) or 0, redis.call('PTTL', KEYS[1]), waiters }
