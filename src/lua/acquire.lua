-- acquire: grants a lock to a lease, re-enters it, or reports the holder
-- (and queues the caller as a waiter).
--
-- KEYS[1]  lock hash {lease, state, count, token, owner, px, req, att, gid,
--          prev_lease, prev_state, prev_token, q, ka}; expires with the grant.
--          q (set here when a caller queues) and ka (set by renew.lua for a
--          KeepAlive stream) outlive grants until the key expires: while
--          either is set, a grant's end is published (release.lua), and with
--          ka a new grant keeps how the last one ended (prev_*) for its
--          holder's stream. The token is also the grant time (µs)
-- KEYS[2]  fence counter: last token issued; TTL ARGV[5], refreshed per grant
-- KEYS[3]  waiters zset: member waiter id, score its deadline (ms); queued
--          here, pruned here and by waiter.lua, which removes a leaver
-- KEYS[4]  optional, with KEYS[5]: the shared lease's hash and its index (set
--          of lock names; expires with the lease). Given, the lock gets the
--          lease's remaining TTL and is recorded in the index in this call.
--          Only passed when they live on the lock's node (one Redis, or the
--          same cluster slot); else coord reads and records the lease in
--          calls of their own (lease_info.lua, lease_attach.lua)
-- ARGV[1]  lease id
-- ARGV[2]  TTL in ms for the lock (integer > 0); 0 = only re-enter, keeping
--          the lock's own TTL (a private lease re-acquiring its lock).
--          Ignored with KEYS[4]
-- ARGV[3]  owner label; with KEYS[4], '' = the lease's owner
-- ARGV[4]  waiter id ('' = none): removed from KEYS[3] when acquired; added
--          with deadline ARGV[9] when held by another and ARGV[9] ~= ''. Held
--          by another, a waiter marks the lock (q) in the same call, so any
--          release after this answer publishes the event that wakes it
-- ARGV[5]  fence counter TTL in ms
-- ARGV[6]  call id (non-empty): the client's request id, else one per
--          Acquire call. A try of a call whose hold is already here gets
--          that hold back instead of a second one (retries are idempotent)
-- ARGV[7]  try id `<call instance hex>.<seq>` (unique; seq increases within
--          one call): recorded as `att` on the hold this try took or took
--          over, and as `gid` on a grant it created, so an undo of a failed
--          try (release.lua with ARGV[3]) removes exactly what that try left
--          and never a later grant. A try takes a hold over from another
--          call instance (a client's retry) or an earlier try of its own,
--          never from a later one: a stale try that arrives late changes
--          nothing
-- ARGV[8]  Redlock: the node identity (run_id) coord confirmed; '' = no
--          check. A node that restarted (lost its keys) must not vote
-- ARGV[9]  the waiter's deadline, ms since epoch ('' = do not queue)
-- ARGV[10] the lock name (the index member; with KEYS[4] only)
-- returns  {1, token, hold count, TTL ms, lease} acquired, re-entered or
--          replayed (lease: the holder, which for a replay may differ from
--          ARGV[1]: a retried private-lease Acquire gets its first lease);
--          {0, holder owner, holder TTL ms} held by another (nothing written
--          but the waiter);
--          {-1} the lease is gone: KEYS[4] has expired, or ARGV[2] is 0 and
--          the lease does not hold the lock (nothing written);
--          {-2, run_id, uptime s} the node is not ARGV[8] (nothing written)
-- O(log waiters); with ARGV[8], plus one INFO server unless held by another.
-- The usual grant is 5 Redis calls (6 with KEYS[4]): each costs more than
-- the Lua around it, so none is spent on what no one will read
--
-- Fencing: token = max(last token + 1, Redis TIME in microseconds). It
-- strictly increases while the counter lives, and after the counter is lost
-- (restart without persistence, expiry) as long as Redis's clock has not
-- gone back past the last token: a lock cannot be granted more than once
-- per microsecond, so tokens never run ahead of the clock.
local shared = KEYS[4] ~= nil
local px = ARGV[2]
if shared then
  local ttl = redis.call('PTTL', KEYS[4])
  if ttl <= 0 then
    return { -1 }
  end
  px = tostring(ttl)
end
local f = redis.call('HMGET', KEYS[1], 'lease', 'state', 'count', 'token', 'owner', 'req', 'att', 'gid', 'q', 'ka')
if f[2] == 'held' and f[6] ~= ARGV[6] and f[1] ~= ARGV[1] then
  if ARGV[4] ~= '' and not f[9] then
    redis.call('HSET', KEYS[1], 'q', '1')
  end
  if ARGV[9] ~= '' then
    local now = time_ms()
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    redis.call('ZADD', KEYS[3], ARGV[9], ARGV[4])
    local keep = tonumber(ARGV[9]) - now + 1000
    if redis.call('PTTL', KEYS[3]) < keep then
      redis.call('PEXPIRE', KEYS[3], keep)
    end
  end
  return { 0, f[5] or '', redis.call('PTTL', KEYS[1]) }
end
-- Every answer below counts as a vote for this lease: only from the node
-- coord confirmed. (A node that lost its keys cannot answer "held".)
if ARGV[8] ~= '' then
  local info = redis.call('INFO', 'server')
  local id = string.match(info, 'run_id:(%x+)') or ''
  if id ~= ARGV[8] then
    return { -2, id, tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0 }
  end
end
if ARGV[4] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[4])
end
if f[2] == 'held' then
  if f[6] == ARGV[6] then
    -- A retry of the call that holds it: take the hold over, so an undo of
    -- the earlier try no longer matches it.
    local held_by, held_seq = string.match(f[7] or '', '^(%x+)%.(%d+)$')
    local by, seq = string.match(ARGV[7], '^(%x+)%.(%d+)$')
    if held_by ~= by or tonumber(seq) > tonumber(held_seq) then
      if f[7] == f[8] then
        redis.call('HSET', KEYS[1], 'att', ARGV[7], 'gid', ARGV[7])
      else
        redis.call('HSET', KEYS[1], 'att', ARGV[7])
      end
    end
    return { 1, tonumber(f[4]), tonumber(f[3]), redis.call('PTTL', KEYS[1]), f[1] }
  end
  -- Re-entry: one more hold, TTL refreshed.
  if px == '0' then
    px = redis.call('HGET', KEYS[1], 'px')
  end
  local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
  redis.call('HSET', KEYS[1], 'req', ARGV[6], 'att', ARGV[7])
  redis.call('PEXPIRE', KEYS[1], px)
  return { 1, tonumber(f[4]), count, tonumber(px), ARGV[1] }
end
if px == '0' then
  return { -1 }
end

local owner = ARGV[3]
if shared then
  if owner == '' then
    owner = redis.call('HGET', KEYS[4], 'owner') or ''
  end
  redis.call('SADD', KEYS[5], ARGV[10])
  redis.call('PEXPIRE', KEYS[5], px)
end
local token_text = time_us_text()
local token = tonumber(token_text)
-- One call in the usual case: the clock has passed the last token.
local last = tonumber(redis.call('SET', KEYS[2], token_text, 'PX', ARGV[5], 'GET') or '0') or 0
if last >= token then
  token = last + 1
  token_text = string.format('%.0f', token)
  redis.call('SET', KEYS[2], token_text, 'PX', ARGV[5])
end

-- Every field is rewritten, so a tombstone needs no DEL. (Numbers as text:
-- Lua would format them with the slow printf.)
if f[1] and f[10] then
  redis.call('HSET', KEYS[1], 'lease', ARGV[1], 'state', 'held', 'count', '1', 'token', token_text,
    'owner', owner, 'px', px, 'req', ARGV[6], 'att', ARGV[7], 'gid', ARGV[7],
    'prev_lease', f[1], 'prev_state', f[2], 'prev_token', f[4])
else
  redis.call('HSET', KEYS[1], 'lease', ARGV[1], 'state', 'held', 'count', '1', 'token', token_text,
    'owner', owner, 'px', px, 'req', ARGV[6], 'att', ARGV[7], 'gid', ARGV[7])
end
redis.call('PEXPIRE', KEYS[1], px)
return { 1, token, 1, tonumber(px), ARGV[1] }
