-- release: drops one hold of a lock, only for the lease that holds it; or,
-- with ARGV[3], undoes exactly what one acquire try left behind.
--
-- The last hold leaves a tombstone (state 'released', kept for one lock TTL)
-- instead of deleting the key, so a KeepAlive racing with the release knows
-- the lock was released rather than lost; a tombstone counts as free. The
-- end is published once: it wakes waiters (on every instance) and tells the
-- holder's KeepAlive streams that the lock was released, not lost.
--
-- KEYS[1]  lock hash (see acquire.lua)
-- ARGV[1]  lease id
-- ARGV[2]  pub/sub channel for lock events
-- ARGV[3]  '' = the holder releases one hold; else a try id (acquire.lua's
--          ARGV[7]): the whole grant if that try created it (`gid`), one
--          hold if that try took the latest one (`att`), else nothing. Safe
--          to repeat: a later try's grant or hold never matches
-- ARGV[4]  namespace and ARGV[5] lock name, for the event
-- returns  {1, remaining holds, held ms, grant id, token} released (0 holds:
--          the grant ended and the event was published); {0} not held (or
--          no match for ARGV[3]); {2} held by another lease
-- O(1)
local f = redis.call('HMGET', KEYS[1], 'lease', 'state', 'count', 'since', 'px', 'token', 'att', 'gid')
if f[2] ~= 'held' then
  return { 0 }
end
if f[1] ~= ARGV[1] then
  return { 2 }
end
local count = tonumber(f[3]) - 1
if ARGV[3] ~= '' then
  if f[8] == ARGV[3] then
    count = 0
  elseif f[7] == ARGV[3] then
    redis.call('HSET', KEYS[1], 'att', '')
  else
    return { 0 }
  end
end
if count > 0 then
  redis.call('HSET', KEYS[1], 'count', count)
  return { 1, count, 0, f[8] or '', tonumber(f[6]) }
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'released', 'count', 0)
redis.call('PEXPIRE', KEYS[1], f[5])
redis.call('PUBLISH', ARGV[2], 'e|' .. cjson.encode({
  key = KEYS[1], ns = ARGV[4], lease = f[1], name = ARGV[5], state = 'released', token = f[6],
}))
return { 1, 0, now_ms - tonumber(f[4]), f[8] or '', tonumber(f[6]) }
