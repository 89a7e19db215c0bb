-- wrk script for bench/bench_governor.py: replays pre-signed governor requests.
--
-- Every request to /v1/authorize carries an RFC 9421 signature with its own nonce, and
-- the governor rejects a nonce it has seen (401). So each pre-signed request may be sent
-- once: this script gives every wrk thread a disjoint slice of the request file and
-- walks through it without wrapping. A thread that runs out stops itself (and reports
-- it) rather than resend a request.
--
-- Usage (the bench runs this for you):
--   wrk -t2 -c32 -d10s -s bench/wrk_signed.lua http://127.0.0.1:PORT -- requests.tsv 2
-- (the last argument must equal -t: the number of wrk threads)
--
-- The request file has one request per line, fields separated by TAB:
--   METHOD  PATH  BODY  Header-Name: value  Header-Name: value ...
-- (bodies are compact JSON, which contains no TAB or newline).
--
-- At the end one line starting with "WRK_JSON " is printed: a JSON object with the
-- request count, duration, errors, latency percentiles and how many pre-signed
-- requests each thread used.

local threads = {}
local counter = 0

-- wrk calls setup(thread) and then that thread's init() before it sets up the next
-- thread, so the thread count cannot be learnt here: it is the second script argument.
function setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests = {}
-- Globals (not locals) so that done() can read them with thread:get().
presigned = 0
used = 0
exhausted = 0
local next_index = 1

local function split(line, sep)
  local out = {}
  local start = 1
  while true do
    local i = string.find(line, sep, start, true)
    if i == nil then
      table.insert(out, string.sub(line, start))
      return out
    end
    table.insert(out, string.sub(line, start, i - 1))
    start = i + 1
  end
end

function init(args)
  local path = args[1]
  thread_count = tonumber(args[2])
  if path == nil or thread_count == nil then
    error("usage: wrk -tT ... -s wrk_signed.lua URL -- REQUEST_FILE T")
  end
  local f = assert(io.open(path, "r"))
  local line_no = 0
  for line in f:lines() do
    -- Thread k takes lines k, k+T, k+2T, ... (0-based): no request goes to two threads.
    if line_no % thread_count == thread_index and #line > 0 then
      local fields = split(line, "\t")
      local headers = {}
      for i = 4, #fields do
        local name, value = string.match(fields[i], "^([^:]+): (.*)$")
        headers[name] = value
      end
      presigned = presigned + 1
      requests[presigned] = wrk.format(fields[1], fields[2], headers, fields[3])
    end
    line_no = line_no + 1
  end
  f:close()
  if presigned == 0 then
    error("no requests for thread " .. thread_index)
  end
end

function request()
  if next_index > presigned then
    -- Out of pre-signed requests: never resend one (it would be a replay, 401). Stop
    -- the thread; wrk still wants a request from this call, so give it an unsigned
    -- GET /healthz, which touches no nonce. The bench reports the run as exhausted.
    exhausted = 1
    wrk.thread:stop()
    return wrk.format("GET", "/healthz", {}, nil)
  end
  local r = requests[next_index]
  next_index = next_index + 1
  used = used + 1
  return r
end

function done(summary, latency, requests_stats)
  local used_total = 0
  local exhausted_threads = 0
  local available = 0
  for _, t in ipairs(threads) do
    used_total = used_total + t:get("used")
    exhausted_threads = exhausted_threads + t:get("exhausted")
    available = available + t:get("presigned")
  end
  local e = summary.errors
  local out = string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"min": %d, "mean": %.1f, '
      .. '"stdev": %.1f, "max": %d, "p50": %d, "p75": %d, "p90": %d, "p99": %d, "p999": %d}, '
      .. '"presigned_sent": %d, "presigned_available": %d, "threads_exhausted": %d}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    used_total, available, exhausted_threads
  )
  io.write("WRK_JSON " .. out .. "\n")
end
