"""
The client library over real sockets: the pusher through a real sealgw
into a real Prometheus, the Loki handler through sealgw to a recording
upstream, both through outages of the upstream and of the gateway, and an
application without a reactor (crochet) whose logging never waits, even
while the reactor thread is stuck.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import textwrap
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from sealgw.client import Backoff, LokiHandler, MetricsPusher
from sealgw.signals import snappy_decompress
from sealgw.signals.proto import remote_pb2
from tests.e2e_support import (
    TEST_TIMEOUT,
    Gateway,
    ScriptedUpstream,
    TrackingSite,
    answer,
    free_port,
    http_client,
    prometheus_query,
    reactor,
    require_prometheus,
    serve,
    start_gateway,
    start_prometheus,
    wait_for_series,
    wait_until,
    with_timeout,
)
from tests.subprocesses import ROOT, Child, child_env
from tests.test_client_fakes import Seen

TOKENS: list[dict[str, Any]] = [
    {"name": "app-1", "token": "tok-app", "tenants": ["team-a", "team-b"]},
    {"name": "solo", "token": "tok-solo"},
]
FAST = Backoff(initial=0.1, maximum=0.4)
GATEWAY_RETRY = {"attempts": 1}


def only(result: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(result) == 1, f"expected one series, got {result}"
    return result[0]


def value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


class PusherPrometheusTests(TestCase):
    """
    The pusher, as remote write and in seal format, through sealgw into
    Prometheus: what was in the registry is what Prometheus answers.
    """

    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        require_prometheus()
        self.http = http_client(self)
        self.prometheus = await start_prometheus(
            self, {"global": {"scrape_interval": "15s"}, "scrape_configs": []}, receiver=True
        )
        route = {"upstream": "prometheus", "path": "/api/v1/write"}
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {"prometheus": {"url": self.prometheus.url}},
                "push": {"remote_write": dict(route), "seal": dict(route)},
            },
            TOKENS,
        )
        self.registry = CollectorRegistry()
        Counter("e2e_jobs", "jobs", ["kind"], registry=self.registry).labels("batch").inc(7)
        Gauge("e2e_temp", "temperature", registry=self.registry).set(21.5)
        h = Histogram("e2e_latency", "latency", buckets=(0.1, 1.0), registry=self.registry)
        for v in (0.05, 0.5, 3.0):
            h.observe(v)
        Summary("e2e_size", "size", registry=self.registry).observe(10)

    def pusher(self, **kwargs: Any) -> MetricsPusher:
        pusher = MetricsPusher(
            self.gateway.url,
            token="tok-app",
            tenant="team-b",
            registry=self.registry,
            interval=0.5,
            labels={"job": "e2e"},
            backoff=FAST,
            report_to=io.StringIO(),
            **kwargs,
        )
        pusher.startService()
        self.addCleanup(pusher.stopService)
        return pusher

    async def check_prometheus(self, extra: dict[str, str]) -> None:
        total = only(await wait_for_series(self.http, self.prometheus, "e2e_jobs_total"))
        self.assertEqual(total["metric"], {"__name__": "e2e_jobs_total", "kind": "batch", **extra})
        self.assertEqual(value(total), 7.0)
        temp = only(await prometheus_query(self.http, self.prometheus, "e2e_temp"))
        self.assertEqual(value(temp), 21.5)
        buckets = await prometheus_query(self.http, self.prometheus, "e2e_latency_bucket")
        self.assertEqual(
            {b["metric"]["le"]: value(b) for b in buckets}, {"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}
        )
        count = only(await prometheus_query(self.http, self.prometheus, "e2e_latency_count"))
        self.assertEqual(value(count), 3.0)
        size = only(await prometheus_query(self.http, self.prometheus, "e2e_size_sum"))
        self.assertEqual(value(size), 10.0)
        created = await prometheus_query(self.http, self.prometheus, '{__name__=~".*_created"}')
        self.assertEqual(created, [])

    async def test_remote_write(self) -> None:
        pusher = self.pusher()
        await with_timeout(pusher.wait_delivered(1), 30, "a delivered push")
        await self.check_prometheus({"job": "e2e"})
        self.assertEqual((pusher.counters.failed, pusher.counters.rejected), (0, 0))

    async def test_seal(self) -> None:
        pusher = self.pusher(format="seal")
        await with_timeout(pusher.wait_delivered(1), 30, "a delivered push")
        await self.check_prometheus({"job": "e2e", "node_name": "app-1", "client_ip": "127.0.0.1"})

    async def test_wrong_token(self) -> None:
        """
        A token the gateway does not know is refused (401) and not retried;
        the loop goes on after a pause, and the refusal is told once.
        """
        stderr = io.StringIO()
        pusher = MetricsPusher(
            self.gateway.url,
            token="nope",
            registry=self.registry,
            interval=0.2,
            backoff=FAST,
            refusal_backoff=FAST,
            report_to=stderr,
        )
        pusher.startService()
        self.addCleanup(pusher.stopService)

        async def refused_twice() -> bool | None:
            return True if pusher.counters.rejected >= 2 else None

        await wait_until(refused_twice, what="two refused pushes", timeout=10)
        self.assertEqual((pusher.counters.failed, pusher.counters.delivered), (0, 0))
        self.assertTrue((pusher.counters.last_error or "").startswith("401"))
        [line] = stderr.getvalue().splitlines()
        self.assertIn(f"a metrics push to {self.gateway.url}/api/v1/push: 401", line)


class OutageTests(TestCase):
    """
    Outages of the upstream and of the gateway itself are retried and
    recovered from, holding only the latest snapshot meanwhile.
    """

    timeout = TEST_TIMEOUT

    def setUp(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter("jobs", "jobs", registry=self.registry)

    def pusher(self, url: str) -> MetricsPusher:
        pusher = MetricsPusher(
            url,
            token="tok-app",
            tenant="team-a",
            registry=self.registry,
            interval=0.1,
            backoff=Backoff(initial=0.4, maximum=0.8),
            report_to=io.StringIO(),
            before_push=self.jobs.inc,
        )
        pusher.startService()
        self.addCleanup(pusher.stopService)
        return pusher

    async def failures(self, pusher: MetricsPusher, count: int) -> None:
        async def failed() -> bool | None:
            return True if pusher.counters.failed >= count else None

        await wait_until(failed, what=f"{count} failed pushes", timeout=20)

    def listen_later(self, port: int, upstream: ScriptedUpstream) -> None:
        """
        Serve C{upstream} on C{port} from now on, until the test ends.
        """
        site = TrackingSite(upstream)
        listening = reactor.listenTCP(port, site, interface="127.0.0.1")

        async def stop() -> None:
            await listening.stopListening()
            # The gateway, still running when this cleanup runs, keeps a
            # pooled connection here: close it from this side.  (The
            # transport is on the HTTP channel the protocol wraps.)
            for protocol in list(site.connections):
                channel = getattr(protocol, "_channel", protocol)
                if channel.transport is not None:
                    channel.transport.abortConnection()
            await site.close_all()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))

    async def test_upstream_down_then_up(self) -> None:
        """
        While nothing listens where the upstream should be, the gateway
        answers 5xx and the pusher retries; snapshots taken meanwhile
        replace each other.  Once the upstream is there, the newest is
        delivered.
        """
        port = free_port()
        gateway = await start_gateway(
            self,
            {
                "upstreams": {"mimir": {"url": f"http://127.0.0.1:{port}", "retry": GATEWAY_RETRY}},
                "push": {"remote_write": {"upstream": "mimir", "path": "/api/v1/push"}},
            },
            TOKENS,
        )
        pusher = self.pusher(gateway.url)
        await self.failures(pusher, 2)
        self.assertEqual(pusher.counters.delivered, 0)
        self.assertGreater(pusher.counters.superseded, 0)
        upstream = ScriptedUpstream()
        self.listen_later(port, upstream)
        await with_timeout(pusher.wait_delivered(1), 30, "a delivered push")
        first = upstream.received[0]
        self.assertEqual(first.header("X-Scope-OrgID"), "team-a")
        request = remote_pb2.WriteRequest()
        request.ParseFromString(snappy_decompress(first.body, 1 << 20))
        [series] = [s for s in request.timeseries if s.labels[0].value == "jobs_total"]
        # The delivered snapshot is one of the newest, not the first one.
        self.assertGreater(series.samples[0].value, 2.0)

    async def test_gateway_down_then_up(self) -> None:
        """
        A gateway that is not there yet (connection refused) is retried
        until it is.
        """
        port = free_port()
        pusher = self.pusher(f"http://127.0.0.1:{port}")
        await self.failures(pusher, 2)
        self.assertIn("ConnectionRefused", pusher.counters.last_error or "")
        upstream = ScriptedUpstream()
        server = serve(self, upstream)
        await start_gateway(
            self,
            {
                "listeners": [{"endpoint": f"tcp:{port}:interface=127.0.0.1", "ops": True}],
                "upstreams": {"mimir": {"url": server.url}},
                "push": {"remote_write": {"upstream": "mimir", "path": "/api/v1/push"}},
            },
            TOKENS,
        )
        await with_timeout(pusher.wait_delivered(1), 30, "a delivered push")
        self.assertEqual(upstream.received[0].path, b"/api/v1/push")


class HandlerTests(TestCase):
    """
    The Loki handler through sealgw to a recording upstream.
    """

    timeout = TEST_TIMEOUT

    async def start(self, *script: Any) -> Gateway:
        self.upstream = ScriptedUpstream(*script)
        server = serve(self, self.upstream)
        return await start_gateway(
            self,
            {
                "upstreams": {"loki": {"url": server.url, "retry": GATEWAY_RETRY}},
                "push": {"loki": {"upstream": "loki", "path": "/loki/api/v1/push"}},
            },
            TOKENS,
        )

    def handler(self, gateway: Gateway) -> tuple[LokiHandler, logging.Logger]:
        handler = LokiHandler(
            gateway.url,
            token="tok-app",
            tenant="team-b",
            labels={"service_name": "shop"},
            flush_interval=0.1,
            backoff=FAST,
            report_to=io.StringIO(),
        )
        logger = logging.getLogger(f"e2e.{self.id()}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        self.addCleanup(handler.stop)
        return handler, logger

    def lines(self) -> list[tuple[dict[str, str], list[Any]]]:
        out = []
        for received in self.upstream.received:
            if received.header("X-Scope-OrgID") != "team-b":
                raise AssertionError("wrong tenant")
            headers = {"content-encoding": received.header("Content-Encoding") or ""}
            doc = Seen(received.method, received.path, headers, received.body).loki()
            out += [(s["stream"], v) for s in doc["streams"] for v in s["values"]]
        return out

    async def test_lines_arrive(self) -> None:
        gateway = await self.start()
        handler, logger = self.handler(gateway)
        logger.info("order %s placed", "o-17", extra={"order_id": "o-17"})
        logger.warning("stock low")
        await with_timeout(self.upstream.arrived(1), 30, "a log batch")
        [(info_stream, info), (warn_stream, warn)] = self.lines()
        self.assertEqual(
            info_stream, {"service_name": "shop", "level": "INFO", "logger": logger.name}
        )
        self.assertEqual(info[1:], ["order o-17 placed", {"order_id": "o-17"}])
        self.assertEqual(warn_stream["level"], "WARNING")
        self.assertEqual(warn[1], "stock low")
        self.assertEqual(self.upstream.received[0].path, b"/loki/api/v1/push")

    async def test_outage_retried(self) -> None:
        """
        A batch the upstream refused with 503 (relayed by the gateway) is
        sent again as it was, and arrives; lines logged meanwhile follow
        in a later batch.
        """
        gateway = await self.start(answer(503), answer(503), answer(204))
        handler, logger = self.handler(gateway)
        for i in range(5):
            logger.info("line %d", i)
        await with_timeout(self.upstream.arrived(3), 30, "the retried batch")
        logger.info("line 5")
        await with_timeout(self.upstream.arrived(4), 30, "the next batch")
        bodies = [r.body for r in self.upstream.received]
        self.assertEqual(bodies[0], bodies[1])
        self.assertEqual(bodies[1], bodies[2])
        delivered = [v[1] for _, v in self.lines()[10:]]
        self.assertEqual(delivered, [f"line {i}" for i in range(6)])

        async def answered() -> bool | None:
            return True if handler.counters.items_delivered == 6 else None

        await wait_until(answered, what="the gateway's answer to the last batch", timeout=10)
        self.assertEqual(handler.counters.failed, 2)


CROCHET_APP = textwrap.dedent(
    """
    import json, logging, sys, threading, time

    from prometheus_client import Counter
    from twisted.internet import reactor

    from sealgw.client import LokiHandler, MetricsPusher, start_in_thread

    url, token = sys.argv[1], sys.argv[2]
    start_in_thread()
    handler = LokiHandler(url, token=token, labels={"service_name": "crochet-app"},
                          max_queue=500, batch_size=100)
    logger = logging.getLogger("app")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    jobs = Counter("crochet_jobs", "jobs")
    pusher = MetricsPusher(url, token=token, interval=3600)
    pusher.start()

    # Hold the reactor thread: nothing can be shipped until it is let go.
    busy, release = threading.Event(), threading.Event()
    def hold():
        busy.set()
        release.wait(20)
    reactor.callFromThread(hold)
    assert busy.wait(20)
    started = time.monotonic()
    for i in range(1000):
        logger.info("line %d", i, extra={"seq": i})
    elapsed = time.monotonic() - started
    release.set()
    jobs.inc(42)
    print(json.dumps({"elapsed": elapsed, "dropped": handler.counters.dropped}), flush=True)
    # The main thread ends: crochet stops the reactor, after the last push
    # and the last log batches.
    """
)


class NoReactorApplicationTests(TestCase):
    """
    An application that runs no reactor: C{start_in_thread}, a handler and
    a pusher, in a child process.
    """

    timeout = TEST_TIMEOUT

    async def test_logging_never_waits(self) -> None:
        """
        While the reactor thread is stuck, a thousand records are logged
        at once: half are queued, half dropped and counted.  The queued
        ones, and the pusher's last push, arrive when the application
        exits.
        """
        upstream = ScriptedUpstream()
        server = serve(self, upstream)
        gateway = await start_gateway(
            self,
            {
                "upstreams": {"up": {"url": server.url}},
                "push": {
                    "loki": {"upstream": "up", "path": "/loki/api/v1/push"},
                    "remote_write": {"upstream": "up", "path": "/api/v1/push"},
                },
            },
            TOKENS,
        )
        script = os.path.abspath(self.mktemp()) + ".py"
        with open(script, "w") as f:
            f.write(CROCHET_APP)
        child = Child()
        reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, script, gateway.url, "tok-solo"],
            env=child_env(),
            path=ROOT,
        )
        code = await with_timeout(child.ended, 60, "the application to exit")
        self.assertEqual(code, 0, child.err.decode("utf-8", "replace"))
        report = json.loads(child.out.decode().strip().splitlines()[-1])
        self.assertLess(report["elapsed"], 2.0)
        self.assertEqual(report["dropped"], 500)

        logs = [r for r in upstream.received if r.path == b"/loki/api/v1/push"]
        lines = []
        for received in logs:
            doc = Seen(
                received.method, received.path, {"content-encoding": "gzip"}, received.body
            ).loki()
            for stream in doc["streams"]:
                self.assertEqual(stream["stream"]["service_name"], "crochet-app")
                lines += stream["values"]
        self.assertEqual(
            [v[1] for v in lines],
            [f"line {i}" for i in range(500)],
            (child.err.decode("utf-8", "replace"), [r.path for r in upstream.received]),
        )
        self.assertEqual(lines[7][2], {"seq": "7"})

        pushes = [r for r in upstream.received if r.path == b"/api/v1/push"]
        last = remote_pb2.WriteRequest()
        last.ParseFromString(snappy_decompress(pushes[-1].body, 1 << 24))
        values = {s.labels[0].value: s.samples[0].value for s in last.timeseries}
        self.assertEqual(values["crochet_jobs_total"], 42.0)
        self.assertGreaterEqual(len(pushes), 2)  # the first, and the last at exit
