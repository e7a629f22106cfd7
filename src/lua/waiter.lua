-- waiter: removes a caller that stopped waiting in Acquire from a lock's
-- waiters (acquire.lua queues it, in the try that finds the lock held), so
-- Describe counts only live waiters across coord instances.
--
-- KEYS[1]  waiters zset: member waiter id, score its deadline (ms since
--          epoch); entries past their deadline are pruned here and in
--          acquire.lua, and the key expires after the last deadline, so a
--          crashed waiter leaves nothing
-- ARGV[1]  waiter id
-- returns  waiters registered after the change
-- O(log waiters + pruned)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', time_ms())
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('ZCARD', KEYS[1])
