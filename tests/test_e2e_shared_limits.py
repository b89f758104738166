"""
Limits that hold for the fleet, as users run it: two gateway instances
(C{twistd sealgw}), one of them with two worker processes, share a real
C{redis-server}.  One identity pushed at five times its rate, over one
keep-alive connection per instance and over new connections, is admitted
within 10 % of rate x time + burst; Redis killed under load: no 5xx, each
process decides with its share and C{/health} says so; Redis back: the
shared limits return by themselves.
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any, Optional

import treq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource

from sealgw.signals import snappy_compress
from sealgw.signals.proto.remote_pb2 import WriteRequest
from tests.e2e_support import serve, wait_until
from tests.redis_support import start_redis
from tests.subprocesses import Child, free_port, stop, twistd

reactor: Any = _reactor

TOKEN = "shared-limits-token-0123456789"
RATE = 20
BURST = 20


class _Accept(Resource):
    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        request.setResponseCode(204)
        return b""


def _body() -> bytes:
    req = WriteRequest()
    series = req.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.samples.add(value=1.0, timestamp=1_700_000_000_000)
    return snappy_compress(req.SerializeToString())


BODY = _body()
HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
}


async def _health(url: str) -> dict[str, Any]:
    response = await treq.get(url + "/health", persistent=False, timeout=5)
    limits: dict[str, Any] = json.loads(await response.content())["components"]["limits"]
    return limits


async def _metrics(url: str) -> str:
    response = await treq.get(url + "/metrics", persistent=False, timeout=5)
    return (await response.content()).decode()


async def _fallbacks(url: str) -> float:
    """
    The decisions the instance's processes took alone so far.
    """
    total = 0.0
    for line in (await _metrics(url)).splitlines():
        if line.startswith("sealgw_limits_fallbacks_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class _Load(TestCase):
    """
    Pushes at a rate, and the check of what was admitted.
    """

    timeout = 180

    def start(self, redis_url: str, upstream: str, workers: int) -> tuple[str, Child]:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "tokens.yaml"), "w") as f:
            f.write(
                f"- name: node-1\n  token: {TOKEN}\n  tenants: [team-a]\n"
                f"  limits: {{requests_per_second: {RATE}, burst: {BURST}}}\n"
            )
        port = free_port()
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""
                listeners:
                  - endpoint: tcp:{port}:interface=127.0.0.1
                    ops: true
                upstreams:
                  prom: {{url: "{upstream}"}}
                push:
                  remote_write: {{upstream: prom, path: /api/v1/write}}
                auth:
                  token_file: {{path: {directory}/tokens.yaml}}
                  shared_limits:
                    redis: "{redis_url}"
                    key_prefix: fleet-test
                    # Generous: a busy test machine must not make it fall back.
                    timeout: 1s
                log: {{format: json, access: false}}
                drain_grace: 1s
                workers: {workers}
                """))
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        return f"http://127.0.0.1:{port}", child

    async def load(
        self, urls: list[str], pools: list[HTTPConnectionPool], seconds: float, per_second: int
    ) -> tuple[list[int], float]:
        """
        C{per_second} pushes a second for C{seconds}, to each instance in
        turn, every other one on the instance's keep-alive connection and
        the rest on a new connection each; the statuses, and the seconds
        from the first push to the last.
        """
        statuses: list[int] = []
        pending: list[Deferred[Any]] = []
        sent = 0
        first = reactor.seconds()

        async def push(index: int) -> None:
            url = urls[index % len(urls)]
            pool = pools[index % len(urls)] if (index // len(urls)) % 2 == 0 else None
            try:
                response = await treq.post(
                    url + "/api/v1/write", data=BODY, headers=HEADERS, timeout=10,
                    pool=pool, persistent=pool is not None,
                )
                await response.content()
                statuses.append(response.code)
            except Exception:  # a failed exchange is an outcome to report
                statuses.append(-1)

        def tick(due: int) -> None:
            # A busy reactor calls late: send every push that is due, so
            # that the offered rate holds.
            nonlocal sent
            for _ in range(due):
                pending.append(Deferred.fromCoroutine(push(sent)))
                sent += 1
            if reactor.seconds() - first >= seconds:
                loop.stop()

        loop = LoopingCall.withCount(tick)
        loop.clock = reactor
        await loop.start(1.0 / per_second)
        last = reactor.seconds()
        await DeferredList(pending)
        return statuses, last - first

    def assertWithinLimit(
        self,
        statuses: list[int],
        elapsed: float,
        rate: float = RATE,
        burst: float = BURST,
        why: str = "",
    ) -> None:
        admitted = statuses.count(204)
        expected = rate * elapsed + burst
        self.assertEqual(
            sorted(set(statuses) - {204, 429}), [], f"only 204 and 429 expected: {statuses}"
        )
        # Offered well over the limit, else the test shows nothing.
        self.assertGreater(len(statuses), 2 * expected)
        self.assertLessEqual(
            abs(admitted - expected), 0.1 * expected,
            f"{admitted} admitted in {elapsed:.2f} s, the limit allows {expected:.0f}; {why}",
        )



class SharedLimitsFleetTests(_Load):
    async def test_fleet(self) -> None:
        redis = await start_redis(self)
        upstream = serve(self, _Accept())
        one, one_child = self.start(redis.url, upstream.url, workers=1)
        two, two_child = self.start(redis.url, upstream.url, workers=2)
        urls = [one, two]
        for url in urls:
            await wait_until(
                lambda url=url: _health(url), what=f"{url} to answer", timeout=60
            )
        pools = []
        for _ in urls:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = 1
            self.addCleanup(pool.closeCachedConnections)
            pools.append(pool)

        # Every process connects to Redis on its first decisions; a busy
        # machine can make those fall back for a second.  Warm up, then
        # let the buckets fill again.
        await self.load(urls, pools, seconds=1, per_second=20)
        await deferLater(reactor, 2, lambda: None)
        before = [await _fallbacks(url) for url in urls]
        statuses, elapsed = await self.load(urls, pools, seconds=4, per_second=100)
        self.assertWithinLimit(
            statuses, elapsed, why=f"fallbacks {before} -> {[await _fallbacks(u) for u in urls]}"
        )

        # Redis killed under load: no 5xx, each process decides alone.
        kill = reactor.callLater(0.5, lambda: Deferred.fromCoroutine(redis.kill()))
        statuses, elapsed = await self.load(urls, pools, seconds=2, per_second=100)
        self.assertFalse(kill.active())
        self.assertEqual(sorted(set(statuses) - {204, 429}), [], statuses)
        self.assertIn(204, statuses)
        health = await _health(one)
        self.assertEqual((health["status"], health["mode"]), ("degraded", "local"))
        self.assertIn("sealgw_limits_shared 0.0", await _metrics(two))
        self.assertIn('sealgw_limits_fallbacks_total{cause="degraded"}', await _metrics(two))

        await redis.start()

        async def shared_everywhere() -> Optional[bool]:
            # Each worker probes on its own; the gauge is the lowest of
            # the workers'.
            for url in urls:
                if "sealgw_limits_shared 1.0" not in await _metrics(url):
                    return None
            return True

        await wait_until(shared_everywhere, what="shared limits to return", timeout=30)
        # Shared again: the fleet holds the limit once more.  Whether the
        # burst is there to spend depends on when each process's first
        # decision reached the new Redis and on what the local buckets
        # spent meanwhile, so it is allowed but not required here (the
        # first measurement above holds the burst to the figure).
        before = [await _fallbacks(url) for url in urls]
        statuses, elapsed = await self.load(urls, pools, seconds=3, per_second=100)
        why = f"fallbacks {before} -> {[await _fallbacks(u) for u in urls]}"
        admitted = statuses.count(204)
        self.assertEqual(sorted(set(statuses) - {204, 429}), [], statuses)
        self.assertLessEqual(admitted, 1.1 * (RATE * elapsed + BURST), why)
        self.assertGreaterEqual(admitted, 0.9 * RATE * elapsed, why)
        for child in (one_child, two_child):
            self.assertNotIn(b"Traceback", child.out + child.err)
            self.assertNotIn(TOKEN.encode(), child.out + child.err)


class _Held(Resource):
    """
    Answers 204 to every push but those it is told to hold.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.arrived: Deferred[None] = Deferred()
        self.release: Deferred[None] = Deferred()

    def render_POST(self, request: Any) -> Any:
        if not self.hold:
            request.setResponseCode(204)
            return b""
        self.hold = False
        self.arrived.callback(None)

        def answer(_: object) -> None:
            request.setResponseCode(204)
            request.finish()

        self.release.addCallback(answer)
        from twisted.web.server import NOT_DONE_YET

        return NOT_DONE_YET


class MainProcessLeasesTests(_Load):
    """
    Without Redis, on one host with two workers: the main process owns the
    limits, so one keep-alive connection (one worker) gets the whole rate,
    and C{max_concurrent: 1} stays 1 whichever worker a connection reaches.
    """

    def start_workers(self, upstream: str, limits: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "tokens.yaml"), "w") as f:
            f.write(
                f"- name: node-1\n  token: {TOKEN}\n  tenants: [team-a]\n  limits: {limits}\n"
            )
        port = free_port()
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""
                listeners:
                  - endpoint: tcp:{port}:interface=127.0.0.1
                    ops: true
                upstreams:
                  prom: {{url: "{upstream}"}}
                push:
                  remote_write: {{upstream: prom, path: /api/v1/write}}
                auth:
                  token_file: {{path: {directory}/tokens.yaml}}
                log: {{format: json, access: false}}
                drain_grace: 1s
                workers: 2
                """))
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        self.child = child
        return f"http://127.0.0.1:{port}"

    async def test_one_connection_whole_limit(self) -> None:
        upstream = serve(self, _Accept())
        # A rate that pushes one at a time exceed several times over, even
        # on a busy machine.
        url = self.start_workers(upstream.url, "{requests_per_second: 5, burst: 5}")
        await wait_until(lambda: _health(url), what=f"{url} to answer", timeout=60)
        health = await _health(url)
        self.assertEqual(health["store"], "the main process")
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        self.addCleanup(pool.closeCachedConnections)
        # One push after the other on one keep-alive connection: one
        # worker serves them all, and would admit half without the main
        # process's limits.
        statuses: list[int] = []
        first = reactor.seconds()
        while reactor.seconds() - first < 4:
            response = await treq.post(
                url + "/api/v1/write", data=BODY, headers=HEADERS, pool=pool, timeout=10
            )
            await response.content()
            statuses.append(response.code)
        self.assertWithinLimit(statuses, reactor.seconds() - first, rate=5, burst=5)

    async def test_one_in_flight_stays_one(self) -> None:
        upstream = _Held()
        server = serve(self, upstream)
        url = self.start_workers(server.url, "{max_concurrent: 1}")
        await wait_until(lambda: _health(url), what=f"{url} to answer", timeout=60)
        upstream.hold = True
        held = treq.post(url + "/api/v1/write", data=BODY, headers=HEADERS, persistent=False)
        await upstream.arrived
        # New connections, spread over both workers: each is refused.
        codes = []
        for _ in range(20):
            response = await treq.post(
                url + "/api/v1/write", data=BODY, headers=HEADERS, persistent=False
            )
            codes.append(response.code)
            self.assertIn(b"in flight", await response.content())
        self.assertEqual(set(codes), {429})
        upstream.release.callback(None)
        self.assertEqual((await held).code, 204)
        response = await treq.post(
            url + "/api/v1/write", data=BODY, headers=HEADERS, persistent=False
        )
        await response.content()
        self.assertEqual(response.code, 204)
