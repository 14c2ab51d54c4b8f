#!lua
-- herald's atomic publish: for every message, in order, check its request
-- record and, for every topic, its per-topic idempotency record; then
-- ensure the history's epoch, append to the history (a stream trimmed to
-- max_events, expiring after ttl) and publish the live event. One script
-- is one atomic step: no subscriber sees a live event that history lacks,
-- and what the script was given is stored whole or not at all. In Redis
-- Cluster herald runs one script per hash slot, with the topics of that
-- slot; otherwise one script carries the whole request. The shebang makes
-- Redis refuse the whole script up front when it is out of memory, instead
-- of failing half way.
--
-- KEYS, per message: its request record when it has one, then per topic:
-- events key, meta key, and when the message has an idempotency key the
-- topic's idempotency hash and its expiry set (see keys.rs).
-- ARGV: writer (the replication id of the primary running this), max
-- events, ttl ms, idempotency ttl ms, now us, publish command (PUBLISH or
-- SPUBLISH), message count; then per message: '1' when it has a request
-- record, idempotency key ('' for none), receipt shape ('o' one topic, 'm'
-- many), topic count, event ('' for message), data; then per topic: topic
-- name, channel, candidate epoch (used when the history is new).
--
-- Returns one string per message: '=' and the stored receipt when its
-- request record existed (nothing was published), else the shape letter
-- and one line per topic "epoch:seq:topic".
--
-- Sequence numbers: each event records its predecessor. A topic last
-- written under another primary (a failover, a restart, a slot moved to
-- another shard) may have lost events that primary acknowledged, whose
-- numbers could otherwise be handed out again to different events. So its
-- next event skips 2^32 numbers and names its real predecessor ('p'), and
-- readers treat the skipped range as never assigned.
local writer = ARGV[1]
local max_events, ttl, idem_ttl, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local publish = ARGV[6]
local now_ms = math.floor(tonumber(now) / 1000)
local count = tonumber(ARGV[7])
local SKIP = 4294967296
local a, k = 8, 1
local results = {}
for m = 1, count do
  local has_record, idem, shape = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local ntopics = tonumber(ARGV[a + 3])
  local event, data = ARGV[a + 4], ARGV[a + 5]
  a = a + 6
  local record_key = false
  local prior = false
  if has_record == '1' then
    record_key = KEYS[k]
    k = k + 1
    prior = redis.call('GET', record_key)
  end
  local per_topic = (idem ~= '') and 4 or 2
  if prior then
    results[m] = '=' .. prior
    k = k + per_topic * ntopics
    a = a + 3 * ntopics
  else
    local lines = { shape }
    for t = 1, ntopics do
      local events_key, meta_key = KEYS[k], KEYS[k + 1]
      local idem_hash, idem_at = false, false
      if per_topic == 4 then
        idem_hash, idem_at = KEYS[k + 2], KEYS[k + 3]
      end
      k = k + per_topic
      local topic, channel, candidate = ARGV[a], ARGV[a + 1], ARGV[a + 2]
      a = a + 3
      local stored = false
      if idem_hash then
        -- Forget a few expired records (each publish does its share).
        local expired = redis.call('ZRANGEBYSCORE', idem_at, '-inf', now_ms, 'LIMIT', 0, 8)
        if #expired > 0 then
          redis.call('HDEL', idem_hash, unpack(expired))
          redis.call('ZREM', idem_at, unpack(expired))
        end
        stored = redis.call('HGET', idem_hash, idem)
      end
      if stored then
        lines[#lines + 1] = stored .. ':' .. topic
      else
        local meta = redis.call('HMGET', meta_key, 'epoch', 'seq', 'rid')
        local epoch, prev = meta[1], tonumber(meta[2] or '0')
        local seq
        if (not epoch) or redis.call('EXISTS', events_key) == 0 then
          -- A new history (first event, or the old one expired or was
          -- lost): a fresh epoch tells clients holding old cursors to
          -- resync.
          redis.call('DEL', events_key)
          epoch, prev, seq = candidate, 0, 1
        elseif meta[3] ~= writer then
          seq = prev + SKIP + 1
        else
          seq = prev + 1
        end
        local s, p = string.format('%d', seq), string.format('%d', prev)
        redis.call('HSET', meta_key, 'epoch', epoch, 'seq', s, 'rid', writer)
        if seq == prev + 1 then
          redis.call('XADD', events_key, 'MAXLEN', max_events, s .. '-0',
            'e', event, 'd', data, 't', now)
        else
          redis.call('XADD', events_key, 'MAXLEN', max_events, s .. '-0',
            'e', event, 'd', data, 't', now, 'p', p)
        end
        redis.call('PEXPIRE', events_key, ttl)
        redis.call('PEXPIRE', meta_key, ttl)
        redis.call(publish, channel,
          epoch .. ' ' .. s .. ' ' .. p .. ' ' .. now .. ' ' .. #event .. '\n' .. event .. data)
        local position = epoch .. ':' .. s
        if idem_hash then
          redis.call('HSET', idem_hash, idem, position)
          redis.call('ZADD', idem_at, now_ms + idem_ttl, idem)
          redis.call('PEXPIRE', idem_hash, idem_ttl)
          redis.call('PEXPIRE', idem_at, idem_ttl)
        end
        lines[#lines + 1] = position .. ':' .. topic
      end
    end
    local receipt = table.concat(lines, '\n')
    if record_key then
      redis.call('SET', record_key, receipt, 'PX', idem_ttl)
    end
    results[m] = receipt
  end
end
return results
