-- sem_release: ends a permit grant (its holder's release, an admin's force,
-- or its lease's revocation) and wakes the waiters that now fit.
--
-- Wake-ups go by "enough permits free", in arrival order: the longest run
-- of waiters from the head of the queue whose requests now fit together is
-- published, and only those try again (never one wake per permit, never a
-- waiter that would only queue again).
--
-- KEYS[1..5] as sem_acquire.lua: semaphore hash, permits hash, permit
--          expiry zset, queue zset, wants hash
-- KEYS[6]  optional: the holder's shared lease permit index, when on this
--          node (the entry ARGV[6] .. id .. ARGV[7] leaves it)
-- ARGV[1]  permit id; '' = the one permit lease ARGV[2] holds here
-- ARGV[2]  lease id that holds it; '' = whichever (an admin's force)
-- ARGV[3]  pub/sub channel for lock events
-- ARGV[4]  the semaphore's key (KEYS[1]), named in the events
-- ARGV[5]  how it ends: 'released', 'forced', 'revoked' (lock::GrantEnd)
-- ARGV[6], ARGV[7] the permit index entry around the permit id (KEYS[6])
-- ARGV[8]  '1': an election; its leader's end is published (prelude el_*)
-- A grant a KeepAlive stream renews (sem_renew.lua marked it 'w<id>'), or
-- that is forced or revoked, leaves a tombstone saying how it ended, for
-- one grant TTL: 'x<id>' -> how, and for a grant found by its lease (see
-- sem_acquire.lua) also 'x<lease>' -> '<how> <id>'.
-- returns  {1, free after, waiters woken, permit id, lease, owner, n}
--          ended; {0} no such permit (released already, or expired);
--          {2} held by another lease
-- Events: s|<key length>|<key><waiter id> <waiter id> ... (wake-ups);
--         e|<how>|<id>|<lease length>|<lease><key> when not released by
--         its holder (its KeepAlive stream reports the loss)
-- O(log permits + woken waiters)
local id = ARGV[1]
if id == '' then
  id = redis.call('HGET', KEYS[2], ARGV[2])
  if not id then
    return { 0 }
  end
end
local p = redis.call('HGET', KEYS[2], id)
if not p or string.byte(id) == 120 then
  return { 0 }
end
local n, lease, ttl, owner = sem_grant(p)
if ARGV[2] ~= '' and lease ~= ARGV[2] then
  return { 2 }
end
local now = time_ms()
redis.call('HDEL', KEYS[2], id)
local by_lease = redis.call('HGET', KEYS[2], lease) == id
if by_lease then
  redis.call('HDEL', KEYS[2], lease)
end
redis.call('ZREM', KEYS[3], id)
-- Forced and revoked ends always leave one (rare, and the holder may not
-- have renewed yet); a release only when a stream watches the grant.
if redis.call('HDEL', KEYS[2], 'w' .. id) == 1 or ARGV[5] ~= 'released' then
  redis.call('HSET', KEYS[2], 'x' .. id, ARGV[5])
  redis.call('ZADD', KEYS[3], now + tonumber(ttl), 'x' .. id)
  if by_lease then
    -- Found by the lease too: a private lease renews its grant by lease.
    redis.call('HSET', KEYS[2], 'x' .. lease, ARGV[5] .. ' ' .. id)
    redis.call('ZADD', KEYS[3], now + tonumber(ttl), 'x' .. lease)
  end
end
if KEYS[6] then
  redis.call('SREM', KEYS[6], ARGV[6] .. id .. ARGV[7])
end
local f = redis.call('HMGET', KEYS[1], 'size', 'used')
local size = tonumber(f[1] or '0')
local used = math.max(0, tonumber(f[2] or '0') - tonumber(n))
redis.call('HSET', KEYS[1], 'used', used)

if ARGV[8] == '1' then
  el_vacate(KEYS[1], id, ARGV[3], ARGV[4])
end
local woken = sem_wake(KEYS[4], KEYS[5], size - used, size, now, ARGV[3], ARGV[4])
if ARGV[5] ~= 'released' then
  redis.call(PUBLISH, ARGV[3], 'e|' .. ARGV[5] .. '|' .. id .. '|' .. #lease .. '|' .. lease .. ARGV[4])
end
return { 1, size - used, woken, tonumber(id), lease, owner, tonumber(n) }
