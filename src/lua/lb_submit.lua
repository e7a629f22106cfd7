-- lb_submit: applies one submit to the current instance of every period
-- of a board: check, compute and write in one step.
--
-- Exact int64 ordering: every ZSET score is 0 and the member is
-- key48 .. member, compared bytewise (ZSET lex order), where key48 is
-- three columns of 16 hex digits:
--   score order key | subscore order key | reached-at (Redis TIME, µs)
-- An order key is the int64 plus 2^63 (unsigned order = signed order),
-- bit-inverted on descending boards, so a smaller key is always better and
-- ZRANK is the 0-based rank. Lua numbers are doubles, so 64-bit values are
-- handled as two exact 32-bit halves.
-- The record hash maps member -> key48 .. num_submits .. ':' .. metadata.
--
-- KEYS[1]            board hash (field `inc`)
-- KEYS[2i], [2i+1]   ZSET and record hash of period i, i = 1..n
-- ARGV[1]            incarnation the caller's settings belong to
-- ARGV[2]            member
-- ARGV[3]            operator: set | best | incr | decr
-- ARGV[4]            order: asc | desc
-- ARGV[5], ARGV[6]   score, subscore: 16 hex digits, int64 + 2^63
-- ARGV[7]            1 when metadata is given, else 0
-- ARGV[8]            metadata
-- ARGV[9]            request id ('' = none); ARGV[10] how long it is remembered, ms
-- ARGV[8+3i..10+3i]  period i: start_ms, end_ms, expire_at_ms (0 0 0 = ALL_TIME)
-- KEYS[#KEYS]        the request id's key (untouched without one)
-- returns  {'stale'}                board gone or recreated (nothing written)
--          {'replay', entry or nil per period}  request id seen: nothing written,
--                                   the entries as they are now
--          {'period', now_ms}       Redis TIME is outside a period passed
--          {'overflow', i, column}  the result leaves int64 (nothing written)
--          {'ok', {key48, num_submits, changed 0|1, rank0, count, metadata} per period}
-- O(n log N)
local M = 4294967296
local H = 2147483648
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return { 'stale' }
end
local now_us = time_us()
local now_ms = math.floor(now_us / 1000)
local n = (#KEYS - 2) / 2
for i = 1, n do
  local s, e = tonumber(ARGV[8 + 3 * i]), tonumber(ARGV[9 + 3 * i])
  if e > 0 and (now_ms < s or now_ms >= e) then
    return { 'period', now_ms }
  end
end

local member, op, desc = ARGV[2], ARGV[3], ARGV[4] == 'desc'
local request, seen = ARGV[9], KEYS[#KEYS]

-- A retried request (e.g. after a timeout) must not count twice.
if request ~= '' and redis.call('EXISTS', seen) == 1 then
  local out = { 'replay' }
  for i = 1, n do
    local z, r = KEYS[2 * i], KEYS[2 * i + 1]
    local rec = redis.call('HGET', r, member)
    if rec then
      local key, rest = string.sub(rec, 1, 48), string.sub(rec, 49)
      local colon = string.find(rest, ':', 1, true)
      local num, meta = tonumber(string.sub(rest, 1, colon - 1)), string.sub(rest, colon + 1)
      out[i + 1] = { key, num, 0, redis.call('ZRANK', z, key .. member), redis.call('ZCARD', z), meta }
    else
      out[i + 1] = false
    end
  end
  return out
end

local function halves(hex, at)
  return tonumber(string.sub(hex, at, at + 7), 16), tonumber(string.sub(hex, at + 8, at + 15), 16)
end
-- Biased value <-> order key (an involution).
local function flip(hi, lo)
  if desc then
    return M - 1 - hi, M - 1 - lo
  end
  return hi, lo
end
-- a + b (sign 1) or a - b (sign -1) on biased values; nil when outside int64.
local function add(ah, al, bh, bl, sign)
  local hi, lo
  if sign > 0 then
    hi, lo = ah + bh - H, al + bl
  else
    hi, lo = ah - bh + H, al - bl
  end
  if lo >= M then
    hi, lo = hi + 1, lo - M
  elseif lo < 0 then
    hi, lo = hi - 1, lo + M
  end
  if hi < 0 or hi >= M then
    return nil
  end
  return hi, lo
end
-- Is order key a strictly better than b? (a, b = {hi, lo, subhi, sublo})
local function better(a, b)
  for k = 1, 4 do
    if a[k] ~= b[k] then
      return a[k] < b[k]
    end
  end
  return false
end

local sh, sl = halves(ARGV[5], 1)
local bh, bl = halves(ARGV[6], 1)
local plans = {}
for i = 1, n do
  local rec = redis.call('HGET', KEYS[2 * i + 1], member)
  local old, num, meta = nil, 0, ''
  -- old biased values (0 for a new entry)
  local oh, ol, osh, osl = H, 0, H, 0
  if rec then
    old = string.sub(rec, 1, 48)
    local rest = string.sub(rec, 49)
    local colon = string.find(rest, ':', 1, true)
    num = tonumber(string.sub(rest, 1, colon - 1))
    meta = string.sub(rest, colon + 1)
    oh, ol = flip(halves(old, 1))
    osh, osl = flip(halves(old, 17))
  end
  local nh, nl, nsh, nsl = sh, sl, bh, bl
  if op == 'incr' or op == 'decr' then
    local sign = op == 'incr' and 1 or -1
    nh, nl = add(oh, ol, sh, sl, sign)
    if not nh then
      return { 'overflow', i, 'score' }
    end
    nsh, nsl = add(osh, osl, bh, bl, sign)
    if not nsh then
      return { 'overflow', i, 'subscore' }
    end
  end
  local a, b = {}, {}
  a[1], a[2] = flip(nh, nl)
  a[3], a[4] = flip(nsh, nsl)
  if rec then
    b[1], b[2] = flip(oh, ol)
    b[3], b[4] = flip(osh, osl)
  end
  local changed
  if not rec then
    changed = true
  elseif op == 'best' then
    changed = better(a, b)
  else
    changed = better(a, b) or better(b, a)
  end
  if ARGV[7] == '1' and (op ~= 'best' or changed) then
    meta = ARGV[8]
  end
  local key = old
  if changed then
    key = string.format('%08x%08x%08x%08x%016x', a[1], a[2], a[3], a[4], now_us)
  end
  plans[i] = { old = old, key = key, changed = changed, num = num + 1, meta = meta }
end

local out = { 'ok' }
for i = 1, n do
  local z, r, p = KEYS[2 * i], KEYS[2 * i + 1], plans[i]
  if p.changed then
    if p.old then
      redis.call('ZREM', z, p.old .. member)
    end
    redis.call('ZADD', z, 0, p.key .. member)
  end
  redis.call('HSET', r, member, p.key .. string.format('%d', p.num) .. ':' .. p.meta)
  local expire = tonumber(ARGV[10 + 3 * i])
  if expire > 0 and not p.old then
    -- Written with the instance's first entries; same deadline each time.
    redis.call('PEXPIREAT', z, expire)
    redis.call('PEXPIREAT', r, expire)
  end
  out[i + 1] = { p.key, p.num, p.changed and 1 or 0, redis.call('ZRANK', z, p.key .. member), redis.call('ZCARD', z), p.meta }
end
if request ~= '' then
  redis.call('SET', seen, '1', 'PX', ARGV[10])
end
return out
