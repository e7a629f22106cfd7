-- lease_info: a shared lease's remaining TTL and owner label (read-only).
--
-- KEYS[1]  lease hash {ttl, owner}
-- returns  {remaining TTL ms (-2 when the lease is gone), owner label}
-- O(1)
return { redis.call('PTTL', KEYS[1]), redis.call('HGET', KEYS[1], 'owner') or '' }
