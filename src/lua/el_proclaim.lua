-- el_proclaim: the leader of an election sets its value without a new
-- election, and observers hear it.
--
-- KEYS[1..3] as sem_acquire.lua: election hash, permits hash, permit
--          expiry zset
-- ARGV[1]  the leadership's term (its permit id)
-- ARGV[2]  the lease that holds it
-- ARGV[3]  the new value
-- ARGV[4]  pub/sub channel for lock events
-- ARGV[5]  the election's key (KEYS[1]), named in the event
-- returns  {1, TTL ms} proclaimed; {0} that term does not lead (any more),
--          or another lease holds it (nothing written)
-- O(1)
local now = time_ms()
if redis.call('HGET', KEYS[1], 'leader') ~= ARGV[1] then
  return { 0 }
end
local p = redis.call('HGET', KEYS[2], ARGV[1])
local expiry = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not p or not expiry or tonumber(expiry) <= now then
  return { 0 }
end
local _, lease, _, owner = sem_grant(p)
if lease ~= ARGV[2] then
  return { 0 }
end
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('HSET', KEYS[1], 'value', ARGV[3])
local ttl = tonumber(expiry) - now
el_publish(ARGV[4], ARGV[5], el_state(ARGV[1], rev, ttl, lease, owner, ARGV[3]))
return { 1, ttl }
