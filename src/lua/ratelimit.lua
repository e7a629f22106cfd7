-- ratelimit: decides (and charges) rate limits for a batch of requests,
-- in order, each all-or-nothing over its own limits.
--
-- Per request: pass 1 evaluates every limit on Redis TIME without writing;
-- pass 2 charges them only if all admit the cost (mode 'consume', cost > 0),
-- or applies a refund (mode 'refund', one limit). A denial writes nothing.
-- The requests of a batch share one TIME and are decided one after the
-- other, each seeing what the ones before it charged (so requests on one
-- subject inside one batch behave as if they arrived in that order).
--
-- KEYS     the state of every limit of every request, request after
--          request (all of one hash tag on a cluster)
-- ARGV[1]  number of requests R
-- then per request: cost (integer ≥ 0), mode ('consume' | 'peek' |
--          'refund'), unique request id (sliding-log members), number of
--          limits n, then n × (algorithm name and two integers, validated
--          by the caller):
--          'meter'  T = emission interval µs, B = burst (token bucket and
--                   GCRA: a bucket stored as the time it will be full)
--          'fixed'  L, W µs   'log' L, W µs   'slide' L, W ms
-- returns  per request, flat: {all allowed (1/0), then per limit: allowed
--          (1/0), remaining, retry ms (-1 never), reset ms}, or {-1, error}
--          when that request failed (the others still count)
-- O(limits), plus O(log N + cost) for sliding logs
local now = time_us()

local function ms(us)
  return math.ceil(us / 1000)
end
local function int(x)
  return string.format('%.0f', x)
end

-- One request: its limits are KEYS[k + 1 ..], its arguments ARGV[p ..].
local function decide(k, p)
  local cost = tonumber(ARGV[p])
  local mode = ARGV[p + 1]
  local id = ARGV[p + 2]
  local n = tonumber(ARGV[p + 3])
  local out, commits, all = {}, {}, true
  for i = 1, n do
    local base = p + 3 + 3 * (i - 1)
    local key, algo = KEYS[k + i], ARGV[base + 1]
    local a, b = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
    -- ok/retry: does this limit admit the cost. now/after: {remaining, reset
    -- ms} as things stand and as they would be once charged (or refunded).
    local ok, retry, cur_state, new_state, commit = true, 0, nil, nil, nil

    if algo == 'meter' then
      local T, B = a, b
      local tau = T * B
      local ahead = math.max(tonumber(redis.call('GET', key) or '0') or 0, now) - now
      local function state(x)
        return { math.floor((tau - x) / T), ms(x) }
      end
      local next = ahead + cost * T
      if mode == 'refund' then
        next = math.max(0, ahead - cost * T)
      elseif cost > B then
        ok, retry = false, -1
      elseif next > tau then
        ok, retry = false, ms(next - tau)
      end
      cur_state, new_state = state(ahead), state(next)
      commit = function()
        if next > 0 then
          redis.call('SET', key, int(now + next), 'PX', ms(next))
        else
          redis.call('DEL', key)
        end
      end

    elseif algo == 'fixed' then
      local L, W = a, b
      local w = math.floor(now / W)
      local f = redis.call('HMGET', key, 'w', 'n')
      local same = tonumber(f[1]) == w
      local used = same and tonumber(f[2]) or 0
      local left = (w + 1) * W - now
      local function state(u)
        return { L - u, (u > 0) and ms(left) or 0 }
      end
      local next = used + cost
      if mode == 'refund' then
        next = math.max(0, used - cost)
      elseif cost > L then
        ok, retry = false, -1
      elseif next > L then
        ok, retry = false, ms(left)
      end
      cur_state, new_state = state(used), state(math.min(next, L))
      commit = function()
        -- Within the window its expiry (the window's end) is set already.
        if same then
          redis.call('HSET', key, 'n', next)
        else
          redis.call('HSET', key, 'w', int(w), 'n', next)
          redis.call('PEXPIRE', key, ms(left))
        end
      end

    elseif algo == 'log' then
      local L, W = a, b
      local from = '(' .. int(now - W)
      local used = redis.call('ZCOUNT', key, from, '+inf')
      local newest = redis.call('ZREVRANGEBYSCORE', key, '+inf', from, 'WITHSCORES', 'LIMIT', 0, 1)
      local reset_now = newest[2] and ms(tonumber(newest[2]) + W - now) or 0
      local next, reset_next = used + cost, ms(W)
      if mode == 'refund' then
        next = math.max(0, used - cost)
        -- Refunds remove the newest entries; the reset may stay as it was.
        reset_next = (next > 0) and reset_now or 0
      elseif cost > L then
        ok, retry = false, -1
      elseif next > L then
        -- Admissible once the (used + cost - L)-th oldest entry leaves.
        local k = next - L
        local oldest = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', k - 1, 1)
        ok, retry = false, ms(tonumber(oldest[2]) + W - now)
      end
      cur_state, new_state = { L - used, reset_now }, { L - math.min(next, L), reset_next }
      commit = function()
        if mode == 'refund' then
          if used > next then
            redis.call('ZPOPMAX', key, used - next)
          end
          return
        end
        redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - W))
        local members = {}
        for j = 1, cost do
          members[#members + 1] = int(now)
          members[#members + 1] = id .. ':' .. i .. ':' .. j
        end
        redis.call('ZADD', key, unpack(members))
        redis.call('PEXPIRE', key, ms(W))
      end

    elseif algo == 'slide' then
      -- Milliseconds keep L × W within exact integer range.
      local L, W = a, b
      local now_ms = math.floor(now / 1000)
      local w = math.floor(now_ms / W)
      local e = now_ms - w * W
      local f = redis.call('HMGET', key, 'w', 'cur', 'prev')
      local sw = tonumber(f[1])
      local cur, prev = 0, 0
      if sw == w then
        cur, prev = tonumber(f[2]) or 0, tonumber(f[3]) or 0
      elseif sw == w - 1 then
        prev = tonumber(f[2]) or 0
      end
      -- The estimate times W: prev weighted by its overlap, plus cur.
      local function state(c)
        local est = prev * (W - e) + c * W
        local reset = 0
        if c > 0 then
          reset = 2 * W - e
        elseif prev > 0 then
          reset = W - e
        end
        return { math.max(0, math.floor((L * W - est) / W)), reset }
      end
      local next = cur + cost
      if mode == 'refund' then
        next = math.max(0, cur - cost)
      elseif cost > L then
        ok, retry = false, -1
      elseif prev * (W - e) + next * W > L * W then
        ok = false
        if next <= L then
          retry = math.ceil(W - e - (L - next) * W / prev)
        else
          retry = (W - e) + math.ceil(W - (L - cost) * W / cur)
        end
      end
      cur_state, new_state = state(cur), state(next)
      commit = function()
        -- Within the window its expiry (the next window's end) is set.
        if sw == w then
          redis.call('HSET', key, 'cur', next)
        else
          redis.call('HSET', key, 'w', int(w), 'cur', next, 'prev', prev)
          redis.call('PEXPIRE', key, 2 * W - e)
        end
      end
    end

    if not ok then
      all = false
    end
    out[i] = { ok, retry, cur_state, new_state }
    commits[i] = commit
  end

  -- Charge only when every limit admits the cost (and something is charged).
  local charge = mode == 'refund' or (all and mode == 'consume' and cost > 0)
  local reply = { all and 1 or 0 }
  for i = 1, n do
    local ok, retry, state = out[i][1], out[i][2], out[i][3]
    if charge then
      commits[i]()
      state = out[i][4]
    end
    reply[#reply + 1] = ok and 1 or 0
    reply[#reply + 1] = state[1]
    reply[#reply + 1] = ok and 0 or retry
    reply[#reply + 1] = state[2]
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
return replies
