-- wrk script: replay requests that bench.py prepared, count the answers by status, report JSON.
--
-- wrk -s replay.lua URL -- DIR MODE THREADS
--   DIR/<n>.req   thread n's requests: complete raw HTTP requests separated by NUL bytes.
--   MODE cycle    send them round and round until wrk's duration is over.
--   MODE once     send each exactly once (single-use captcha solutions); when every thread has
--                 its last answer, end the run at once (SIGINT to wrk) rather than at -d.
--   THREADS       wrk's -t, so that the last thread to finish knows it is the last.
-- At the end it prints one line: BENCH-JSON {...}. Times come from CLOCK_MONOTONIC (LuaJIT ffi),
-- so a run that ends early still has an exact duration: first request sent to last answer.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
int kill(int pid, int sig);
int getpid(void);
]]

local CLOCK_MONOTONIC = 1
local SIGINT = 2
local FOREVER_MS = 3600000
local clock = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

-- The main Lua state: every thread, and one "finished" flag per thread in memory they share.
local threads = {}
local finished_flags = nil

function setup(thread)
  if finished_flags == nil then
    finished_flags = ffi.new("int[256]")
  end
  table.insert(threads, thread)
  thread:set("id", #threads)
  thread:set("flags_address", tonumber(ffi.cast("intptr_t", finished_flags)))
end

-- Each thread's Lua state.
function init(args)
  mode = args[2]
  nthreads = tonumber(args[3])
  flags = ffi.cast("volatile int *", flags_address)
  local file = assert(io.open(args[1] .. "/" .. id .. ".req", "rb"))
  local data = file:read("*a")
  file:close()
  reqs = {}
  for raw in string.gmatch(data, "[^%z]+") do
    reqs[#reqs + 1] = raw
  end
  count = #reqs
  assert(count > 0, "no requests for thread " .. id)
  nextreq, reserved, sent, got, overflow = 1, 0, 0, 0, 0
  first, last = 0, 0
  statuses = {}
  -- wrk calls request() once on thread 1 before the run, to check the request parses.
  verified = id ~= 1
  if mode == "once" then
    -- Called before each request on a connection: hold the connection once all are reserved.
    delay = function()
      if reserved < count then
        reserved = reserved + 1
        return 0
      end
      return FOREVER_MS
    end
  end
end

function request()
  if not verified then
    verified = true
    return reqs[1]
  end
  if first == 0 then
    first = now()
  end
  sent = sent + 1
  if mode == "once" then
    if sent > count then
      overflow = overflow + 1 -- only after a failed connection resent: never a new solution
      return reqs[count]
    end
    return reqs[sent]
  end
  local raw = reqs[nextreq]
  nextreq = nextreq % count + 1
  return raw
end

function response(status, headers, body)
  got = got + 1
  statuses[status] = (statuses[status] or 0) + 1
  last = now()
  if mode == "once" and got == count then
    flags[id - 1] = 1
    local all = true
    for i = 0, nthreads - 1 do
      if flags[i] == 0 then
        all = false
        break
      end
    end
    if all then
      ffi.C.kill(ffi.C.getpid(), SIGINT) -- wakes wrk's main thread from its sleep(duration)
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local by_status = {}
  local started, ended, answers, sent_total, overflows = math.huge, 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + n
    end
    local f, l = thread:get("first"), thread:get("last")
    if f > 0 and f < started then
      started = f
    end
    if l > ended then
      ended = l
    end
    answers = answers + thread:get("got")
    sent_total = sent_total + thread:get("sent")
    overflows = overflows + thread:get("overflow")
  end
  if started == math.huge then
    started = 0
  end
  local parts = {}
  for status, n in pairs(by_status) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %d, "duration_us": %d, "answers": %d, "sent": %d, "overflow": %d, '
      .. '"first": %.6f, "last": %.6f, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"statuses": {%s}}\n',
    summary.requests, summary.duration, answers, sent_total, overflows, started, ended,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", ")))
end
