-- slots: a concurrency limit; at most `max` slots held at once, each
-- expiring so a crashed holder frees its slot.
--
-- KEYS[1]  zset: member slot id, score expiry (ms since epoch); the key
--          expires with its last slot
-- ARGV[1]  'acquire' | 'release'
-- ARGV[2]  slot id
-- ARGV[3]  max in flight (acquire)
-- ARGV[4]  slot TTL in ms (acquire)
-- returns  acquire: {1, in flight} taken or renewed;
--          {0, in flight, retry ms} full (nothing written)
--          release: {1 | 0 released, in flight}
-- O(log N + expired)
local now = time_ms()
local live = '(' .. now
if ARGV[1] == 'release' then
  local removed = redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  return { removed, redis.call('ZCOUNT', KEYS[1], live, '+inf') }
end
local held = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]) or '0') > now
local count = redis.call('ZCOUNT', KEYS[1], live, '+inf')
if not held and count >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], live, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return { 0, count, tonumber(first[2]) - now }
end
-- Expired slots (crashed holders) are dropped when one is taken.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local expiry = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], expiry, ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return { 1, redis.call('ZCARD', KEYS[1]) }
