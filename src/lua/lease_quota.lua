-- lease_quota: the live leases of one principal (auth quota `leases`), a
-- sorted set of "<namespace>\n<lease id>" scored by the earliest time the
-- lease can have expired. Renewals only push a lease's expiry later, so a
-- member whose score has passed is checked against its lease (by the
-- caller, on the lease's own slot) before the next take, and settled here.
--
-- Owner: the auth layer's lease quota. No TTL (a renewed lease may live
-- forever); members leave on Revoke or when found expired, and there are at
-- most `max` of them.
--
-- KEYS[1]  the principal's set
-- ARGV[1]  'due'  : ARGV[2] limit -> members whose score has passed (oldest first)
--          'take' : ARGV[2] member, ARGV[3] ttl ms, ARGV[4] max, then pairs
--                   (member, remaining ttl ms; <= 0: gone) of due members checked
--                   -> {1 taken | 0 over quota, members after}
--          'drop' : ARGV[2] member -> 1 removed | 0 absent
-- O(log n) per member touched
local now = time_ms()
local op = ARGV[1]
if op == 'due' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
elseif op == 'drop' then
  return redis.call('ZREM', KEYS[1], ARGV[2])
end
-- take
for i = 5, #ARGV - 1, 2 do
  local ttl = tonumber(ARGV[i + 1])
  if ttl > 0 then
    redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
  else
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
local member, ttl, max = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local count = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], member) == false and count >= max then
  return {0, count}
end
redis.call('ZADD', KEYS[1], now + ttl, member)
return {1, redis.call('ZCARD', KEYS[1])}
