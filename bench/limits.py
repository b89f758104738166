"""
What shared limits cost: the p50 of a push through sealgw with its limits
kept in a Redis next to the p50 through the same sealgw with local
limits, in the same run (interleaved rounds, one keep-alive connection
each, the nginx sink upstream); then the store's own costs for the two
designs of issue 22: one Lua script per decision (what sealgw does) and
local buckets settling with the store in batches.

    .venv/bin/python bench/limits.py [--pushes 2000] [--rounds 5]

Needs redis-server and nginx.  About a minute.  See docs/limits.rst.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import payloads, processes  # noqa: E402
from sealgw.config import RateLimitConfig  # noqa: E402
from sealgw.limits import LocalLimiter  # noqa: E402
from sealgw.limits._redis import DECIDE  # noqa: E402

TOKEN = "bench-limits-token-0123456789"
# High enough never to refuse, so that every push pays each limit's step.
LIMITS = "{requests_per_second: 1000000, bytes_per_second: 10GiB, max_concurrent: 1000}"

# The batch design's step: N buckets settle what this process took since
# the last settle, and read back the fleet's levels.
SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(v[1]) or 1000
  tokens = math.min(1000, tokens + (now - (tonumber(v[2]) or now)) * 100) - tonumber(ARGV[i])
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', key, 20000)
  levels[i] = tostring(tokens)
end
return levels
"""


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=2000,
                        help="pushes per target per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--samples", type=int, default=500,
                        help="samples per push (default 500)")
    parser.add_argument("--json", help="write the figures to this file too")
    return parser.parse_args(argv)


class RESP:
    """
    A bare synchronous Redis client, so that the store's own cost is
    measured without any client library's.
    """

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def call(self, *args: Any) -> Any:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> Any:
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")


def start_redis(workdir: Path, cleanup: ExitStack) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise processes.StartError("redis-server is not on PATH (apt-get install redis-server)")
    path = tempfile.mkdtemp(prefix="sealgw-bench-redis-") + "/redis.sock"
    server = processes.Server(
        "redis",
        [binary, "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        workdir / "redis.log",
    )
    cleanup.callback(server.stop)
    server.wait_until(lambda: os.path.exists(path))
    return path


def start_gateway(
    workdir: Path, cleanup: ExitStack, name: str, upstream: str, shared: Optional[str]
) -> str:
    port, admin = processes.free_port(), processes.free_port()
    tokens = workdir / f"{name}-tokens.yaml"
    tokens.write_text(
        f"- name: bench\n  token: {TOKEN}\n  tenants: [{processes.TENANT}]\n  limits: {LIMITS}\n"
    )
    config = processes.sealgw_config(port, admin, upstream, tokens)
    if shared is not None:
        config += f"  shared_limits: {{redis: 'unix://{shared}', timeout: 200ms}}\n"
    processes.run_sealgw(workdir, cleanup, name, config, admin)
    return f"127.0.0.1:{port}"


def pushes(address: str, body: bytes, count: int) -> list[float]:
    """
    C{count} pushes one after the other on one keep-alive connection:
    each one's seconds.
    """
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
    }
    times = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", "/api/v1/push", body, headers)
        response = connection.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
        if response.status != 204:
            raise RuntimeError(f"{address}: push answered {response.status}")
    connection.close()
    return times


def store_costs(path: str, count: int) -> dict[str, float]:
    """
    p50 in microseconds: the Lua decision (one round trip to the store),
    a settle of 100 buckets (the batch design, once per interval per
    process), and a local bucket decision.
    """
    redis = RESP(path)
    decide = redis.call("SCRIPT", "LOAD", DECIDE)
    settle = redis.call("SCRIPT", "LOAD", SETTLE)
    keys = [f"bench:{{k}}:{i}" for i in range(3)]
    args = ["1000000", "1000000", "1000000000", "1000000000", "1000", "1000", "lease", "30"]

    def p50(step: Any, n: int) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e6

    settle_keys = [f"bench:settle:{i}" for i in range(100)]
    local = LocalLimiter(_Clock())
    limits = RateLimitConfig(requests_per_second=1e6, bytes_per_second=10**10, max_concurrent=10**6)
    key = ("push", "token_file", "bench")
    return {
        "ping_us": p50(lambda: redis.call("PING"), count),
        "lua_decision_us": p50(lambda: redis.call("EVALSHA", decide, 3, *keys, *args), count),
        "settle_100_buckets_us": p50(
            lambda: redis.call("EVALSHA", settle, 100, *settle_keys, *(["1"] * 100)), count // 10
        ),
        "local_decision_us": p50(lambda: local.admit(key, limits, 1000), count),
    }


def client_costs(path: str, count: int) -> dict[str, float]:
    """
    p50 in microseconds of a decision the way sealgw takes it: through
    L{SharedLimiter} and txredisapi on the reactor, the release included,
    next to the same through L{LocalLimiter}.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from sealgw.config import SharedLimitsConfig, parse_redis_url
    from sealgw.limits import SharedLimiter
    from sealgw.limits._redis import RedisLimitStore

    results: dict[str, float] = {}
    limits = RateLimitConfig(requests_per_second=1e6, bytes_per_second=10**10, max_concurrent=1000)

    async def measure() -> None:
        store = RedisLimitStore(SharedLimitsConfig(redis=parse_redis_url(f"unix://{path}")))
        shared = SharedLimiter(store, LocalLimiter(reactor), reactor, 0.5)
        shared.startService()
        local = LocalLimiter(reactor)
        try:
            await store.ping()
            for name, limiter in (("shared_admit_us", shared), ("local_admit_us", local)):
                times = []
                for _ in range(count):
                    started = time.perf_counter()
                    slot = limiter.admit(("push", "token_file", "client"), limits, 1000)
                    if isinstance(slot, Deferred):
                        slot = await slot
                    slot.release()
                    times.append(time.perf_counter() - started)
                results[name] = statistics.median(times) * 1e6
        finally:
            await shared.stopService()
            reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(measure()))
    reactor.run(installSignalHandlers=False)
    return results


class _Clock:
    def seconds(self) -> float:
        return time.monotonic()


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    processes.check_twistd_plugin()
    with ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="sealgw-bench-limits-"))
        cleanup.callback(shutil.rmtree, workdir, True)
        redis = start_redis(workdir, cleanup)
        _, upstream = processes.start_sink(workdir, cleanup)
        local = start_gateway(workdir, cleanup, "local", upstream, None)
        shared = start_gateway(workdir, cleanup, "shared", upstream, redis)
        body = payloads.build(args.samples, int(time.time() * 1000)).SerializeToString()
        body = payloads.snappy.compress(body)
        pushes(local, body, 200)  # warm-up
        pushes(shared, body, 200)
        times: dict[str, list[float]] = {"local": [], "shared": []}
        targets = {"local": local, "shared": shared}
        for round_ in range(args.rounds):
            # Interleaved, each first in turn, so that both see the
            # machine as it is.
            for name in (["local", "shared"] if round_ % 2 == 0 else ["shared", "local"]):
                times[name] += pushes(targets[name], body, args.pushes)
        p50 = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        p99 = {name: statistics.quantiles(t, n=100)[98] * 1e3 for name, t in times.items()}
        store = store_costs(redis, 5000)
        store.update(client_costs(redis, 5000))
    figures = {
        "push_p50_ms": p50,
        "push_p99_ms": p99,
        "added_p50_ms": p50["shared"] - p50["local"],
        "store": store,
        "pushes": args.pushes * args.rounds,
        "samples": args.samples,
    }
    print(f"{args.pushes * args.rounds} pushes of {args.samples} samples per target, "
          "one at a time on one keep-alive connection:")
    print(f"  p50  local limits {p50['local']:.3f} ms   shared (Redis) {p50['shared']:.3f} ms"
          f"   added {figures['added_p50_ms']:.3f} ms")
    print(f"  p99  local limits {p99['local']:.3f} ms   shared (Redis) {p99['shared']:.3f} ms")
    print("The store's own cost (p50, a bare client on the unix socket):")
    print(f"  PING {store['ping_us']:.0f} us; a decision's Lua script "
          f"{store['lua_decision_us']:.0f} us; a settle of 100 buckets (batch design) "
          f"{store['settle_100_buckets_us']:.0f} us; a local bucket decision "
          f"{store['local_decision_us']:.1f} us")
    print("A decision as sealgw takes it (p50, on the reactor, release included):")
    print(f"  shared (SharedLimiter, txredisapi) {store['shared_admit_us']:.0f} us; "
          f"local (LocalLimiter) {store['local_admit_us']:.1f} us")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
