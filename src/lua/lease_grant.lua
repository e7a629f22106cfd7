-- lease_grant: creates a lease.
--
-- KEYS[1]  lease hash {ttl, owner}; expires with the lease
-- ARGV[1]  granted TTL in ms (integer > 0)
-- ARGV[2]  owner label (free text)
-- returns  1 created, 0 the id already exists (never with 128 random bits)
-- O(1)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'ttl', ARGV[1], 'owner', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
