#!lua
-- herald's atomic publish: for every message of a request, in order, check
-- its idempotency key, then for every topic ensure the history's epoch,
-- append to the history (a stream trimmed to max_events, expiring after
-- ttl) and publish the live event. One script means one atomic step: no
-- subscriber sees a live event that history lacks, and a request is stored
-- whole or not at all. The shebang makes Redis refuse the whole script up
-- front when it is out of memory, instead of failing half way.
--
-- KEYS[1]: the incarnation key (see keys.rs); then, per message: its
-- idempotency key, then per topic: events key, meta key.
-- ARGV: max_events, ttl_ms, idempotency_ttl_ms, now_us, message count, then
-- per message: idempotency key ('' for none), receipt shape ('o' one topic,
-- 'm' many), topic count, event ('' for message), data, then per topic:
-- topic name, channel, candidate epoch (used when the history is new).
--
-- Returns one receipt per message: the shape letter, then one line per
-- topic "epoch:seq:topic". A repeated idempotency key returns the first
-- publish's receipt and publishes nothing.
local max_events = ARGV[1]
local ttl = ARGV[2]
local idem_ttl = ARGV[3]
local now = ARGV[4]
local count = tonumber(ARGV[5])
-- Histories recorded under another incarnation predate a failover and may
-- have lost their newest events: they are replaced, never continued.
local incarnation = redis.call('GET', KEYS[1]) or ''
local a, k = 6, 2
local results = {}
for m = 1, count do
  local idem, shape, ntopics = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local event, data = ARGV[a + 3], ARGV[a + 4]
  a = a + 5
  local idem_key = KEYS[k]
  k = k + 1
  local prior = false
  if idem ~= '' then
    prior = redis.call('GET', idem_key)
  end
  if prior then
    results[m] = prior
    k = k + 2 * ntopics
    a = a + 3 * ntopics
  else
    local lines = { shape }
    for t = 1, ntopics do
      local events_key, meta_key = KEYS[k], KEYS[k + 1]
      local topic, channel, candidate = ARGV[a], ARGV[a + 1], ARGV[a + 2]
      k = k + 2
      a = a + 3
      local meta = redis.call('HMGET', meta_key, 'epoch', 'inc')
      local epoch = meta[1]
      if (not epoch) or (meta[2] or '') ~= incarnation
          or redis.call('EXISTS', events_key) == 0 then
        -- A new history (first event, or the old one expired or was lost):
        -- a fresh epoch tells clients holding old cursors to resync.
        redis.call('DEL', events_key)
        epoch = candidate
        redis.call('HSET', meta_key, 'epoch', epoch, 'seq', 0, 'inc', incarnation)
      end
      local seq = redis.call('HINCRBY', meta_key, 'seq', 1)
      redis.call('XADD', events_key, 'MAXLEN', max_events, seq .. '-0',
        'e', event, 'd', data, 't', now)
      redis.call('PEXPIRE', events_key, ttl)
      redis.call('PEXPIRE', meta_key, ttl)
      redis.call('PUBLISH', channel,
        epoch .. ' ' .. seq .. ' ' .. now .. ' ' .. #event .. '\n' .. event .. data)
      lines[#lines + 1] = epoch .. ':' .. seq .. ':' .. topic
    end
    local receipt = table.concat(lines, '\n')
    if idem ~= '' then
      redis.call('SET', idem_key, receipt, 'PX', idem_ttl)
    end
    results[m] = receipt
  end
end
return results
