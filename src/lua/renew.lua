-- renew: renews a lease and the locks held under it, and reports the state
-- of each lock, so the holder's KeepAlive stream can tell why one is gone.
--
-- KEYS     with ARGV[2] == '1': KEYS[1] lease hash, KEYS[2] lease index,
--          KEYS[3..] lock hashes; with ARGV[2] == '2', also KEYS[3] the
--          lease's permit index (semaphores, read/write locks) and
--          KEYS[4..] lock hashes; else KEYS[1..] lock hashes only (a
--          private lease, or locks in another cluster slot than the lease)
-- ARGV[1]  lease id
-- ARGV[2]  '1' when KEYS[1..2] are the lease's own keys, '2' when
--          KEYS[1..3] are
-- ARGV[3]  without lease keys: TTL in ms for the locks, 0 = each lock's own,
--          -1 = report only (their lease is gone)
-- returns  {lease TTL ms (0 = gone, -1 = no lease keys given),
--           {lock names in the lease index},
--           {{state, token, TTL ms} per lock key},
--           {entries of the permit index} (ARGV[2] == '2')}
--          state 'held' (renewed); 'gone' (expired, or never ours); or how
--          this lease's grant ended: 'released', 'forced', 'revoked'
--          (lock::GrantEnd). TTL is 0 unless held
-- O(locks given + locks in the index)
local lease = ARGV[1]

-- State, token and TTL of one lock for this lease; renews it when held to
-- ttl (text ms; '0' = the lock's own px; '-1' = report only). TTLs stay
-- text: Lua would format numbers with the slow printf.
local function check(key, ttl)
  local f = redis.call('HMGET', key, 'lease', 'state', 'token', 'px', 'prev_lease', 'prev_state', 'prev_token', 'ka')
  if f[1] == lease then
    if f[2] ~= 'held' then
      return f[2], f[3], 0
    end
    if not f[8] then
      -- A stream watches this lock: its end is published (release.lua).
      redis.call('HSET', key, 'ka', '1')
    end
    if ttl == '-1' then
      return 'held', f[3], redis.call('PTTL', key)
    end
    if ttl == '0' then
      ttl = f[4]
    end
    redis.call('PEXPIRE', key, ttl)
    return 'held', f[3], tonumber(ttl)
  end
  -- Re-granted since: the previous grant's end is kept for its holder.
  if f[5] == lease and f[6] ~= 'held' then
    return f[6], f[7], 0
  end
  return 'gone', 0, 0
end

local lease_ttl, names, permits, first, lock_ttl = -1, {}, {}, 1, ARGV[3]
if ARGV[2] ~= '0' then
  first = ARGV[2] == '2' and 4 or 3
  local ttl = redis.call('HGET', KEYS[1], 'ttl')
  if ttl then
    lease_ttl = tonumber(ttl)
    lock_ttl = ttl
    for i = 1, first - 1 do
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
    names = redis.call('SMEMBERS', KEYS[2])
    if first == 4 then
      permits = redis.call('SMEMBERS', KEYS[3])
    end
  else
    -- A gone lease renews nothing; its locks are only reported.
    lease_ttl = 0
    lock_ttl = '-1'
  end
end

local results = {}
for i = first, #KEYS do
  local state, token, ttl = check(KEYS[i], lock_ttl)
  results[#results + 1] = { state, tonumber(token) or 0, ttl }
end
return { lease_ttl, names, results, permits }
