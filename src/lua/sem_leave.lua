-- sem_leave: a waiter leaves a semaphore's queue (it gave up, was granted
-- elsewhere, or its call was cancelled), and the waiters behind it that
-- now fit are woken: a large request leaving the head must not strand the
-- small ones it held back.
--
-- KEYS[1..5] as sem_acquire.lua: semaphore hash, permits hash, permit
--          expiry zset, queue zset, wants hash
-- ARGV[1]  waiter id
-- ARGV[2]  pub/sub channel for lock events
-- ARGV[3]  the semaphore's key (KEYS[1]), named in the event
-- returns  waiters woken
-- O(log waiters + woken waiters)
if redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[5], ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'size', 'used')
local size = tonumber(f[1] or '0')
return sem_wake(KEYS[4], KEYS[5], size - tonumber(f[2] or '0'), size, time_ms(), ARGV[2], ARGV[3])
