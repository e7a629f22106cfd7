-- prelude: helpers prepended to every script at build time (scripts.rs), so
-- each script stays one self-contained body for EVALSHA. Locals only:
-- Redis forbids globals in scripts. (Error line numbers count these lines.)
--
-- time_ms(), time_us(): Redis TIME as ms / µs since the epoch, the one
-- clock every script uses; time_us_text(): µs as exact digits (numbers of
-- 16 digits print as 1.7e+15, and string.format is slow).
-- PUBLISH: the command events go out with. Scripts built for a cluster
-- with sharded pub/sub get 'SPUBLISH' instead (scripts.rs), which keeps an
-- event on its key's shard; its channel must then share the keys' slot.
local PUBLISH = 'PUBLISH'
local function time_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function time_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function time_us_text()
  local t = redis.call('TIME')
  return t[1] .. string.sub('00000' .. t[2], -6)
end
-- sem_wake(queue, wants, free, size, now, channel, key): publishes the ids
-- of the run of live waiters from the head of a semaphore's queue whose
-- requests fit in `free` together (and of any that can never fit `size`,
-- to hear so), as 's|<key length>|<key><id> <id> ...'; returns how many.
local function sem_wake(queue, wants, free, size, now, channel, key)
  local woken = {}
  for _, id in ipairs(redis.call('ZRANGE', queue, 0, 99)) do
    local wn, deadline = string.match(redis.call('HGET', wants, id) or '', '^(%d+) (%d+)$')
    if wn and tonumber(deadline) > now then
      wn = tonumber(wn)
      if wn > size then
        woken[#woken + 1] = id
      elseif wn > free then
        break
      else
        free = free - wn
        woken[#woken + 1] = id
      end
    end
  end
  if #woken > 0 then
    redis.call(PUBLISH, channel, 's|' .. #key .. '|' .. key .. table.concat(woken, ' '))
  end
  return #woken
end
-- sem_waiters(queue, wants, now): the live waiters of a semaphore's queue
-- (those whose place has not lapsed).
local function sem_waiters(queue, wants, now)
  local live = 0
  for _, id in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    local deadline = string.match(redis.call('HGET', wants, id) or '', ' (%d+)$')
    if deadline and tonumber(deadline) > now then
      live = live + 1
    end
  end
  return live
end
-- sem_record(n, ttl, lease, owner) and sem_grant(record) -> n, lease, ttl
-- (text), owner: a semaphore grant as '<n> <ttl ms> <lease length>
-- <lease><owner>' (a private lease's id holds its name: any bytes).
local function sem_record(n, ttl, lease, owner)
  return n .. ' ' .. ttl .. ' ' .. #lease .. ' ' .. lease .. owner
end
local function sem_grant(p)
  local n, ttl, len, rest = string.match(p, '^(%d+) (%d+) (%d+) (.*)$')
  len = tonumber(len)
  return tonumber(n), string.sub(rest, 1, len), ttl, string.sub(rest, len + 1)
end
-- Elections (a semaphore of one permit whose grant is the leadership):
-- el_state(term, rev, ttl, lease, owner, value) and el_none(term, rev) are
-- an election's state as lock::election::ElectionState parses it,
-- 'L <term> <rev> <ttl ms> <lease length> <lease><owner length>
-- <owner><value>' or 'N <last term> <rev>'; rev counts the election's
-- changes, so an observer can order what it reads and hears.
local function el_state(term, rev, ttl, lease, owner, value)
  return 'L ' .. term .. ' ' .. rev .. ' ' .. ttl .. ' ' .. #lease .. ' ' .. lease .. #owner .. ' ' .. owner .. value
end
local function el_none(term, rev)
  return 'N ' .. term .. ' ' .. rev
end
-- el_publish(channel, key, state): 'o|<key length>|<key><state>'.
local function el_publish(channel, key, state)
  redis.call(PUBLISH, channel, 'o|' .. #key .. '|' .. key .. state)
end
-- el_vacate(hash, id, channel, key): permit id's grant ended; if it led
-- the election (hash), nobody leads now, and observers hear so.
local function el_vacate(hash, id, channel, key)
  if redis.call('HGET', hash, 'leader') == id then
    local rev = redis.call('HINCRBY', hash, 'rev', 1)
    redis.call('HDEL', hash, 'leader', 'value')
    el_publish(channel, key, el_none(id, rev))
  end
end
