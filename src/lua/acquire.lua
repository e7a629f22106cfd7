-- acquire: grants a lock to a lease, re-enters it, or reports the holder.
--
-- KEYS[1]  lock hash {lease, state, count, token, owner, px, since, req, att,
--          gid, prev_lease, prev_state, prev_token}; expires with the grant
-- KEYS[2]  fence counter: last token issued; TTL ARGV[5], refreshed per grant
-- KEYS[3]  waiters zset (member waiter id); only ZREM here
-- ARGV[1]  lease id
-- ARGV[2]  TTL in ms for the lock (integer > 0); 0 = only re-enter, keeping
--          the lock's own TTL (a private lease re-acquiring its lock)
-- ARGV[3]  owner label
-- ARGV[4]  waiter id to remove on success ('' = none)
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
-- returns  {1, token, hold count, TTL ms, lease} acquired, re-entered or
--          replayed (lease: the holder, which for a replay may differ from
--          ARGV[1]: a retried private-lease Acquire gets its first lease);
--          {0, holder owner, holder TTL ms} held by another (nothing written);
--          {-1} ARGV[2] is 0 and the lease does not hold the lock;
--          {-2, run_id, uptime s} the node is not ARGV[8] (nothing written)
-- O(log waiters); with ARGV[8], plus one INFO server unless held by another
--
-- Fencing: token = max(last token + 1, Redis TIME in microseconds). It
-- strictly increases while the counter lives, and after the counter is lost
-- (restart without persistence, expiry) as long as Redis's clock has not
-- gone back past the last token: a lock cannot be granted more than once
-- per microsecond, so tokens never run ahead of the clock.
local f = redis.call('HMGET', KEYS[1], 'lease', 'state', 'count', 'token', 'owner', 'req', 'att', 'gid')
if f[2] == 'held' and f[6] ~= ARGV[6] and f[1] ~= ARGV[1] then
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
    if ARGV[4] ~= '' then
      redis.call('ZREM', KEYS[3], ARGV[4])
    end
    return { 1, tonumber(f[4]), tonumber(f[3]), redis.call('PTTL', KEYS[1]), f[1] }
  end
  -- Re-entry: one more hold, TTL refreshed.
  local px = ARGV[2]
  if px == '0' then
    px = redis.call('HGET', KEYS[1], 'px')
  end
  local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
  redis.call('HSET', KEYS[1], 'req', ARGV[6], 'att', ARGV[7])
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
  'owner', ARGV[3], 'px', ARGV[2], 'since', math.floor(now_us / 1000), 'req', ARGV[6],
  'att', ARGV[7], 'gid', ARGV[7])
if f[1] then
  redis.call('HSET', KEYS[1], 'prev_lease', f[1], 'prev_state', f[2], 'prev_token', f[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[4])
end
return { 1, token, 1, tonumber(ARGV[2]), ARGV[1] }
