-- ratelimit: decides (and charges) one subject's limits all-or-nothing.
--
-- Pass 1 evaluates every limit on Redis TIME without writing; pass 2
-- charges them only if all admit the cost (mode 'consume', cost > 0), or
-- applies a refund (mode 'refund', one limit). A denial writes nothing.
--
-- KEYS[i]  state of limit i (all of one subject: one hash tag)
-- ARGV[1]  cost (integer ≥ 0)
-- ARGV[2]  'consume' | 'peek' | 'refund'
-- ARGV[3]  unique request id (sliding-log members)
-- ARGV[3+3i-2 .. 3+3i]: limit i as algorithm name and two integers
--          (validated by the caller):
--          'meter'  T = emission interval µs, B = burst (token bucket and
--                   GCRA: a bucket stored as the time it will be full)
--          'fixed'  L, W µs   'log' L, W µs   'slide' L, W ms
-- returns  {all allowed (1/0), {allowed, remaining, retry ms (-1 never),
--          reset ms} per limit}
-- O(limits), plus O(log N + cost) for sliding logs
local now = time_us()
local cost = tonumber(ARGV[1])
local mode = ARGV[2]
local n = #KEYS

local function ms(us)
  return math.ceil(us / 1000)
end
local function int(x)
  return string.format('%.0f', x)
end

local out, commits, all = {}, {}, true
for i = 1, n do
  local base = 3 + 3 * (i - 1)
  local key, algo = KEYS[i], ARGV[base + 1]
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
    local used = (tonumber(f[1]) == w) and tonumber(f[2]) or 0
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
      redis.call('HSET', key, 'w', int(w), 'n', next)
      redis.call('PEXPIRE', key, ms(left))
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
        members[#members + 1] = ARGV[3] .. ':' .. i .. ':' .. j
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
      redis.call('HSET', key, 'w', int(w), 'cur', next, 'prev', prev)
      redis.call('PEXPIRE', key, 2 * W - e)
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
local reply = {}
for i = 1, n do
  local ok, retry, state = out[i][1], out[i][2], out[i][3]
  if charge then
    commits[i]()
    state = out[i][4]
  end
  reply[i] = { ok and 1 or 0, state[1], ok and 0 or retry, state[2] }
end
return { all and 1 or 0, reply }
