-- lb_delete: deletes a board: its settings hash and the data of its
-- ALL_TIME and current period instances. Past instances carry the same
-- incarnation in their names, so nothing reads them again; they expire
-- by their TTL.
--
-- KEYS[1]  board hash
-- KEYS[2…] data keys to unlink (ZSETs and record hashes)
-- ARGV[1]  incarnation the caller loaded
-- returns  1 deleted | 0 no such board (or another incarnation)
-- O(1) (UNLINK frees large values in the background)
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do
  redis.call('UNLINK', KEYS[i])
end
return 1
