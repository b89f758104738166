"""
Measure label enforcement of PromQL (upstreams with C{tenancy: {label}}):
what a query costs parsed inline, through a parser process, and from the
cache, and what the costliest queries the default bounds admit cost.

    .venv/bin/python bench/promql.py [--rounds 200]

Figures are the best of C{--rounds} (the floor the machine allows), in
microseconds or milliseconds; "reactor" is the calling thread's CPU time
for one query through the pool (the frame written, the answer read and
decoded), "wall" what the query waits.  See docs/query.rst.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twisted.internet import defer, reactor, task  # noqa: E402

from sealgw.query._enforcer import INLINE_BYTES, INLINE_NESTING, LabelEnforcer  # noqa: E402
from sealgw.query._pool import InlineParser, ParserPool  # noqa: E402
from sealgw.tenancy import DEFAULT_BOUNDS, TenantLabel, enforce_query  # noqa: E402

TENANT = TenantLabel.parse("tenant", "team-a")

#: Queries as dashboards send them (node exporter, API latency, Grafana
#: variables expanded).
DASHBOARD = {
    "plain": 'sum by (job) (rate(http_requests_total{job="api", code="500"}[5m]))',
    "regex": 'sum by (instance) (rate(node_cpu_seconds_total{mode!="idle", instance=~"host-1|host-2|host-3"}[5m]))',
    "quantile": 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job=~"api|web", handler=~"/api/.*"}[5m])))',
    "all_2000_hosts": 'up{instance=~"'
    + "|".join(f"host-{i:04d}\\\\.example\\\\.com" for i in range(2000))
    + '"}',
}

#: The costliest queries the default bounds admit, one per bound.
WORST = {
    "nesting_256": "+".join(["up"] * 257),
    "unicode_classes_64": "up{"
    + ",".join(f'l{i}=~"\\\\w"' for i in range(64))
    + "}",
    "repeat_w_64": 'up{a=~"\\\\w{64}"}',
    "dots_8192": 'up{a=~"' + ".{1000}" * 8 + '"}',
    "literals_256k": 'up{a=~"' + "a{1000}" * 100 + '"}',
    "optional_256k": 'up{a=~"' + "a{0,1000}" * 100 + '"}',
    "regex_matchers_100": "up{" + ",".join(f'l{i}=~".*x.*"' for i in range(100)) + "}",
}

#: The costliest queries parsed inline: no regex, at most INLINE_BYTES
#: and INLINE_NESTING.
INLINE_WORST = {
    "operators": "+".join(["up"] * (INLINE_NESTING + 1)),
    "selectors": " + ".join(
        f'm{i}{{a="b",c!="d",e="f"}}' for i in range(INLINE_NESTING + 1)
    )[:INLINE_BYTES].rsplit(" + ", 1)[0],
    "matchers": "up{" + ",".join(f'l{i}!="v"' for i in range(300))[: INLINE_BYTES - 4].rsplit(",", 1)[0] + "}",
    "calls": "abs(" * INLINE_NESTING + "up" + ")" * INLINE_NESTING,
}


def best(f: Callable[[], Any], rounds: int) -> float:
    low = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        f()
        low = min(low, time.perf_counter() - start)
    return low


async def through_pool(pool: ParserPool, query: str, rounds: int) -> tuple[float, float]:
    """
    The best wall time of one query through the pool, and the calling
    thread's CPU time for it.
    """
    wall = cpu = float("inf")
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.thread_time()
        await pool.enforce("query", query, TENANT, DEFAULT_BOUNDS)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.thread_time() - start_cpu)
    return wall, cpu


async def main(reactor: Any, rounds: int) -> None:
    pool = ParserPool(reactor)
    await pool.enforce("query", "up", TENANT, DEFAULT_BOUNDS)  # started
    cached = LabelEnforcer(InlineParser())
    print(f"{'query':22} {'inline':>10} {'pool wall':>10} {'reactor':>10} {'cached':>10}  (us)")
    for name, query in DASHBOARD.items():
        inline = best(lambda q=query: enforce_query(q, TENANT), rounds)
        wall, cpu = await through_pool(pool, query, rounds)
        cached.query(query, TENANT)
        hit = best(lambda q=query: cached.query(q, TENANT), rounds)
        print(
            f"{name:22} {inline * 1e6:10.0f} {wall * 1e6:10.0f} {cpu * 1e6:10.0f} {hit * 1e6:10.1f}"
            f"  ({len(query)} bytes)"
        )
    print("\ncostliest admitted, in the parser process (ms):")
    for name, query in WORST.items():
        wall, cpu = await through_pool(pool, query, max(3, rounds // 50))
        print(f"{name:22} {wall * 1e3:8.1f}   reactor {cpu * 1e6:6.0f} us  ({len(query)} bytes)")
    print("\ncostliest parsed inline, scan included, no cache (us):")
    uncached = LabelEnforcer(InlineParser(), cache_entries=1, cache_bytes=1)
    for name, query in INLINE_WORST.items():
        inline = best(lambda q=query: uncached.query(q, TENANT), rounds)
        print(f"{name:22} {inline * 1e6:8.0f}  ({len(query)} bytes)")
    await pool.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    options = parser.parse_args()
    task.react(lambda r: defer.ensureDeferred(main(r, options.rounds)))
    del reactor
