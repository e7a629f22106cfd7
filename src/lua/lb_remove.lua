-- lb_remove: removes a member from the current instance of every period
-- of a board (past instances are never changed).
--
-- KEYS[1]            board hash (field `inc`)
-- KEYS[2i], [2i+1]   ZSET and record hash of period i (layout: lb_submit.lua)
-- ARGV[1]            incarnation
-- ARGV[2]            member
-- ARGV[3i..3i+2]    period i: start_ms, end_ms, expire_at_ms (0 0 0 = ALL_TIME)
-- returns  {'stale'} | {'period', now_ms} | {'ok', 1 removed somewhere | 0}
-- O(n log N)
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return { 'stale' }
end
local now_ms = time_ms()
local n = (#KEYS - 1) / 2
for i = 1, n do
  local s, e = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  if e > 0 and (now_ms < s or now_ms >= e) then
    return { 'period', now_ms }
  end
end
local removed = 0
for i = 1, n do
  local rec = redis.call('HGET', KEYS[2 * i + 1], ARGV[2])
  if rec then
    redis.call('ZREM', KEYS[2 * i], string.sub(rec, 1, 48) .. ARGV[2])
    redis.call('HDEL', KEYS[2 * i + 1], ARGV[2])
    removed = 1
  end
end
return { 'ok', removed }
