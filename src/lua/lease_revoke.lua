-- lease_revoke: deletes a lease and its index.
--
-- KEYS[1]  lease hash
-- KEYS[2]  lease index (set of lock names)
-- returns  {existed (1/0), {lock names}}; the caller then ends each lock
-- O(number of locks of the lease)
local names = redis.call('SMEMBERS', KEYS[2])
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return { existed, names }
