-- wrk script: post.lua's requests, every answer counted by status, the
-- counts printed as one more JSON line when the run is done; with
-- BENCH_DELAY_MS, each connection waits that long before each request
-- (as paced.lua does), which caps the rate it offers.
--
-- bench/isolation.py needs to know how a flooding tenant was answered
-- (2xx, 400, 429), which wrk's own summary lumps together as errors.  A
-- response() callback takes wrk off its fastest path, so the push
-- benchmarks keep post.lua alone.
dofile(assert(os.getenv("BENCH_POST_LUA"), "BENCH_POST_LUA is not set"))

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   -- A global of the thread's own Lua state, read by done() through
   -- thread:get once the thread has stopped.
   statuses = {}
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

if pause > 0 then
   function delay()
      return pause
   end
end

local post_done = done

function done(summary, latency, requests)
   post_done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses") or {}) do
         total[status] = (total[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(total) do
      parts[#parts + 1] = string.format('"%d": %d', status, n)
   end
   io.write('BENCH-STATUSES {' .. table.concat(parts, ", ") .. '}\n')
end
