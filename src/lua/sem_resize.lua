-- sem_resize: sets a semaphore's size and wakes the waiters a larger size
-- lets through (as sem_release.lua does).
--
-- Shrinking below the permits held takes nothing back: holders keep their
-- permits, and nothing is granted until enough come back. A waiter that
-- wants more than the new size learns it on its next try (sem_acquire.lua
-- answers {-1, size}).
--
-- KEYS[1..5] as sem_acquire.lua: semaphore hash, permits hash, permit
--          expiry zset, queue zset, wants hash
-- ARGV[1]  new size (integer >= 1)
-- ARGV[2]  pub/sub channel for semaphore events
-- ARGV[3]  the semaphore's key (KEYS[1]), named in the event
-- ARGV[4]  TTL in ms of the semaphore hash (as sem_acquire.lua's ARGV[8])
-- returns  {previous size (0 = it did not exist), used, waiters woken}
-- O(woken waiters)
local f = redis.call('HMGET', KEYS[1], 'size', 'used')
local size = tonumber(ARGV[1])
local used = tonumber(f[2] or '0')
redis.call('HSET', KEYS[1], 'size', ARGV[1], 'used', used)
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end

local woken = sem_wake(KEYS[4], KEYS[5], size - used, size, time_ms(), ARGV[2], ARGV[3])
return { tonumber(f[1] or '0'), used, woken }
