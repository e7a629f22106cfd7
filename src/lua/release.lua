-- release: drops one hold of a lock, only for the lease that holds it; or
-- undoes exactly what one acquire try left, or ends exactly one grant that
-- was released on other Redlock nodes but not here.
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
-- ARGV[3]  '' = the holder releases one hold. Else, with ARGV[4] = '', a try
--          id (acquire.lua's ARGV[7]) to undo: the hold it took (`att`), or
--          the hold that created the grant (`gid`) if a later try holds on
--          top, else nothing. With ARGV[4] set, a grant id: the grant ends
--          if it is still that grant with ARGV[4] as its latest try (what a
--          release elsewhere ended), else nothing. Both are safe to repeat
--          and never touch a later try's hold or grant
-- ARGV[4]  see ARGV[3]
-- returns  {1, remaining holds, held ms, grant id, token, latest try} released
--          (0 holds: the grant ended and the event was published; the
--          latest try as it was before this call); {0} not held, or nothing
--          to undo; {2} held by another lease
-- O(1)
local f = redis.call('HMGET', KEYS[1], 'lease', 'state', 'count', 'since', 'px', 'token', 'att', 'gid')
if f[2] ~= 'held' then
  return { 0 }
end
if f[1] ~= ARGV[1] then
  return { 2 }
end
local count = tonumber(f[3]) - 1
if ARGV[3] ~= '' and ARGV[4] ~= '' then
  if f[8] ~= ARGV[3] or f[7] ~= ARGV[4] then
    return { 0 }
  end
  count = 0
elseif ARGV[3] ~= '' then
  if f[7] == ARGV[3] then
    redis.call('HSET', KEYS[1], 'att', '')
  elseif f[8] == ARGV[3] then
    redis.call('HSET', KEYS[1], 'gid', '')
  else
    return { 0 }
  end
end
if count > 0 then
  redis.call('HSET', KEYS[1], 'count', count)
  return { 1, count, 0, f[8] or '', tonumber(f[6]), f[7] or '' }
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'released', 'count', 0)
redis.call('PEXPIRE', KEYS[1], f[5])
-- Event: e|<state>|<token>|<lease length>|<lease><lock key>
redis.call('PUBLISH', ARGV[2], 'e|released|' .. f[6] .. '|' .. #f[1] .. '|' .. f[1] .. KEYS[1])
return { 1, 0, now_ms - tonumber(f[4]), f[8] or '', tonumber(f[6]), f[7] or '' }
