-- wrk script: POST one prebuilt body (by default a Prometheus remote-write
-- one), again and again, and print the run's figures as one JSON line when
-- it is done.
--
-- The body and the token come from the environment (BENCH_BODY is a file
-- path, BENCH_TOKEN the bearer token) so that the request is formatted
-- once, by wrk's own init: a script without request() or response()
-- functions keeps wrk on its fastest path, and the load generator, which
-- shares the CPUs with the servers, costs as little as it can.
--
-- BENCH_HEADERS, if set, replaces the remote-write headers below: one
-- "Name: value" a line (bench/load.py sets it; a seal push sends only
-- Content-Encoding: snappy and Accept: */*).  The bearer token is sent
-- either way; wrk adds Host and Content-Length itself.

local function read_file(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

wrk.method = "POST"
wrk.body = read_file(assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set"))
local headers = os.getenv("BENCH_HEADERS")
if headers == nil then
   wrk.headers["Content-Type"] = "application/x-protobuf"
   wrk.headers["Content-Encoding"] = "snappy"
   wrk.headers["X-Prometheus-Remote-Write-Version"] = "0.1.0"
   wrk.headers["User-Agent"] = "sealgw-bench"
else
   for line in headers:gmatch("[^\n]+") do
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      wrk.headers[assert(name, "BENCH_HEADERS: not a header line: " .. line)] = value
   end
end
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN is not set")

-- Latencies are in microseconds.  errors.status counts answers >= 400.
-- "quantiles" is the latency at every 0.1 percent, 0 to 100, so that runs
-- done in several rounds can be merged into one distribution.
function done(summary, latency, requests)
   local e = summary.errors
   local quantiles = { latency.min }
   for i = 1, 999 do
      quantiles[#quantiles + 1] = latency:percentile(i / 10)
   end
   quantiles[#quantiles + 1] = latency.max
   io.write(string.format(
      'BENCH-RESULT {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "p50": %d, "p99": %d, "quantiles": [%s]}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(99),
      table.concat(quantiles, ",")))
end
