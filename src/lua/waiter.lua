-- waiter: registers or removes a caller waiting in Acquire, so Describe can
-- count waiters across coord instances.
--
-- KEYS[1]  waiters zset: member waiter id, score its deadline (ms since
--          epoch); expires after the last deadline, and entries past their
--          deadline are pruned here, so a crashed waiter leaves nothing
-- ARGV[1]  'add' or 'remove'
-- ARGV[2]  waiter id
-- ARGV[3]  deadline, ms since epoch (add only)
-- returns  waiters registered after the change
-- O(log waiters + pruned)
local now_ms = time_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if ARGV[1] == 'add' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  local keep = tonumber(ARGV[3]) - now_ms + 1000
  if redis.call('PTTL', KEYS[1]) < keep then
    redis.call('PEXPIRE', KEYS[1], keep)
  end
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
return redis.call('ZCARD', KEYS[1])
