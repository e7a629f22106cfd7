-- lease_attach: records that a lease now holds a lock, after the grant.
--
-- The index lets KeepAlive and Revoke, on any coord instance, find a
-- lease's locks. Run after the lock was granted (never before), so an
-- index entry always names a lock the lease was granted.
--
-- KEYS[1]  lease hash
-- KEYS[2]  lease index: set of lock names; expires with the lease
-- ARGV[1]  lock name
-- returns  the lease's remaining TTL in ms, or -2 when the lease is gone
--          (then nothing is written)
-- O(1)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  return -2
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return ttl
