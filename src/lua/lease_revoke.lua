-- lease_revoke: deletes a lease and its indexes.
--
-- KEYS[1]  lease hash
-- KEYS[2]  lease index (set of lock names)
-- KEYS[3]  optional: lease permit index (semaphores, read/write locks)
-- returns  {existed (1/0), {lock names}, {permit index entries}}; the caller
--          then ends each lock and permit
-- O(number of locks and permits of the lease)
local names = redis.call('SMEMBERS', KEYS[2])
local permits = {}
if KEYS[3] then
  permits = redis.call('SMEMBERS', KEYS[3])
  redis.call('DEL', KEYS[3])
end
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return { existed, names, permits }
