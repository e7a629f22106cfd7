-- release: drops one hold of a lock, only for the lease that holds it.
--
-- The last hold leaves a tombstone (state 'released', kept for one lock TTL)
-- instead of deleting the key, so a KeepAlive racing with the release knows
-- the lock was released rather than lost; a tombstone counts as free.
--
-- KEYS[1]  lock hash
-- ARGV[1]  lease id
-- ARGV[2]  pub/sub channel for lock events
-- returns  {1, remaining holds, held ms} released (0 holds: lock free and
--          waiters notified); {0} not held; {2} held by another lease
-- O(1)
local f = redis.call('HMGET', KEYS[1], 'lease', 'state', 'count', 'since', 'px')
if f[2] ~= 'held' then
  return { 0 }
end
if f[1] ~= ARGV[1] then
  return { 2 }
end
local count = tonumber(f[3]) - 1
if count > 0 then
  redis.call('HSET', KEYS[1], 'count', count)
  return { 1, count, 0 }
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'released', 'count', 0)
redis.call('PEXPIRE', KEYS[1], f[5])
redis.call('PUBLISH', ARGV[2], 'r|' .. KEYS[1])
return { 1, 0, now_ms - tonumber(f[4]) }
