-- sem_describe: a consistent snapshot of a semaphore (read-only).
--
-- KEYS[1..5] as sem_acquire.lua: semaphore hash, permits hash, permit
--          expiry zset, queue zset, wants hash
-- ARGV[1]  most holders to list
-- returns  {size (0 = no such semaphore), used, live waiters,
--           {permit id, permits, lease, owner, TTL ms} per live holder,
--           soonest expiry first, up to ARGV[1]}
--          (expired permits not yet reclaimed count neither as used nor
--          as holders)
-- O(live holders + waiters)
local now = time_ms()
local size = tonumber(redis.call('HGET', KEYS[1], 'size') or '0')
local holders, used = {}, 0
local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  local p = string.byte(live[i]) ~= 120 and redis.call('HGET', KEYS[2], live[i])
  if p then
    local n, lease, _, owner = sem_grant(p)
    used = used + n
    if #holders < tonumber(ARGV[1]) then
      holders[#holders + 1] = { live[i], tonumber(n), lease, owner, tonumber(live[i + 1]) - now }
    end
  end
end
return { size, used, sem_waiters(KEYS[4], KEYS[5], now), holders }
