-- lock_end: ends a grant on behalf of someone other than its holder
-- (ForceRelease, or Revoke of its lease), leaving a tombstone that says why.
--
-- KEYS[1]  lock hash
-- ARGV[1]  lease that must hold it ('' = whoever holds it)
-- ARGV[2]  new state: 'forced' or 'revoked' (lock::GrantEnd)
-- ARGV[3]  pub/sub channel for lock events
-- The one event it publishes (as release.lua's) wakes waiters and tells the
-- holder's streams.
-- returns  {lease, owner, token} ended; nil nothing held (by that lease)
-- O(1)
local f = redis.call('HMGET', KEYS[1], 'lease', 'state', 'owner', 'token', 'px')
if f[2] ~= 'held' or (ARGV[1] ~= '' and f[1] ~= ARGV[1]) then
  return false
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'count', 0)
redis.call('PEXPIRE', KEYS[1], f[5])
redis.call(PUBLISH, ARGV[3], 'e|' .. ARGV[2] .. '|' .. f[4] .. '|' .. #f[1] .. '|' .. f[1] .. KEYS[1])
return { f[1], f[3] or '', tonumber(f[4]) }
