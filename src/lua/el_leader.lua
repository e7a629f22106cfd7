-- el_leader: an election's current state (read-only).
--
-- KEYS[1..5] as sem_acquire.lua: election hash {size, used, leader, value,
--          rev}, permits hash, permit expiry zset, queue zset, wants hash
-- KEYS[6]  fence: the last term issued
-- returns  {state (prelude el_state / el_none), live candidates waiting}
--          (a leader whose grant expired but is not reclaimed yet leads no
--          more: its term is reported as the last one)
-- O(candidates)
local now = time_ms()
local f = redis.call('HMGET', KEYS[1], 'leader', 'value', 'rev')
local id, rev = f[1], f[3] or '0'
local candidates = sem_waiters(KEYS[4], KEYS[5], now)
if id then
  local expiry = redis.call('ZSCORE', KEYS[3], id)
  local p = redis.call('HGET', KEYS[2], id)
  if p and expiry and tonumber(expiry) > now then
    local _, lease, _, owner = sem_grant(p)
    return { el_state(id, rev, tonumber(expiry) - now, lease, owner, f[2] or ''), candidates }
  end
  return { el_none(id, rev), candidates }
end
return { el_none(redis.call('GET', KEYS[6]) or '0', rev), candidates }
