-- release: drops one hold of a lock, only for the lease that holds it; or
-- undoes exactly what one acquire try left, or ends exactly one grant that
-- was released on other Redlock nodes but not here.
--
-- The last hold leaves a tombstone (state 'released', kept for the rest of
-- the grant's TTL: a renewing stream reads it well before) instead of
-- deleting the key, so a KeepAlive racing with the release knows
-- the lock was released rather than lost; a tombstone counts as free. The
-- end is published when someone listens (acquire.lua's q: a waiter queued;
-- ka: a KeepAlive stream renewed it): it wakes waiters on every instance
-- and tells the holder's streams that the lock was released, not lost.
-- Unpublished, a stream still reads the tombstone on its next renewal.
--
-- KEYS[1]  lock hash (see acquire.lua)
-- KEYS[2]  optional: the shared lease's index (acquire.lua's KEYS[5]); when
--          the grant ends, ARGV[5] leaves it in this call. Only passed when
--          it lives on the lock's node, else coord removes it on its own
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
-- ARGV[5]  the lock name (the index member; with KEYS[2] only)
-- returns  {1, remaining holds, grant id, token, latest try} released
--          (0 holds: the grant ended and the event was published; the
--          latest try as it was before this call); {0} not held, or nothing
--          to undo; {2} held by another lease
-- O(1)
local f = redis.call('HMGET', KEYS[1], 'lease', 'state', 'count', 'token', 'att', 'gid', 'q', 'ka')
if f[2] ~= 'held' then
  return { 0 }
end
if f[1] ~= ARGV[1] then
  return { 2 }
end
local count = tonumber(f[3]) - 1
if ARGV[3] ~= '' and ARGV[4] ~= '' then
  if f[6] ~= ARGV[3] or f[5] ~= ARGV[4] then
    return { 0 }
  end
  count = 0
elseif ARGV[3] ~= '' then
  if f[5] == ARGV[3] then
    redis.call('HSET', KEYS[1], 'att', '')
  elseif f[6] == ARGV[3] then
    redis.call('HSET', KEYS[1], 'gid', '')
  else
    return { 0 }
  end
end
if count > 0 then
  redis.call('HSET', KEYS[1], 'count', count)
  return { 1, count, f[6] or '', tonumber(f[4]), f[5] or '' }
end
-- The key keeps its TTL: no PEXPIRE. ('0' as text: no printf.)
redis.call('HSET', KEYS[1], 'state', 'released', 'count', '0')
if KEYS[2] then
  redis.call('SREM', KEYS[2], ARGV[5])
end
if f[7] or f[8] then
  -- Event: e|<state>|<token>|<lease length>|<lease><lock key>
  redis.call(PUBLISH, ARGV[2], 'e|released|' .. f[4] .. '|' .. #f[1] .. '|' .. f[1] .. KEYS[1])
end
return { 1, 0, f[6] or '', tonumber(f[4]), f[5] or '' }
