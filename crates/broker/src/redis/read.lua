#!lua flags=no-writes
-- herald's history read: one atomic step (so trimming between reads cannot
-- hide a gap) that Redis also runs while it refuses writes (out of memory,
-- or a read-only replica), unlike a MULTI block.
--
-- KEYS per topic: meta key, events key (all of one hash slot in Redis
-- Cluster). ARGV per topic: after (-1 for the window only), max events, 1
-- to add the stream length.
--
-- Returns, flat, per topic: HMGET epoch seq, the first entry, [the entries
-- after `after`], [the length].
local out = {}
for t = 1, #KEYS / 2 do
  local meta, events = KEYS[2 * t - 1], KEYS[2 * t]
  local after, max, length = ARGV[3 * t - 2], ARGV[3 * t - 1], ARGV[3 * t]
  out[#out + 1] = redis.call('HMGET', meta, 'epoch', 'seq')
  out[#out + 1] = redis.call('XRANGE', events, '-', '+', 'COUNT', 1)
  if after ~= '-1' then
    out[#out + 1] = redis.call('XRANGE', events, '(' .. after .. '-0', '+', 'COUNT', max)
  end
  if length == '1' then
    out[#out + 1] = redis.call('XLEN', events)
  end
end
return out
