-- probe: proves Redis accepts a scripted write and reports its clock.
--
-- Used by the health checker and AdminService. A plain PING succeeds on a
-- read-only replica (after a failover), under `CLIENT PAUSE WRITE` and at
-- maxmemory with `noeviction`; this write does not, so health reflects
-- whether coord can actually serve.
--
-- KEYS[1]  probe key of this coord instance (owner: the instance; expires)
-- ARGV[1]  TTL of the probe key in milliseconds (integer > 0)
-- returns  {seconds, microseconds} from Redis TIME
-- O(1)
local t = redis.call('TIME')
redis.call('SET', KEYS[1], t[1], 'PX', ARGV[1])
return { tonumber(t[1]), tonumber(t[2]) }
