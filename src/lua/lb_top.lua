-- lb_top: one page of a period instance in rank order, by keyset cursor
-- or by rank.
--
-- KEYS[1]  board hash (field `inc`)
-- KEYS[2]  ZSET, KEYS[3] record hash of the instance (layout: lb_submit.lua)
-- ARGV[1]  incarnation
-- ARGV[2]  limit
-- ARGV[3]  cursor: the last ZSET member of the previous page, or ''
-- ARGV[4]  first page: 0-based rank to start at
-- returns  {'stale'} | {'ok', count, rank0 of the first entry, {member ids}, {records}}
-- O(log N + limit)
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return { 'stale' }
end
local limit = tonumber(ARGV[2])
local items, first
if ARGV[3] ~= '' then
  items = redis.call('ZRANGE', KEYS[2], '(' .. ARGV[3], '+', 'BYLEX', 'LIMIT', 0, limit)
  first = items[1] and redis.call('ZRANK', KEYS[2], items[1]) or 0
else
  first = tonumber(ARGV[4])
  items = redis.call('ZRANGE', KEYS[2], first, first + limit - 1)
end
-- Member ids without their sort key: the records carry it.
local members, recs = {}, {}
for i, item in ipairs(items) do
  members[i] = string.sub(item, 49)
end
if #members > 0 then
  recs = redis.call('HMGET', KEYS[3], unpack(members))
end
return { 'ok', redis.call('ZCARD', KEYS[2]), first, members, recs }
