-- ps_history: a recoverable channel's position and the messages after an
-- offset, from one snapshot.
--
-- KEYS[1]  meta hash {epoch, offset}
-- KEYS[2]  history stream (layout: ps_publish.lua)
-- ARGV[1]  first offset to read, as exact decimal text (never through a
--          Lua number: offsets a client sends may exceed 2^53)
-- ARGV[2]  most entries to return (0: position only)
-- returns  {epoch ('' when the channel has no history), top offset,
--           {offset, time_ms, body} per entry from ARGV[1], oldest first}
-- O(log N + limit)
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
if not meta[1] then
  return { '', 0, {} }
end
local out = {}
local limit = tonumber(ARGV[2])
if limit > 0 then
  local entries = redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', '+', 'COUNT', limit)
  for i, e in ipairs(entries) do
    local id, fields = e[1], e[2]
    local b, t = '', 0
    for k = 1, #fields, 2 do
      if fields[k] == 'b' then
        b = fields[k + 1]
      elseif fields[k] == 't' then
        t = tonumber(fields[k + 1])
      end
    end
    out[i] = { tonumber(string.sub(id, 1, string.find(id, '-', 1, true) - 1)), t, b }
  end
end
return { meta[1], tonumber(meta[2]), out }
