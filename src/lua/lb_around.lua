-- lb_around: the entries around one member, clipped at both ends, from
-- one snapshot.
--
-- KEYS[1]  board hash (field `inc`)
-- KEYS[2]  ZSET, KEYS[3] record hash of the instance (layout: lb_submit.lua)
-- ARGV[1]  incarnation
-- ARGV[2]  member
-- ARGV[3]  entries before, ARGV[4] entries after
-- ARGV[5]  1: when the member is absent, return the top before+after+1
-- returns  {'stale'} | {'ok', count, found 0|1, rank0 of the first entry, {member ids}, {records}}
-- O(log N + before + after)
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return { 'stale' }
end
local before, after = tonumber(ARGV[3]), tonumber(ARGV[4])
local count = redis.call('ZCARD', KEYS[2])
local rec = redis.call('HGET', KEYS[3], ARGV[2])
local found, lo, hi = 0, 0, before + after
if rec then
  local rank = redis.call('ZRANK', KEYS[2], string.sub(rec, 1, 48) .. ARGV[2])
  found, lo, hi = 1, math.max(0, rank - before), rank + after
elseif ARGV[5] ~= '1' then
  return { 'ok', count, 0, 0, {}, {} }
end
local items = redis.call('ZRANGE', KEYS[2], lo, hi)
-- Member ids without their sort key: the records carry it.
local members, recs = {}, {}
for i, item in ipairs(items) do
  members[i] = string.sub(item, 49)
end
if #members > 0 then
  recs = redis.call('HMGET', KEYS[3], unpack(members))
end
return { 'ok', count, found, lo, members, recs }
