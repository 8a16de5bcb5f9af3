-- Shared by the scenario scripts of bench/peer.sh (loaded with dofile by each).
-- Environment: PEER_BENCH_DATA, the Lua data file written by seed.py (the lists
-- `offerings` and `tokens`); PEER_BENCH_RUN, a word unique to this wrk run.
-- Gives each wrk thread a number and its own random sequence, and prints one
-- line `PEER_BENCH_RESULT {json}` at the end with what the summariser needs.
dofile(assert(os.getenv("PEER_BENCH_DATA"), "PEER_BENCH_DATA is not set"))

run_word = os.getenv("PEER_BENCH_RUN") or tostring(os.time())

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

function init(args)
  sent = 0
  math.randomseed(os.time() * 97 + (thread_no or 0) * 7919)
  -- LuaJIT's first draws after seeding are poorly spread: throw a few away.
  for _ = 1, 8 do math.random() end
end

function any_offering()
  return offerings[math.random(#offerings)]
end

function bearer()
  return "Bearer " .. tokens[math.random(#tokens)]
end

function get(path)
  sent = sent + 1
  return wrk.format("GET", path, { ["Authorization"] = bearer() })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'PEER_BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
