-- sem_acquire: takes n permits of a counting semaphore (or a read/write
-- lock, which is a semaphore whose writer takes every permit), all or
-- nothing and in arrival order, or queues the caller.
--
-- Fairness: FIFO. A request is granted only when its permits are free
-- after the live waiters that arrived before it are served, so a large
-- request at the head of the queue is not starved by a stream of small ones
-- behind it (and a waiting writer blocks new readers).
--
-- KEYS[1]  semaphore hash {size, used, seq}; expires between ARGV[8] / 2 and
--          ARGV[8] ms after the last acquire (its permits expire long before)
-- KEYS[2]  permits hash: '<id>' -> a grant (sem_record, id = the
--          fencing token); '<lease>' -> id for a lease that holds one permit
--          here (private leases, and ARGV[9]); 'w<id>' -> '1' while a
--          KeepAlive stream renews it; 'x<id>' -> how a watched, forced
--          or revoked permit ended ('released', 'forced', 'revoked'), a
--          tombstone, and 'x<lease>' -> '<how> <id>' for one found by lease
-- KEYS[3]  expiry zset: id -> expiry, and 'x<id>', 'x<lease>' -> when the
--          tombstone goes (ms since the epoch)
-- KEYS[4]  queue zset: waiter id -> arrival number
-- KEYS[5]  wants hash: waiter id -> '<n> <deadline ms>'
-- KEYS[6]  fence: the last token issued
-- KEYS[7]  optional, with KEYS[8]: the shared lease's hash and its permit
--          index (set), when they are on this node
-- ARGV[1]  n: permits wanted (integer >= 1)
-- ARGV[2]  size of a semaphore that does not exist yet (integer >= 1)
-- ARGV[3]  lease id
-- ARGV[4]  permit TTL in ms (integer > 0); with KEYS[7] the lease's
--          remaining TTL is used instead
-- ARGV[5]  owner label; with KEYS[7], '' = the lease's owner
-- ARGV[6]  waiter id ('' = none): leaves the queue when granted
-- ARGV[7]  queue until (ms since epoch; '' = do not queue when not
--          granted); a queued waiter calls again before then to stay queued
-- ARGV[8]  TTL in ms of the semaphore hash and the fence (topped up when
--          below half)
-- ARGV[9]  '1': a lease holds at most one permit here (read/write locks)
-- ARGV[10], ARGV[11] the permit index entry around the permit id (with
--          KEYS[7]): '<tag>' and ' <name>'
-- ARGV[12] optional: an election (size 1): the candidate's value; the
--          grant makes it the leader (KEYS[1] 'leader' = id, 'value',
--          'rev' counts changes), published with ARGV[13] (the lock events
--          channel) and ARGV[14] (KEYS[1], named in the event); an expired
--          leader's end is published too (prelude el_*)
-- returns  {1, token, permit TTL ms, size, free after} granted;
--          {0, size, free (negative after a shrink), waiters ahead,
--           ms until the soonest permit expires (0 = none)} not granted
--          (queued with ARGV[7]);
--          {-1, size} n exceeds the size: never grantable;
--          {-2, id} with ARGV[9], the lease already holds permit id;
--          {-3} KEYS[7] is gone (nothing written)
-- O(expired permits + waiters ahead, at most 100)
-- One TIME call: ms for expiries, µs for tokens.
local now_us = time_us()
local now = math.floor(now_us / 1000)
local n = tonumber(ARGV[1])
local ttl, owner = ARGV[4], ARGV[5]
if KEYS[7] then
  local left = redis.call('PTTL', KEYS[7])
  if left <= 0 then
    return { -3 }
  end
  ttl = tostring(left)
  if owner == '' then
    owner = redis.call('HGET', KEYS[7], 'owner') or ''
  end
end
local sem = redis.call('HMGET', KEYS[1], 'size', 'used')
local size = tonumber(sem[1] or ARGV[2])
if n > size then
  return { -1, size }
end
local used = tonumber(sem[2] or '0')

-- Permits whose lease stopped renewing them come back here; tombstones go.
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  local p = redis.call('HGET', KEYS[2], id)
  if p and string.byte(id) ~= 120 then -- not 'x': a permit
    if ARGV[12] then
      el_vacate(KEYS[1], id, ARGV[13], ARGV[14])
    end
    local pn, plessee = sem_grant(p)
    used = used - pn
    if redis.call('HGET', KEYS[2], plessee) == id then
      redis.call('HDEL', KEYS[2], plessee)
    end
    redis.call('HDEL', KEYS[2], 'w' .. id)
  end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
if used < 0 then
  used = 0
end

if ARGV[9] == '1' then
  local held = redis.call('HGET', KEYS[2], ARGV[3])
  if held and redis.call('HEXISTS', KEYS[2], held) == 1 then
    return { -2, tonumber(held) }
  end
end

-- Arrival order: a request gets permits only from what is left after every
-- live waiter ahead of it (all of them, for a caller not queued yet) has
-- had its share, so the run of waiters a release woke can be served in any
-- order, and nobody behind a large request takes what it waits for. Dead
-- waiters met on the way leave the queue.
local me, ahead_wants, found = ARGV[6], 0, false
local queue = redis.call('ZRANGE', KEYS[4], 0, 99)
for _, id in ipairs(queue) do
  if id == me then
    found = true
    break
  end
  local wn, deadline = string.match(redis.call('HGET', KEYS[5], id) or '', '^(%d+) (%d+)$')
  if wn and tonumber(deadline) > now then
    ahead_wants = ahead_wants + tonumber(wn)
  else
    redis.call('ZREM', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
  end
end
-- Past the first 100 waiters: wait for the ones ahead to be served.
local first = found or #queue < 100

local free = size - used
if first and n + ahead_wants <= free then
  local last = tonumber(redis.call('GET', KEYS[6]) or '0') or 0
  local token = math.max(last + 1, now_us)
  local id = string.format('%.0f', token)
  redis.call('SET', KEYS[6], id, 'PX', ARGV[8])
  redis.call('HSET', KEYS[2], id, sem_record(ARGV[1], ttl, ARGV[3], owner))
  if ARGV[9] == '1' or string.byte(ARGV[3]) ~= 108 then -- not 'l': one permit per lease
    redis.call('HSET', KEYS[2], ARGV[3], id)
  end
  redis.call('ZADD', KEYS[3], now + tonumber(ttl), id)
  used = used + n
  redis.call('HSET', KEYS[1], 'size', size, 'used', used)
  if ARGV[6] ~= '' then
    redis.call('ZREM', KEYS[4], ARGV[6])
    redis.call('HDEL', KEYS[5], ARGV[6])
  end
  if ARGV[12] then
    local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
    redis.call('HSET', KEYS[1], 'leader', id, 'value', ARGV[12])
    el_publish(ARGV[13], ARGV[14], el_state(id, rev, ttl, ARGV[3], owner, ARGV[12]))
  end
  if KEYS[7] then
    redis.call('SADD', KEYS[8], ARGV[10] .. id .. ARGV[11])
    if redis.call('PTTL', KEYS[8]) < tonumber(ttl) then
      redis.call('PEXPIRE', KEYS[8], ttl)
    end
  end
  -- The hash, grants and expiries outlive every permit; their TTL is
  -- topped up only when below half of ARGV[8] (or this permit's TTL), not
  -- on every grant. (The queue and wants keep their waiters' TTLs.)
  local keep = math.max(tonumber(ARGV[8]), tonumber(ttl))
  local low = math.max(tonumber(ARGV[8]) / 2, tonumber(ttl))
  for i = 1, 3 do
    if redis.call('PTTL', KEYS[i]) < low then
      redis.call('PEXPIRE', KEYS[i], keep)
    end
  end
  return { 1, token, tonumber(ttl), size, size - used }
end

redis.call('HSET', KEYS[1], 'size', size, 'used', used)
local ahead = redis.call('ZCARD', KEYS[4])
if ARGV[6] ~= '' then
  local rank = redis.call('ZRANK', KEYS[4], ARGV[6])
  if rank then
    ahead = rank
  end
  if ARGV[7] ~= '' then
    if not rank then
      local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
      redis.call('ZADD', KEYS[4], seq, ARGV[6])
    end
    -- Queued, or still queued until a later deadline.
    redis.call('HSET', KEYS[5], ARGV[6], ARGV[1] .. ' ' .. ARGV[7])
    local keep = tonumber(ARGV[7]) - now + 1000
    for i = 4, 5 do
      if redis.call('PTTL', KEYS[i]) < keep then
        redis.call('PEXPIRE', KEYS[i], keep)
      end
    end
  end
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[8]) / 2 then
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
end
local soonest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')[2]
local retry = 0
if soonest then
  retry = math.max(1, tonumber(soonest) - now)
end
return { 0, size, free, ahead, retry }
