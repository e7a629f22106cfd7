-- lb_ranks: the entries and ranks of some members in one period instance
-- (also Count and Percentile).
--
-- KEYS[1]  board hash (field `inc`)
-- KEYS[2]  ZSET, KEYS[3] record hash of the instance (layout: lb_submit.lua)
-- ARGV[1]  incarnation
-- ARGV[2…] members (none: count only)
-- returns  {'stale'} | {'ok', count, per member: {record, rank0} or nil}
-- O(k log N)
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return { 'stale' }
end
local out = { 'ok', redis.call('ZCARD', KEYS[2]) }
if #ARGV < 2 then
  return out
end
local members = {}
for i = 2, #ARGV do
  members[i - 1] = ARGV[i]
end
local recs = redis.call('HMGET', KEYS[3], unpack(members))
for i = 1, #members do
  local r = recs[i]
  if r then
    out[i + 2] = { r, redis.call('ZRANK', KEYS[2], string.sub(r, 1, 48) .. members[i]) }
  else
    out[i + 2] = false
  end
end
return out
