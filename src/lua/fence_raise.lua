-- fence_raise: Redlock mode; raises a node's fence counter (and the lock's
-- recorded token) to the token chosen for a grant across a majority.
--
-- KEYS[1]  fence counter (see acquire.lua)
-- KEYS[2]  lock hash
-- ARGV[1]  token
-- ARGV[2]  fence counter TTL in ms
-- ARGV[3]  lease id: the lock's token is updated only while it holds it
-- returns  1
-- O(1)
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
local f = redis.call('HMGET', KEYS[2], 'lease', 'state')
if f[1] == ARGV[3] and f[2] == 'held' then
  redis.call('HSET', KEYS[2], 'token', ARGV[1])
end
return 1
