-- sem_renew: renews a lease's permits of one semaphore and reports each
-- one's state, so the holder's KeepAlive stream can tell why one is gone.
--
-- KEYS[1..3] as sem_acquire.lua: semaphore hash, permits hash, permit
--          expiry zset
-- ARGV[1]  lease id
-- ARGV[2]  TTL in ms to renew to; '0' = each permit's own TTL (private
--          leases); '-1' = report only (the lease is gone)
-- ARGV[3..] permit ids; '' = the one permit the lease holds here
-- returns  {{state, permit id (0 = none), TTL ms} per permit id given}:
--          state 'held' (renewed), 'gone' (expired, or never this lease's),
--          or how its grant ended: 'released', 'forced', 'revoked'
-- O(permits given)
local lease, now = ARGV[1], time_ms()
local longest = 0
local results = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if id == '' then
    id = redis.call('HGET', KEYS[2], lease) or ''
  end
  local p = id ~= '' and redis.call('HGET', KEYS[2], id)
  local plessee, pttl
  if p then
    local _
    _, plessee, pttl = sem_grant(p)
  end
  local expiry = p and redis.call('ZSCORE', KEYS[3], id)
  if plessee == lease and expiry and tonumber(expiry) > now then
    local ttl = ARGV[2]
    if ttl == '0' then
      ttl = pttl
    end
    -- A stream watches it: its end leaves a tombstone (sem_release.lua).
    redis.call('HSETNX', KEYS[2], 'w' .. id, '1')
    if ttl == '-1' then
      results[#results + 1] = { 'held', tonumber(id), tonumber(expiry) - now }
    else
      redis.call('ZADD', KEYS[3], now + tonumber(ttl), id)
      longest = math.max(longest, tonumber(ttl))
      results[#results + 1] = { 'held', tonumber(id), tonumber(ttl) }
    end
  else
    local ended = id ~= '' and redis.call('HGET', KEYS[2], 'x' .. id)
    if not ended and ARGV[i] == '' then
      -- The lease's one grant ended: its tombstone by lease, '<how> <id>'.
      local by_lease = redis.call('HGET', KEYS[2], 'x' .. lease)
      if by_lease then
        ended, id = string.match(by_lease, '^(%a+) (%d+)$')
      end
    end
    results[#results + 1] = { ended or 'gone', tonumber(id) or 0, 0 }
  end
end
-- The semaphore's keys outlive the permits renewed.
for i = 1, 3 do
  if longest > 0 and redis.call('PTTL', KEYS[i]) < longest then
    redis.call('PEXPIRE', KEYS[i], longest)
  end
end
return results
