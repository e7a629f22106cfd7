-- ps_publish: publishes one message. Recoverable channels: checks the
-- idempotency key, creates the epoch if missing, assigns the next offset,
-- appends to the capped history and publishes the framed message, all in
-- one step, so the offset a subscriber sees live is the one in history.
--
-- Frame on the Redis channel: <offset>:<epoch>:<time_ms>:<body>
-- (offset 0 and an empty epoch for ephemeral channels).
--
-- KEYS[1]  meta hash {epoch, offset}; expires after ARGV[6] without publishes
-- KEYS[2]  history stream, entry id <offset>-0, fields b (body), t (time ms);
--          same TTL
-- KEYS[3]  idempotency key of this publish (untouched without one); TTL ARGV[8]
-- ARGV[1]  'recoverable' | 'ephemeral'
-- ARGV[2]  Redis channel
-- ARGV[3]  body (headers and payload, encoded by coord)
-- ARGV[4]  epoch to use if the channel has none (random, from coord)
-- ARGV[5]  history size (approximate MAXLEN)
-- ARGV[6]  history TTL, ms
-- ARGV[7]  1 when KEYS[3] is a real idempotency key, else 0
-- ARGV[8]  idempotency TTL, ms
-- returns  {offset, epoch, receivers, time_ms, replayed 0|1}
-- O(1) amortised + O(subscribers) for PUBLISH
local now = time_ms()
if ARGV[1] ~= 'recoverable' then
  local n = redis.call(PUBLISH, ARGV[2], '0::' .. now .. ':' .. ARGV[3])
  return { 0, '', n, now, 0 }
end
if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local colon = string.find(seen, ':', 1, true)
    return { tonumber(string.sub(seen, 1, colon - 1)), string.sub(seen, colon + 1), 0, now, 1 }
  end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  -- A new incarnation: whatever history is left belongs to the old one.
  epoch = ARGV[4]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], offset .. '-0', 'b', ARGV[3], 't', now)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local n = redis.call(PUBLISH, ARGV[2], offset .. ':' .. epoch .. ':' .. now .. ':' .. ARGV[3])
if ARGV[7] == '1' then
  redis.call('SET', KEYS[3], offset .. ':' .. epoch, 'PX', ARGV[8])
end
return { offset, epoch, n, now, 0 }
