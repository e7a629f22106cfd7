-- sem_release: gives a permit back (only for the lease that holds it) and
-- wakes the waiters it lets through.
--
-- Wake-ups go by "enough permits free", in arrival order: the longest run
-- of waiters from the head of the queue whose requests now fit together is
-- published, and only those try again (never one wake per permit, never a
-- waiter that would only queue again).
--
-- KEYS[1..5] as sem_acquire.lua: semaphore hash, permits hash, permit
--          expiry zset, queue zset, wants hash
-- ARGV[1]  permit id
-- ARGV[2]  lease id that holds it
-- ARGV[3]  pub/sub channel for semaphore events
-- ARGV[4]  the semaphore's key (KEYS[1]), named in the event
-- returns  {1, free after, waiters woken} released; {0} no such permit
--          (released already, or expired); {2} held by another lease
-- Event: s|<key length>|<key><waiter id> <waiter id> ...
-- O(log permits + woken waiters)
local p = redis.call('HGET', KEYS[2], ARGV[1])
if not p then
  return { 0 }
end
local n, lease = string.match(p, '^(%d+) (%S*)')
if lease ~= ARGV[2] then
  return { 2 }
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'size', 'used')
local size = tonumber(f[1] or '0')
local used = math.max(0, tonumber(f[2] or '0') - tonumber(n))
redis.call('HSET', KEYS[1], 'used', used)

local now = time_ms()
local free = size - used
local woken = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, 99)) do
  local want = redis.call('HGET', KEYS[5], id)
  local wn, deadline = string.match(want or '', '^(%d+) (%d+)$')
  if wn and tonumber(deadline) > now then
    wn = tonumber(wn)
    if wn > free then
      break
    end
    free = free - wn
    woken[#woken + 1] = id
  end
end
if #woken > 0 then
  redis.call('PUBLISH', ARGV[3], 's|' .. #ARGV[4] .. '|' .. ARGV[4] .. table.concat(woken, ' '))
end
return { 1, size - used, #woken }
