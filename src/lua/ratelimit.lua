-- ratelimit: decides (and charges) rate limits for a batch of requests,
-- in order, each all-or-nothing over its own limits.
--
-- Per request: pass 1 evaluates every limit on Redis TIME without writing;
-- pass 2 charges them only if all admit the cost (mode 'consume', cost > 0),
-- or applies a refund (mode 'refund', one limit). A denial writes nothing,
-- except in mode 'charge' (envoyproxy/ratelimit's counting, for Envoy's
-- rate limit service when asked): every limit is charged, admitted or not.
-- The requests of a batch share one TIME and are decided one after the
-- other, each seeing what the ones before it charged (so requests on one
-- subject inside one batch behave as if they arrived in that order).
--
-- KEYS     the state of every limit of every request, request after
--          request (all of one hash tag on a cluster)
-- ARGV[1]  number of requests R
-- then per request: cost (integer ≥ 0), mode ('consume' | 'peek' |
--          'refund' | 'charge'), request id (names sliding-log members; may be empty
--          when the request has no sliding log), number of limits n, then
--          n × (algorithm name and two integers, validated by the caller):
--          'meter'  T = emission interval µs, B = burst (token bucket and
--                   GCRA: a bucket stored as the time it will be full)
--          'fixed'  L, W µs   'log' L, W µs   'slide' L, W ms
-- returns  per request, flat: {all allowed (1/0), then per limit: allowed
--          (1/0), remaining, retry ms (-1 never), reset ms}, or {-1, error}
--          when that request failed (the others still count)
-- O(limits), plus O(log N + cost) for sliding logs
--
-- Written for cost per request (this script is coord's main Redis load):
-- a key's state is read once per batch and written once at its end (so a
-- hot subject costs two calls per batch, not per request; sliding logs
-- excepted), no closures or string.format on the common paths, and
-- numbers passed to redis.call as numbers (Redis prints integers below
-- 2^53 exactly).
local now = time_us()
local now_ms = math.floor(now / 1000)
local ceil, floor, max, min = math.ceil, math.floor, math.max, math.min
local call = redis.call

-- The state of each meter / fixed / slide key this batch has used, by
-- key: {kind, fields..., dirty}; written back once, after the last request.
local cache, dirty = {}, {}
local function state(key, kind)
  local s = cache[key]
  if s then
    if s[1] ~= kind then
      error('key used by two algorithms')
    end
    return s
  end
  if kind == 'meter' then
    s = { kind, tonumber(call('GET', key) or '0') or 0 }
  elseif kind == 'fixed' then
    local f = call('HMGET', key, 'w', 'n')
    -- {kind, window, used, window as stored, expiry ms}
    s = { kind, tonumber(f[1]), tonumber(f[2]) or 0, tonumber(f[1]), 0 }
  else
    local f = call('HMGET', key, 'w', 'cur', 'prev')
    -- {kind, window, cur, prev, window as stored, expiry ms}
    s = { kind, tonumber(f[1]), tonumber(f[2]) or 0, tonumber(f[3]) or 0, tonumber(f[1]), 0 }
  end
  cache[key] = s
  return s
end
local function flush(key)
  local s = cache[key]
  local kind = s[1]
  if kind == 'meter' then
    if s[2] > now then
      call('SET', key, s[2], 'PX', ceil((s[2] - now) / 1000))
    else
      call('DEL', key)
    end
  elseif kind == 'fixed' then
    -- Within the window its expiry (the window's end) is set already.
    if s[2] == s[4] then
      call('HSET', key, 'n', s[3])
    else
      call('HSET', key, 'w', s[2], 'n', s[3])
      call('PEXPIRE', key, s[5])
    end
  else
    -- Within the window its expiry (the next window's end) is set.
    if s[2] == s[5] then
      call('HSET', key, 'cur', s[3])
    else
      call('HSET', key, 'w', s[2], 'cur', s[3], 'prev', s[4])
      call('PEXPIRE', key, s[6])
    end
  end
end

-- What charging limit i of the current request changes.
local w1, w2, w3, w4, left_rem, left_reset = {}, {}, {}, {}, {}, {}
local function charge(algo, key, i, cost, mode, id)
  if algo ~= 'log' then
    local s = cache[key]
    if algo == 'meter' then
      s[2] = now + w1[i]
    elseif algo == 'fixed' then
      s[2], s[3], s[5] = w2[i], w1[i], w3[i]
    else
      s[2], s[3], s[4], s[6] = w2[i], w1[i], w3[i], w4[i]
    end
    if not dirty[key] then
      dirty[key] = true
      dirty[#dirty + 1] = key
    end
    return
  end
  local x = w1[i] -- entries to remove (refund) or the window µs
  if mode == 'refund' then
    if x > 0 then
      call('ZPOPMAX', key, x)
    end
    return
  end
  call('ZREMRANGEBYSCORE', key, '-inf', now - x)
  local members = {}
  for j = 1, cost do
    members[2 * j - 1] = now
    members[2 * j] = id .. ':' .. i .. ':' .. j
  end
  call('ZADD', key, unpack(members))
  call('PEXPIRE', key, ceil(x / 1000))
end

-- One request: its limits are KEYS[k + 1 ..], its arguments ARGV[p ..].
local function decide(k, p)
  local cost = tonumber(ARGV[p])
  local mode = ARGV[p + 1]
  local n = tonumber(ARGV[p + 3])
  local refund = mode == 'refund'
  local reply, all = { 1 }, true
  for i = 1, n do
    local q = p + 1 + 3 * i
    local key, algo = KEYS[k + i], ARGV[q]
    local a, b = tonumber(ARGV[q + 1]), tonumber(ARGV[q + 2])
    -- ok/retry: does this limit admit the cost; rem/reset: as things stand;
    -- left_rem/left_reset[i]: as they would be once charged (or refunded).
    local ok, retry, rem, reset = 1, 0, 0, 0

    if algo == 'meter' then
      local T, B = a, b
      local tau = T * B
      local ahead = max(state(key, algo)[2], now) - now
      local next = ahead + cost * T
      if refund then
        next = max(0, ahead - cost * T)
      elseif cost > B then
        ok, retry = 0, -1
      elseif next > tau then
        ok, retry = 0, ceil((next - tau) / 1000)
      end
      rem, reset = floor((tau - ahead) / T), ceil(ahead / 1000)
      left_rem[i], left_reset[i] = floor((tau - next) / T), ceil(next / 1000)
      w1[i] = next

    elseif algo == 'fixed' then
      local L, W = a, b
      local w = floor(now / W)
      local s = state(key, algo)
      local used = (s[2] == w) and s[3] or 0
      local left = ceil(((w + 1) * W - now) / 1000)
      local next = used + cost
      if refund then
        next = max(0, used - cost)
      elseif cost > L then
        ok, retry = 0, -1
      elseif next > L then
        ok, retry = 0, left
      end
      rem, reset = L - used, (used > 0) and left or 0
      left_rem[i], left_reset[i] = L - min(next, L), (next > 0) and left or 0
      w1[i], w2[i], w3[i] = next, w, left

    elseif algo == 'slide' then
      -- Milliseconds keep L × W within exact integer range.
      local L, W = a, b
      local w = floor(now_ms / W)
      local e = now_ms - w * W
      local s = state(key, algo)
      local cur, prev = 0, 0
      if s[2] == w then
        cur, prev = s[3], s[4]
      elseif s[2] == w - 1 then
        prev = s[3]
      end
      local next = cur + cost
      if refund then
        next = max(0, cur - cost)
      elseif cost > L then
        ok, retry = 0, -1
      elseif prev * (W - e) + next * W > L * W then
        ok = 0
        if next <= L then
          retry = ceil(W - e - (L - next) * W / prev)
        else
          retry = (W - e) + ceil(W - (L - cost) * W / cur)
        end
      end
      -- The estimate times W is prev weighted by its overlap, plus cur.
      local base = L * W - prev * (W - e)
      local idle = (prev > 0) and (W - e) or 0
      rem = max(0, floor((base - cur * W) / W))
      reset = (cur > 0) and (2 * W - e) or idle
      left_rem[i] = max(0, floor((base - next * W) / W))
      left_reset[i] = (next > 0) and (2 * W - e) or idle
      w1[i], w2[i], w3[i], w4[i] = next, w, prev, 2 * W - e

    elseif algo == 'log' then
      local L, W = a, b
      -- (Concatenation would print 16 digits as 1.7e+15.)
      local from = string.format('(%.0f', now - W)
      local used = call('ZCOUNT', key, from, '+inf')
      local newest = call('ZREVRANGEBYSCORE', key, '+inf', from, 'WITHSCORES', 'LIMIT', 0, 1)
      local reset_now = newest[2] and ceil((tonumber(newest[2]) + W - now) / 1000) or 0
      local next, reset_next = used + cost, ceil(W / 1000)
      w1[i] = W
      if refund then
        next = max(0, used - cost)
        -- Refunds remove the newest entries; the reset may stay as it was.
        reset_next = (next > 0) and reset_now or 0
        w1[i] = used - next
      elseif cost > L then
        ok, retry = 0, -1
      elseif next > L then
        -- Admissible once the (used + cost - L)-th oldest entry leaves.
        local oldest = call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', next - L - 1, 1)
        ok, retry = 0, ceil((tonumber(oldest[2]) + W - now) / 1000)
      end
      rem, reset = L - used, reset_now
      left_rem[i], left_reset[i] = L - min(next, L), reset_next
    else
      error('unknown algorithm ' .. tostring(algo))
    end

    if ok == 0 then
      all = false
    end
    local r = 4 * i - 2
    reply[r], reply[r + 1], reply[r + 2], reply[r + 3] = ok, rem, ok == 1 and 0 or retry, reset
  end

  -- Charge only when every limit admits the cost (and something is charged).
  if refund or (cost > 0 and (mode == 'charge' or (all and mode == 'consume'))) then
    local id = ARGV[p + 2]
    for i = 1, n do
      charge(ARGV[p + 1 + 3 * i], KEYS[k + i], i, cost, mode, id)
      local r = 4 * i - 2
      reply[r + 1], reply[r + 3] = left_rem[i], left_reset[i]
    end
  end
  if not all then
    reply[1] = 0
  end
  return reply
end

local replies, k, p = {}, 0, 2
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[p + 3])
  local done, reply = pcall(decide, k, p)
  if not done then
    reply = { -1, tostring(reply) }
  end
  replies[r] = reply
  k, p = k + n, p + 4 + 3 * n
end
for _, key in ipairs(dirty) do
  flush(key)
end
return replies
