-- wrk script: post.lua's requests, each connection waiting BENCH_DELAY_MS
-- before its next one, so that a soak runs at a set fraction of the
-- maximum rate instead of flat out.
dofile(assert(os.getenv("BENCH_POST_LUA"), "BENCH_POST_LUA is not set"))

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

function delay()
   return pause
end
