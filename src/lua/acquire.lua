-- acquire: grants a lock to a lease, re-enters it, or reports the holder.
--
-- KEYS[1]  lock hash {lease, state, count, token, owner, px, since,
--          prev_lease, prev_state, prev_token}; expires with the grant
-- KEYS[2]  fence counter: last token issued; TTL ARGV[5], refreshed per grant
-- KEYS[3]  waiters zset (member waiter id); only ZREM here
-- ARGV[1]  lease id
-- ARGV[2]  TTL in ms for the lock (integer > 0); 0 = only re-enter, keeping
--          the lock's own TTL (a private lease re-acquiring its lock)
-- ARGV[3]  owner label
-- ARGV[4]  waiter id to remove on success ('' = none)
-- ARGV[5]  fence counter TTL in ms
-- ARGV[6]  request id ('' = none): a retry of a request that was granted
--          gets that grant back instead of a second hold
-- returns  {1, token, hold count, TTL ms, lease} acquired, re-entered or
--          replayed (lease: the holder, which for a replay may differ from
--          ARGV[1]: a retried private-lease Acquire gets its first lease);
--          {0, holder owner, holder TTL ms} held by another (nothing written);
--          {-1} ARGV[2] is 0 and the lease does not hold the lock
-- O(log waiters)
--
-- Fencing: token = max(last token + 1, Redis TIME in microseconds). It
-- strictly increases while the counter lives, and after the counter is lost
-- (restart without persistence, expiry) as long as Redis's clock has not
-- gone back past the last token: a lock cannot be granted more than once
-- per microsecond, so tokens never run ahead of the clock.
local f = redis.call('HMGET', KEYS[1], 'lease', 'state', 'count', 'token', 'owner', 'req')
if f[2] == 'held' then
  if ARGV[6] ~= '' and f[6] == ARGV[6] then
    return { 1, tonumber(f[4]), tonumber(f[3]), redis.call('PTTL', KEYS[1]), f[1] }
  end
  if f[1] ~= ARGV[1] then
    return { 0, f[5] or '', redis.call('PTTL', KEYS[1]) }
  end
  -- Re-entry: one more hold, TTL refreshed.
  local px = ARGV[2]
  if px == '0' then
    px = redis.call('HGET', KEYS[1], 'px')
  end
  local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
  redis.call('HSET', KEYS[1], 'req', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], px)
  if ARGV[4] ~= '' then
    redis.call('ZREM', KEYS[3], ARGV[4])
  end
  return { 1, tonumber(f[4]), count, tonumber(px), ARGV[1] }
end
if ARGV[2] == '0' then
  return { -1 }
end

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local token = math.max(last + 1, now_us)
local token_text = string.format('%.0f', token)
redis.call('SET', KEYS[2], token_text, 'PX', ARGV[5])

-- Keep how the previous grant ended (a tombstone) for its holder's stream.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'lease', ARGV[1], 'state', 'held', 'count', 1, 'token', token_text,
  'owner', ARGV[3], 'px', ARGV[2], 'since', math.floor(now_us / 1000), 'req', ARGV[6])
if f[1] then
  redis.call('HSET', KEYS[1], 'prev_lease', f[1], 'prev_state', f[2], 'prev_token', f[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[4])
end
return { 1, token, 1, tonumber(ARGV[2]), ARGV[1] }
