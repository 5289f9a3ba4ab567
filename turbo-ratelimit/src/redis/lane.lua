-- One lane of turbo-ratelimit in one Redis hash: a port of src/math/
-- (`LaneBuckets`), function by function, same names. Every call is one
-- atomic step on the whole lane. Keep the two in step: the integration test
-- `the_script_agrees_with_the_memory_store_on_random_operations` runs both
-- on the same operations and demands the same results.
--
-- KEYS[1]  the lane's hash.
-- ARGV[1]  the operation: acquire | adjust | correct | pause | limits | state.
-- ARGV[2]  idle TTL in ms: the key expires this long after the lane would be
--          full and unpaused (it is then indistinguishable from a new lane).
-- ARGV[3]  '' to read Redis's clock, else "now" in us from an injected clock.
-- ARGV[4..7]  limits rpm, tpm, rpd, tpd (0 = none) used only to create the
--          lane when the key does not exist.
-- ARGV[8]  how a missing lane starts: 'p' (probe: the opening) or 'f' (full).
-- ARGV[9..]   the operation's arguments (see each operation below).
-- Every reply is an array of strings.
--
-- Time is Redis's own clock (TIME), so every process sharing the key agrees on
-- it whatever its local clock says. (An injected clock replaces it only for
-- tests and single-host setups.) Instants are kept in microseconds since the
-- Unix epoch (exact in a double); durations are turned into nanoseconds for
-- the math.
--
-- Numbers. Lua has only doubles. Levels are scaled exactly like src/math/:
-- S = units * W with W the window in nanoseconds, so refills (rate * dt),
-- charges, comparisons and the floors below are the same integer arithmetic,
-- exact while values stay within 2^53 (capacities up to 150,119 units per
-- minute or 104 per day: tests/redis/agreement.rs checks the script against
-- src/math/ with no slack at that edge); beyond that they are rounded to 53 bits, a
-- relative error of 1e-16 per step, with the same clamps and rounding
-- directions (waits up, levels down). Values are stored with %.17g, so a
-- save/load round trip is exact.
--
-- Fields of the hash:
--   s        schema version
--   t        last update, us      p      paused until, us (0 = never)
--   rt, tt   requests / tokens reserved since the lane was created
--   na, nr, nt   newest reservation any feedback was about (at, rt, tt)
--   sq, bu   when the sends reserved so far are done, and where the last
--            backlog of sends ended, us (absent: 0; see acquire)
--   per axis i (1 rpm, 2 tpm, 3 rpd, 4 tpd), present only when limited:
--   l<i> limit   v<i> level (scaled)   f<i> foreign rate (units/window)
--   a<i>, r<i>   sync point: reservation instant (us) and residual (scaled)
--   o<i> '1' while the bucket is in its opening
--   h<i> withheld (scaled), while the opening or an unknown ratio keeps some
--   q<i> charge ratio (ppm)   u<i> '1' while the ratio is unknown
--   g<i> '1' while the known ratio is provisional (a first sample's)
--   x<i>, y<i>, z<i>, c<i>   ratio anchor: reservation instant (us), tokens
--        reserved through it, the server's remaining count, '1' if calm

local SCHEMA = '4'
local W = {60000000000, 60000000000, 86400000000000, 86400000000000}
local TOKENS = {false, true, false, true}
local UNCONTESTED_FRACTION = 16
local PROBE_FRACTION = 256
local MISREAD_FRACTION = 64
local RAISE_MARGIN_FRACTION = 256
local RATIO_ONE = 1000000
local RATIO_MIN = 500000
local RATIO_MAX = 2000000
local RATIO_UNKNOWN = 1250000
local CAUTION_FRACTION = 4
local BURST_PACE = 8
local LOWER_DEADBAND = 20
local CALM_SPACING_NS = 100000000
local SEND_SPREAD_US = 5000

local function num(s)
  return tonumber(s) or 0
end

local function fmt(x)
  return string.format('%.17g', x)
end

-- Integral values travel back as decimal strings: doubles above 2^63 would not
-- survive Redis's integer conversion.
local function int(x)
  return string.format('%.0f', x)
end

-- floor(a / b) for b > 0, exact for integers below 2^53 (a double quotient
-- can round up across an integer).
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- Integer division truncating towards zero, like Rust's `/` on i128.
local function tdiv(a, b)
  if a >= 0 then return idiv(a, b) end
  return -idiv(-a, b)
end

local function ceil_div(a, b)
  local q = idiv(a, b)
  if q * b < a then q = q + 1 end
  return q
end

local function clamp(x, lo, hi)
  if x < lo then return lo end
  if x > hi then return hi end
  return x
end

local function min_rate(limit)
  local r = idiv(limit, 16)
  if r == 0 then return 1 end
  return r
end

local function rate_of(limit, foreign)
  local r = limit - foreign
  local floor = min_rate(limit)
  if r < floor then return floor end
  return r
end

local function clamp_foreign(foreign, limit)
  return math.min(foreign, math.max(0, limit - min_rate(limit)))
end

local function refill(level, cap, rate, elapsed_ns)
  if level >= cap then return cap end
  local x = level + rate * elapsed_ns
  if x >= cap then return cap end
  return x
end

-- In nanoseconds, rounded up.
local function wait_ns(level, need, rate)
  if level >= need then return 0 end
  return ceil_div(need - level, rate)
end

local function us_up(ns)
  return ceil_div(ns, 1000)
end

local function full_in_ns(b, w)
  return wait_ns(b.level, b.limit * w, rate_of(b.limit, b.foreign))
end

local function tau(w)
  return idiv(w, 6)
end

local function remaining_from_reset(limit, reset_ns, w)
  local deficit = math.min(ceil_div(limit * reset_ns, w), limit)
  return limit - deficit
end

local function estimate_level_at_rate(remaining, later, limit, rate, w, elapsed_ns)
  local cap = limit * w
  local base = math.min(remaining * w, cap)
  local refilled = refill(base, cap, rate, elapsed_ns)
  return math.max(refilled - later * w, -cap)
end

local function probe_level(limit, w)
  local cap = limit * w
  local probe = math.max(tdiv(cap, PROBE_FRACTION), w)
  return math.min(probe, cap)
end

-- The level of a bucket that had started full, at `limit` (a larger limit
-- adds its extra capacity).
local function released(b, limit, w)
  local cap = limit * w
  local larger = math.max(cap - b.limit * w, 0)
  return clamp(b.level + math.max(b.withheld, 0) + larger, -cap, cap)
end

-- Keeps level + withheld <= cap.
local function trim_withheld(b, w)
  if b.withheld > 0 then
    b.withheld = math.min(b.withheld, math.max(b.limit * w - b.level, 0))
  end
end

local function corrected_level(local_level, old_limit, new_limit, w, est)
  local cap = new_limit * w
  if est then est = clamp(est, -cap, cap) end
  if local_level == nil then
    if est then return est end
    return cap
  end
  local lvl = clamp(local_level, -cap, cap)
  if est and new_limit > old_limit then return est end
  -- The server's count is rounded down: only a gap of a whole unit or more
  -- shows that the server has less than we think.
  if est and lvl - est >= w then return est end
  return lvl
end

local function update_foreign_rate(foreign, limit, w, divergence, interval_ns)
  local over = math.max(interval_ns, tau(w), 1)
  local step = tdiv(divergence, over)
  local max = math.max(0, limit - min_rate(limit))
  return clamp(foreign + step, 0, max)
end

-- Returns the new foreign rate and the new residual.
local function learn_foreign(foreign, limit, w, divergence, residual, interval_ns)
  local seen
  if divergence >= w then seen = divergence else seen = math.min(divergence, 0) end
  local most = limit * math.max(interval_ns, idiv(tau(w), 100))
  local evidence = clamp(seen - residual, -most, most)
  local updated = update_foreign_rate(foreign, limit, w, evidence, interval_ns)
  if evidence >= 0 then
    return updated, seen
  end
  local over = math.max(interval_ns, tau(w), 1)
  local absorbed = (updated - foreign) * over
  return updated, math.max(residual + absorbed, seen)
end

local function own_share(estimate, rate, limit)
  if estimate <= 0 or rate >= limit or limit == 0 then return estimate end
  local q = idiv(estimate, limit)
  local r = estimate - q * limit
  return q * rate + idiv(r * rate, limit)
end

-- The charge ratio (src/math/ratio.rs) ----------------------------------------

local function charged(units, ratio)
  return ceil_div(units * ratio, RATIO_ONE)
end

-- Cautious only while the level could go as a burst (a quarter of the bucket).
local function charge_ratio(b, w)
  local burst = b.level > tdiv(b.limit * w, CAUTION_FRACTION)
  if b.known or not burst or b.ratio > RATIO_UNKNOWN then return b.ratio end
  return RATIO_UNKNOWN
end

local function cost(b, units, tokens, w)
  if tokens then return charged(units, charge_ratio(b, w)) end
  return units
end

local function sample_tokens(limit, known)
  local n
  if known then n = idiv(limit, 4) else n = idiv(limit, 16) end
  if n == 0 then return 1 end
  return n
end

-- Returns 'short' | 'wasted' | the sample {ours, drop, span_ns}.
local function ratio_sample(anchor, answer, limit, foreign, known, w)
  local span_ns = math.max(0, answer.at - anchor.at) * 1000
  local refilled = anchor.rem * w + limit * span_ns
  if refilled > limit * w or answer.at < anchor.at then return 'wasted' end
  local ours = math.max(0, answer.tt - anchor.tt)
  if ours < sample_tokens(limit, known) then return 'short' end
  return {ours = ours, drop = refilled - answer.rem * w - foreign * span_ns, span_ns = span_ns}
end

local function sample_ratio(sample, w)
  local denominator = math.max(sample.ours * (w / RATIO_ONE), 1)
  return clamp(idiv(math.max(sample.drop, 0), denominator), RATIO_MIN, RATIO_MAX)
end

local function is_burst(sample, limit, w)
  return sample.ours * w >= limit * sample.span_ns * BURST_PACE
end

-- Returns 'keep' | 'move', ratio | 'first', ratio, seen.
local function learn_ratio(ratio, known, provisional, foreign, limit, w, sample)
  local seen = sample_ratio(sample, w)
  local burst = is_burst(sample, limit, w)
  if not known then
    if burst then return 'first', seen, seen end
    if foreign == 0 then return 'first', math.min(seen, RATIO_ONE), seen end
    return 'keep'
  end
  -- A known ratio only ever falls; a higher one is the foreign rate's to learn.
  local lower = seen + idiv(seen, LOWER_DEADBAND) < ratio
  if foreign > 0 or not lower then return 'keep' end
  if provisional then return 'move', seen end
  local weight = math.min(sample.ours, limit)
  local over = math.max(weight + limit, 1)
  local moved = tdiv((seen - ratio) * weight, over)
  return 'move', clamp(ratio + moved, RATIO_MIN, RATIO_MAX)
end

-- Returns the sample's own ratio when this was the first ratio learned.
local function observe_ratio(b, answer, calm, w)
  local anchor = b.anchor
  if not anchor then
    -- The first in-order answer anchors even when not calm (a lane never
    -- calm takes 1 a window later).
    b.anchor = {at = answer.at, tt = answer.tt, rem = answer.rem, calm = calm}
    return nil
  end
  if not calm then
    if not b.known and math.max(0, answer.at - anchor.at) * 1000 >= w then
      b.known = true
      b.prov = true
      return b.ratio
    end
    return nil
  end
  b.anchor = {at = answer.at, tt = answer.tt, rem = answer.rem, calm = calm}
  -- An anchor that is not calm only dated the wait.
  if not anchor.calm then return nil end
  local sample = ratio_sample(anchor, answer, b.limit, b.foreign, b.known, w)
  if sample == 'wasted' then return nil end
  if sample == 'short' then
    b.anchor = anchor
    return nil
  end
  -- A complete sample ends a provisional ratio, whatever it teaches.
  local provisional = b.prov == true
  b.prov = false
  local step, ratio, seen = learn_ratio(b.ratio, b.known, provisional, b.foreign, b.limit, w, sample)
  if step == 'move' then
    b.ratio = ratio
  elseif step == 'first' then
    b.ratio = ratio
    b.known = true
    b.prov = true
    return seen
  end
  return nil
end

local function is_newer(a, b)
  if a.rt ~= b.rt then return a.rt > b.rt end
  if a.tt ~= b.tt then return a.tt > b.tt end
  return a.at > b.at
end

-- State -------------------------------------------------------------------

local key = KEYS[1]
local idle_ttl_ms = num(ARGV[2])

local function now_us()
  if ARGV[3] ~= '' then return num(ARGV[3]) end
  local t = redis.call('TIME')
  return num(t[1]) * 1000000 + num(t[2])
end

local function full_bucket(limit, i)
  return {limit = limit, level = limit * W[i], foreign = 0, opening = false, withheld = 0,
          ratio = RATIO_ONE, known = true}
end

local function new_bucket(limit, i)
  if ARGV[8] == 'p' then
    local level = probe_level(limit, W[i])
    -- A token axis whose state is unknown learns its charge ratio too.
    return {limit = limit, level = level, foreign = 0, opening = true, withheld = limit * W[i] - level,
            ratio = RATIO_ONE, known = not TOKENS[i]}
  end
  return full_bucket(limit, i)
end

local function load(now)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then
    local st = {t = now, p = 0, rt = 0, tt = 0, sq = 0, bu = 0, b = {}}
    for i = 1, 4 do
      local limit = num(ARGV[3 + i])
      if limit > 0 then st.b[i] = new_bucket(limit, i) end
    end
    return st
  end
  local h = {}
  for j = 1, #raw, 2 do h[raw[j]] = raw[j + 1] end
  -- Schema 2 (before the opening) has no o<i>/h<i>, schema 3 (before the
  -- charge ratio) no q<i>/u<i>: their buckets are known and charge as
  -- counted, which is what absence means; the next save writes schema 4.
  if h.s ~= SCHEMA and h.s ~= '2' and h.s ~= '3' then
    return redis.error_reply('turbo-ratelimit: ' .. key .. ' has schema ' .. tostring(h.s) .. ', expected ' .. SCHEMA)
  end
  local st = {t = num(h.t), p = num(h.p), rt = num(h.rt), tt = num(h.tt), sq = num(h.sq), bu = num(h.bu), b = {}}
  if h.na then st.newest = {at = num(h.na), rt = num(h.nr), tt = num(h.nt)} end
  for i = 1, 4 do
    local l = h['l' .. i]
    if l then
      local b = {limit = num(l), level = num(h['v' .. i]), foreign = num(h['f' .. i]), opening = h['o' .. i] == '1', withheld = num(h['h' .. i]),
                 ratio = RATIO_ONE, known = h['u' .. i] ~= '1', prov = h['g' .. i] == '1'}
      if h['q' .. i] then b.ratio = num(h['q' .. i]) end
      if h['a' .. i] then b.sync = {at = num(h['a' .. i]), residual = num(h['r' .. i])} end
      if h['x' .. i] then b.anchor = {at = num(h['x' .. i]), tt = num(h['y' .. i]), rem = num(h['z' .. i]), calm = h['c' .. i] == '1'} end
      st.b[i] = b
    end
  end
  return st
end

-- Time never runs backwards: an earlier reading is taken as the last one.
local function advance(st, now)
  if now > st.t then
    local dt = (now - st.t) * 1000
    for i = 1, 4 do
      local b = st.b[i]
      if b then
        b.level = refill(b.level, b.limit * W[i], rate_of(b.limit, b.foreign), dt)
        trim_withheld(b, W[i])
      end
    end
    st.t = now
  end
  return st.t
end

local function save(st)
  local set = {'s', SCHEMA, 't', fmt(st.t), 'p', fmt(st.p), 'rt', fmt(st.rt), 'tt', fmt(st.tt), 'sq', fmt(st.sq), 'bu', fmt(st.bu)}
  local del = {}
  if st.newest then
    for _, kv in ipairs({{'na', st.newest.at}, {'nr', st.newest.rt}, {'nt', st.newest.tt}}) do
      set[#set + 1] = kv[1]
      set[#set + 1] = fmt(kv[2])
    end
  end
  -- The key may go once the lane is full and unpaused again, plus the idle TTL.
  local busy_ns = math.max(0, st.p - st.t) * 1000
  for i = 1, 4 do
    local b = st.b[i]
    local n = tostring(i)
    if b then
      for _, kv in ipairs({{'l', b.limit}, {'v', b.level}, {'f', b.foreign}}) do
        set[#set + 1] = kv[1] .. n
        set[#set + 1] = fmt(kv[2])
      end
      -- A field that is present only while `value` is not nil.
      local function keep(field, value)
        if value ~= nil then
          set[#set + 1] = field .. n
          set[#set + 1] = value
        else
          del[#del + 1] = field .. n
        end
      end
      keep('o', b.opening and '1' or nil)
      keep('h', (b.opening or b.withheld ~= 0) and fmt(b.withheld) or nil)
      set[#set + 1] = 'q' .. n
      set[#set + 1] = fmt(b.ratio)
      keep('u', not b.known and '1' or nil)
      keep('g', b.prov and '1' or nil)
      if b.anchor then
        for _, kv in ipairs({{'x', b.anchor.at}, {'y', b.anchor.tt}, {'z', b.anchor.rem}}) do
          set[#set + 1] = kv[1] .. n
          set[#set + 1] = fmt(kv[2])
        end
        set[#set + 1] = 'c' .. n
        set[#set + 1] = b.anchor.calm and '1' or '0'
      else
        for _, f in ipairs({'x', 'y', 'z', 'c'}) do del[#del + 1] = f .. n end
      end
      if b.sync then
        set[#set + 1] = 'a' .. n
        set[#set + 1] = fmt(b.sync.at)
        set[#set + 1] = 'r' .. n
        set[#set + 1] = fmt(b.sync.residual)
      else
        del[#del + 1] = 'a' .. n
        del[#del + 1] = 'r' .. n
      end
      busy_ns = math.max(busy_ns, full_in_ns(b, W[i]))
    else
      for _, f in ipairs({'l', 'v', 'f', 'a', 'r', 'o', 'h', 'q', 'u', 'g', 'x', 'y', 'z', 'c'}) do del[#del + 1] = f .. n end
    end
  end
  redis.call('HSET', key, unpack(set))
  if #del > 0 then redis.call('HDEL', key, unpack(del)) end
  redis.call('PEXPIRE', key, ceil_div(busy_ns, 1000000) + math.max(1, idle_ttl_ms))
end

local function state_reply(st)
  local out = {int(math.max(0, st.p - st.t)), int(st.rt), int(st.tt)}
  for i = 1, 4 do
    local b = st.b[i]
    if b then
      out[#out + 1] = int(b.limit)
      out[#out + 1] = int(idiv(b.level, W[i]))
      out[#out + 1] = int(us_up(full_in_ns(b, W[i])))
      out[#out + 1] = int(b.foreign)
      out[#out + 1] = b.opening and '1' or '0'
      out[#out + 1] = int(charge_ratio(b, W[i]))
      out[#out + 1] = b.known and '1' or '0'
    else
      for _ = 1, 7 do out[#out + 1] = '0' end
    end
  end
  return out
end

-- Operations ------------------------------------------------------------------

-- ARGV[9] requests, ARGV[10] tokens.
-- Reply: {'R', at, rt, tt} | {'W', wait_us, paused_us or -1} | {'N', axis, requested, capacity}
local function acquire(st, now)
  local req = {num(ARGV[9]), num(ARGV[10])}
  local wait = math.max(0, st.p - now) * 1000
  local paused = wait > 0
  local needs = {}
  for i = 1, 4 do
    local b = st.b[i]
    if b then
      local requested = TOKENS[i] and req[2] or req[1]
      if requested > b.limit then
        return {'N', tostring(i), int(requested), int(b.limit)}
      end
      -- In the server's units (the charge ratio), at most a bucket.
      local need = math.min(cost(b, requested, TOKENS[i], W[i]), b.limit) * W[i]
      needs[i] = need
      -- In the opening only the probe is waited for, while a bucket that had
      -- started full would hold the request.
      local enough = need
      if b.opening and b.level + b.withheld >= need then
        enough = math.min(need, probe_level(b.limit, W[i]))
      end
      if b.level < enough then
        wait = math.max(wait, wait_ns(b.level, enough, rate_of(b.limit, b.foreign)))
      end
    end
  end
  if wait > 0 then
    local p = -1
    if paused then p = st.p - now end
    return {'W', int(us_up(wait)), int(p)}
  end
  for i = 1, 4 do
    local b = st.b[i]
    if b then
      b.level = b.level - needs[i]
      if not b.known then
        -- The caution beyond a ratio of 1 stays withheld.
        local requested = TOKENS[i] and req[2] or req[1]
        b.withheld = b.withheld + needs[i] - math.min(charged(requested, RATIO_ONE), b.limit) * W[i]
        trim_withheld(b, W[i])
      end
    end
  end
  st.rt = st.rt + req[1]
  st.tt = st.tt + req[2]
  -- A reservation that joins sends still under way (or is several at once)
  -- starts or extends a burst: answers about requests reserved before its
  -- end are not calm.
  local queued = st.sq > now or req[1] > 1
  st.sq = math.max(st.sq, now) + SEND_SPREAD_US * req[1]
  if queued then st.bu = st.sq end
  return {'R', int(now), int(st.rt), int(st.tt)}
end

-- ARGV[9] 'charge' | 'refund', ARGV[10] requests, ARGV[11] tokens.
local function adjust(st)
  local refund = ARGV[9] == 'refund'
  local req = {num(ARGV[10]), num(ARGV[11])}
  for i = 1, 4 do
    local b = st.b[i]
    if b then
      local cap = b.limit * W[i]
      local units = TOKENS[i] and req[2] or req[1]
      local amount = cost(b, units, TOKENS[i], W[i]) * W[i]
      -- While the ratio is unknown, the caution beyond a ratio of 1 moves to
      -- (or back from) withheld.
      local caution = 0
      if TOKENS[i] and not b.known then caution = amount - charged(units, RATIO_ONE) * W[i] end
      if refund then
        b.level = math.min(b.level + amount, cap)
        b.withheld = math.max(b.withheld - caution, 0)
      else
        b.level = math.max(b.level - amount, -cap)
        b.withheld = b.withheld + caution
      end
      trim_withheld(b, W[i])
    end
  end
  return {'OK'}
end

-- ARGV[9] pause in us. Reply: {remaining pause in us}.
local function pause(st, now)
  st.p = math.max(st.p, now + num(ARGV[9]))
  return {int(st.p - now)}
end

-- ARGV[9..12] the new limits (0 = none).
local function set_limits(st)
  for i = 1, 4 do
    local limit = num(ARGV[8 + i])
    local b = st.b[i]
    if limit <= 0 then
      st.b[i] = nil
    elseif b then
      local cap = limit * W[i]
      b.level = clamp(b.level, -cap, cap)
      b.foreign = clamp_foreign(b.foreign, limit)
      b.limit = limit
      b.withheld = math.min(b.withheld, math.max(cap - b.level, 0))
    else
      st.b[i] = full_bucket(limit, i)
    end
  end
  return state_reply(st)
end

-- obs: limit/remaining/reset_ns, each < 0 when absent (a limit of 0 too).
-- seen: reserved_at (us), tt (tokens reserved through it), later, between,
-- between_ns, elapsed (ns), in_order, calm, in_burst, reserved (the lane's total).
local function correct_axis(st, i, obs, seen)
  local w = W[i]
  local tokens = TOKENS[i]
  local current = st.b[i]
  local limit = obs.limit
  -- A late answer (not in order) stating another limit than the bucket's
  -- speaks of a limit newer answers have replaced: stale, ignored.
  if not seen.in_order and current and not current.opening and limit > 0
      and limit ~= current.limit then
    return nil
  end
  if limit <= 0 then
    if not current then return nil end
    limit = current.limit
  end
  local remaining = nil
  if obs.remaining >= 0 then
    remaining = obs.remaining
  elseif obs.reset >= 0 then
    remaining = remaining_from_reset(limit, obs.reset, w)
  end
  local answer = nil
  if remaining then answer = {at = seen.reserved_at, tt = seen.tt, rem = remaining, calm = seen.calm} end
  local continuous = obs.reset >= 0
  -- A learned axis, a changed limit or the opening starts afresh.
  if not current or limit ~= current.limit or current.opening then
    local src = current or full_bucket(limit, i)
    local later = cost(src, seen.later, tokens, w)
    local est = nil
    if remaining then est = estimate_level_at_rate(remaining, later, limit, limit, w, seen.elapsed) end
    local level
    if current and current.opening and not est then
      level = released(current, limit, w)
    elseif current and current.opening then
      -- Never more than a bucket that had started full would hold.
      local cap = limit * w
      level = math.min(clamp(est, -cap, cap), released(current, limit, w))
    elseif current and not current.opening then
      level = corrected_level(current.level, current.limit, limit, w, est)
    else
      level = corrected_level(nil, 0, limit, w, est)
    end
    -- While the ratio is unknown, what the opening did not give back stays
    -- withheld for the first ratio learned.
    local withheld = 0
    if current and not current.known then
      local total
      if current.opening then total = released(current, limit, w) else total = current.level + current.withheld end
      withheld = math.max(total - level, 0)
    end
    -- Limits learned from this count: it speaks for the server's bucket as
    -- of now, and the wait for it explains no one's use.
    local sync = nil
    if est then
      local at = seen.reserved_at
      if not current then at = seen.reserved_at + idiv(seen.elapsed, 1000) end
      sync = {at = at, residual = 0}
    end
    local anchor = nil
    if tokens and seen.calm then anchor = answer end
    -- A token limit learned from this answer comes with a count but no
    -- ratio: it is learned as an opening's is.
    local fresh = tokens and current == nil and est ~= nil
    if not continuous then anchor = nil end
    local known = (src.known and not fresh) or (est == nil and current ~= nil and current.opening)
      or not continuous
    -- A token limit learned from this count starts as an opening's bucket
    -- would after a full start: the rest of a full bucket is withheld for
    -- the first ratio learned (the estimate charged the requests in flight
    -- as if counted now, after the round trip's refill, at our count).
    if current == nil and not known then withheld = math.max(limit * w - level, 0) end
    st.b[i] = {limit = limit, level = level, foreign = 0, sync = sync, opening = false, withheld = withheld,
               ratio = src.ratio,
               known = known,
               -- Kept only where the ratio itself is.
               prov = src.prov == true and known == src.known,
               anchor = anchor}
    return remaining
  end
  local cap = limit * w
  local b = {
    limit = limit,
    level = clamp(current.level, -cap, cap),
    foreign = clamp_foreign(current.foreign, limit),
    sync = current.sync,
    opening = false,
    withheld = current.withheld,
    ratio = current.ratio,
    known = current.known,
    prov = current.prov,
    anchor = current.anchor,
  }
  st.b[i] = b
  if not remaining then return nil end
  -- The server's count against what we reserved since the last one teaches
  -- the charge ratio; the first ratio learned may give back the cautious charges.
  -- Only a count with its reset is a continuous bucket's (a gateway's
  -- calendar-minute counter is not): without one, no ratio is learned.
  local first = nil
  if tokens and seen.in_order and continuous then
    first = observe_ratio(b, answer, seen.calm, w)
  elseif tokens and seen.in_order and not b.known then
    b.known = true
    first = b.ratio
  end
  local later = cost(b, seen.later, tokens, w)
  local est = estimate_level_at_rate(remaining, later, limit, rate_of(limit, b.foreign), w, seen.elapsed)
  local server = est
  local lvl = b.level
  -- A burst misread: requests reserved after this one faster than the limit
  -- refills may be in its count already; only the part of a lowering that
  -- neither they nor a rate up to the limit since the sync point explain counts.
  local since = 0
  if b.sync then since = math.max(0, seen.reserved_at - b.sync.at) * 1000 end
  -- Inside a burst, only the time since the sync point explains.
  local floor = idiv(tau(w), 100)
  if seen.in_burst then floor = 0 end
  local explained = limit * math.max(since, floor)
  local burst = later * w - limit * seen.elapsed
  local misread = clamp(lvl - est - explained, 0, math.max(burst, 0))
  -- (Not inside a burst, whose answers settle nothing before its end.)
  if not seen.in_burst and misread < tdiv(cap, MISREAD_FRACTION) then misread = 0 end
  est = est + misread
  local divergence = lvl - est
  -- A nearly full server bucket wastes refill that our level does not:
  -- nobody contests it, and others' use hardly shows in it.
  local uncontested = est + later * w >= cap - idiv(cap, UNCONTESTED_FRACTION)
  local learned, learned_foreign, learned_residual = false, b.foreign, 0
  local prev = b.sync
  if prev and seen.in_order and seen.reserved_at >= prev.at and not uncontested and first == nil then
    learned = true
    learned_foreign, learned_residual = learn_foreign(
      b.foreign, limit, w, divergence, prev.residual, (seen.reserved_at - prev.at) * 1000)
  end
  -- Others sharing the limit take their part of what the server has free:
  -- claim ours, at the rate two in-order corrections in a row agree on.
  local claim = est
  if learned then
    local confirmed = math.min(learned_foreign, b.foreign)
    local unsure = 0
    -- Reserved at one instant (a burst), requests are in no order: only what
    -- the limit's pace could have reserved in between may be uncounted.
    if confirmed > 0 then unsure = math.min(cost(b, seen.between, tokens, w) * w, limit * seen.between_ns + w) end
    claim = own_share(est - unsure, rate_of(limit, confirmed), limit)
  end
  local level = corrected_level(lvl, limit, limit, w, claim)
  local withheld = b.withheld
  -- Lowered, not lost: what a correction takes is withheld, and a calm answer
  -- (an exact count) that shows more room than the level holds gives it
  -- back, less a margin, while no one else is seen on the key.
  if first == nil and b.known then
    if level < lvl then
      withheld = withheld + (lvl - level)
    elseif seen.calm and withheld > 0 and b.foreign == 0 and learned_foreign == 0 then
      local margin = tdiv(cap, RAISE_MARGIN_FRACTION)
      local paced = math.min(cost(b, seen.between, tokens, w) * w, limit * seen.between_ns + w)
      local target = math.min(claim, est - paced) - margin
      if target - lvl >= w then
        local raise = math.min(target - lvl, withheld)
        level = lvl + raise
        withheld = withheld - raise
      end
    end
  end
  if first then
    -- What the cautious charges took beyond the server's own count comes
    -- back, within what they withheld and what the ratio learned says was
    -- overcharged; of a server drained faster than the ratio says, only
    -- the ratio's share.
    local share = own_share(server, math.min(b.ratio, first), math.max(first, 1))
    local overcharged = math.max(seen.reserved - charged(seen.reserved, b.ratio), 0)
    local most = lvl + withheld + overcharged * w
    level = math.max(level, math.min(share, most, cap))
    withheld = 0
  end
  local moved = level - lvl
  local sync
  if learned then
    sync = {at = seen.reserved_at, residual = math.min(learned_residual + moved, 0)}
  elseif prev and (not seen.in_order or seen.reserved_at < prev.at) then
    -- A late response: the sync point stays, shifted with the level.
    sync = {at = prev.at, residual = math.min(prev.residual + moved, 0)}
  elseif first then
    -- The first ratio learned gave back what the caution withheld: the lane
    -- spends it at once, a burst; requests reserved with it teach nothing.
    -- What it left of the server's count is others' to take (as a claim
    -- leaves it): their taking it is evidence of their rate.
    sync = {at = seen.reserved_at + idiv(seen.elapsed, 1000) + CALM_SPACING_NS / 1000,
      residual = math.min(level - est, 0)}
  else
    -- The first sync point, or an uncontested bucket: start afresh.
    sync = {at = seen.reserved_at, residual = 0}
  end
  b.level = level
  b.foreign = learned_foreign
  b.sync = sync
  b.withheld = withheld
  trim_withheld(b, w)
  return remaining
end

-- ARGV[9..11] grant at (us), requests_total, tokens_total;
-- ARGV[12..16] requests observation: present (0/1), window ('m'/'d'), limit, remaining, reset_us;
-- ARGV[17..21] tokens observation, same layout. Absent numbers are -1 (a limit of 0 too).
local function correct(st, now)
  local grant = {at = num(ARGV[9]), rt = num(ARGV[10]), tt = num(ARGV[11])}
  local elapsed = math.max(0, now - grant.at) * 1000
  local previous = st.newest
  local in_order = not (previous and not is_newer(grant, previous))
  local reference = grant
  if not in_order then reference = previous end
  -- Reserved between the previous newest answered request and this one: the
  -- server may not have counted them yet.
  local between = {0, 0}
  local between_ns = 0
  if in_order and previous then
    between_ns = math.max(0, grant.at - previous.at) * 1000
    local span = math.max(0, grant.rt - previous.rt)
    local count = math.max(0, span - 1)
    local tokens = math.max(0, grant.tt - previous.tt)
    between = {count, idiv(tokens * count, math.max(span, 1))}
  end
  local totals = {st.rt, st.tt}
  local refs = {reference.rt, reference.tt}
  -- Calm: reserved apart from its neighbours, so its count is exact.
  local function spaced(from, to, requests)
    return math.max(0, to - from) * 1000 >= CALM_SPACING_NS * requests
  end
  local calm = in_order
    and grant.at >= st.bu
    and (previous == nil or spaced(previous.at, grant.at, math.max(0, grant.rt - previous.rt)))
    and spaced(grant.at, now, math.max(0, st.rt - grant.rt))
  -- Every count this answer carried reports room (nil: no evidence).
  local room = nil
  for u = 1, 2 do
    local o = 12 + (u - 1) * 5
    if ARGV[o] == '1' then
      local i = u
      if ARGV[o + 1] == 'd' then i = i + 2 end
      local reset = num(ARGV[o + 4])
      if reset >= 0 then reset = reset * 1000 end
      local obs = {limit = num(ARGV[o + 2]), remaining = num(ARGV[o + 3]), reset = reset}
      local remaining = correct_axis(st, i, obs, {
        reserved_at = grant.at,
        tt = grant.tt,
        reserved = totals[u],
        calm = calm,
        later = math.max(0, totals[u] - refs[u]),
        between = between[u],
        between_ns = between_ns,
        elapsed = elapsed,
        in_order = in_order,
        in_burst = grant.at < st.bu,
      })
      if remaining then
        room = (room == nil or room) and remaining >= 1
      end
    end
  end
  -- The first answer ends the opening: axes without a count get their
  -- configured bucket.
  for i = 1, 4 do
    local b = st.b[i]
    if b and b.opening then
      b.level = released(b, b.limit, W[i])
      b.opening = false
      b.withheld = 0
      -- No count to learn a ratio from: charge as counted.
      b.known = true
    end
  end
  -- The newest word from the server says it has room: a pause has done its job.
  if in_order and room then st.p = math.min(st.p, now) end
  -- An answer without numbers says nothing about what the server handled.
  local informative = false
  for u = 1, 2 do
    local o = 12 + (u - 1) * 5
    if ARGV[o] == '1' and (num(ARGV[o + 2]) > 0 or num(ARGV[o + 3]) >= 0 or num(ARGV[o + 4]) >= 0) then
      informative = true
    end
  end
  if in_order and informative then st.newest = grant end
  return state_reply(st)
end

-- Dispatch --------------------------------------------------------------------

local op = ARGV[1]
local now = now_us()
local st = load(now)
if st.err then return st end
now = advance(st, now)

local reply
if op == 'acquire' then
  reply = acquire(st, now)
elseif op == 'adjust' then
  reply = adjust(st)
elseif op == 'correct' then
  reply = correct(st, now)
elseif op == 'pause' then
  reply = pause(st, now)
elseif op == 'limits' then
  reply = set_limits(st)
elseif op == 'state' then
  -- A read changes nothing: refilling is the same whether saved now or later.
  return state_reply(st)
else
  return redis.error_reply('turbo-ratelimit: unknown operation ' .. tostring(op))
end
save(st)
return reply
