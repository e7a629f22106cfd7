-- lb_create: creates a leaderboard's settings hash unless it exists.
-- The hash owns the board: lb_delete removes it with the board's data.
--
-- KEYS[1]  board hash {inc, spec, created_ms}
-- ARGV[1]  incarnation id (random; names the board's data keys, so a
--          board deleted and created again never sees old data)
-- ARGV[2]  settings (JSON, compared by the caller)
-- returns  {1 created | 0 existed, inc, spec, created_ms}
-- O(1)
local cur = redis.call('HMGET', KEYS[1], 'inc', 'spec', 'created_ms')
if cur[1] then
  return { 0, cur[1], cur[2], cur[3] }
end
local created = tostring(time_ms())
redis.call('HSET', KEYS[1], 'inc', ARGV[1], 'spec', ARGV[2], 'created_ms', created)
return { 1, ARGV[1], ARGV[2], created }
