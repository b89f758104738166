"""
L{sealgw.client.MetricsPusher} on a clock, against a scripted gateway:
what it sends, when it sends it again, what it keeps meanwhile, and that
its loop survives everything.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.trial.unittest import SynchronousTestCase

from sealgw.client import Backoff, MetricsPusher
from sealgw.signals import snappy_decompress
from sealgw.signals.seal import decode_delimited, decode_seal_json
from tests.test_client_fakes import (
    HANG,
    FakeReactor,
    ScriptedGateway,
    Unreachable,
    respond,
    stub,
)

URL = "http://gateway.example:8080/prefix"
NO_JITTER = Backoff(initial=2.0, maximum=16.0, random=lambda: 0.0)
#: Pauses of 2, 4, 8, 16 s after refusals in a row.
REFUSAL_PAUSES = Backoff(initial=4.0, maximum=32.0, random=lambda: 0.0)


class PusherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.registry = CollectorRegistry()
        self.jobs = Counter("jobs", "jobs done", ["kind"], registry=self.registry)
        self.jobs.labels("batch").inc(3)

    def pusher(self, gateway: ScriptedGateway, **kwargs: Any) -> MetricsPusher:
        self.http = stub(gateway)
        self.stderr = io.StringIO()
        kwargs.setdefault("http", self.http)
        options: dict[str, Any] = {
            "token": "tok-1",
            "registry": self.registry,
            "interval": 10.0,
            "labels": {"job": "app"},
            "backoff": NO_JITTER,
            "refusal_backoff": REFUSAL_PAUSES,
            "report_to": self.stderr,
            "reactor": self.reactor,
            **kwargs,
        }
        return MetricsPusher(URL, **options)

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self.http.flush()

    def jobs_value(self, gateway: ScriptedGateway, index: int) -> float:
        return gateway.seen[index].series()['jobs_total{job="app",kind="batch"}']

    def test_remote_write(self) -> None:
        """
        The first push goes at once, as remote write to C{/api/v1/push}
        under the URL's path, with the token, the tenant and the remote
        write headers; every series carries the pusher's labels.  The next
        goes C{interval} later, with the registry's new values.
        """
        gateway = ScriptedGateway()
        pusher = self.pusher(gateway, tenant="team-a")
        pusher.startService()
        self.http.flush()
        [seen] = gateway.seen
        self.assertEqual((seen.method, seen.path), (b"POST", b"/prefix/api/v1/push"))
        self.assertEqual(seen.headers["authorization"], "Bearer tok-1")
        self.assertEqual(seen.headers["x-scope-orgid"], "team-a")
        self.assertEqual(seen.headers["content-type"], "application/x-protobuf")
        self.assertEqual(seen.headers["content-encoding"], "snappy")
        self.assertEqual(seen.headers["x-prometheus-remote-write-version"], "0.1.0")
        self.assertEqual(seen.series(), {'jobs_total{job="app",kind="batch"}': 3.0})
        [metadata] = seen.remote_write().metadata
        self.assertEqual((metadata.metric_family_name, metadata.help), ("jobs_total", "jobs done"))
        [series] = seen.remote_write().timeseries
        self.assertEqual(series.samples[0].timestamp, 0)  # the clock's "now"

        self.jobs.labels("batch").inc()
        self.advance(9.9)
        self.assertEqual(len(gateway.seen), 1)
        self.advance(0.1)
        self.assertEqual(len(gateway.seen), 2)
        self.assertEqual(self.jobs_value(gateway, 1), 4.0)
        self.assertEqual(gateway.seen[1].remote_write().timeseries[0].samples[0].timestamp, 10_000)
        self.assertEqual(pusher.counters.delivered, 2)
        self.assertEqual(pusher.counters.items_delivered, 2)

    def test_seal_format(self) -> None:
        """
        In seal format the push goes to C{/publish/metrics}: snappy JSON
        with the labels and the delimited C{MetricFamily} stream.
        """
        gateway = ScriptedGateway(respond(201, body=b"created"))
        pusher = self.pusher(gateway, format="seal", tenant=None)
        pusher.startService()
        self.http.flush()
        [seen] = gateway.seen
        self.assertEqual(seen.path, b"/prefix/publish/metrics")
        self.assertEqual(seen.headers["content-encoding"], "snappy")
        self.assertNotIn("x-scope-orgid", seen.headers)
        labels, buf = decode_seal_json(snappy_decompress(seen.body, 1 << 20))
        self.assertEqual(labels, {"job": "app"})
        [family] = decode_delimited(buf)
        self.assertEqual(family.name, "jobs_total")
        self.assertEqual(family.metric[0].counter.value, 3.0)
        self.assertEqual(json.loads(snappy_decompress(seen.body, 1 << 20))["labels"], labels)
        self.assertEqual(pusher.counters.delivered, 1)

    def test_retries_5xx_with_backoff(self) -> None:
        """
        A 5xx is retried after a backoff that doubles (with this jitter
        source, half of 2, 4, ... seconds), and the push is delivered once
        the gateway takes it; the counters say so.
        """
        gateway = ScriptedGateway(respond(503), respond(502), respond(204))
        pusher = self.pusher(gateway, interval=100.0)
        pusher.startService()
        self.http.flush()
        self.assertEqual(len(gateway.seen), 1)
        self.advance(0.99)
        self.assertEqual(len(gateway.seen), 1)
        self.advance(0.01)
        self.assertEqual(len(gateway.seen), 2)
        self.advance(1.99)
        self.assertEqual(len(gateway.seen), 2)
        self.advance(0.01)
        self.assertEqual(len(gateway.seen), 3)
        self.assertEqual(gateway.seen[2].body, gateway.seen[0].body)
        self.assertEqual(
            (pusher.counters.failed, pusher.counters.delivered, pusher.counters.last_error),
            (2, 1, None),
        )
        self.advance(50)
        self.assertEqual(len(gateway.seen), 3)  # no more retries once delivered

    def test_retry_after(self) -> None:
        """
        A 429 (or 503) with C{Retry-After} is retried after exactly that
        long, not the computed backoff.
        """
        gateway = ScriptedGateway(
            respond(429, {"Retry-After": "7"}), respond(503, {"Retry-After": "3"}), respond(204)
        )
        pusher = self.pusher(gateway, interval=100.0)
        pusher.startService()
        self.http.flush()
        self.advance(6.9)
        self.assertEqual(len(gateway.seen), 1)
        self.advance(0.1)
        self.assertEqual(len(gateway.seen), 2)
        self.advance(2.9)
        self.assertEqual(len(gateway.seen), 2)
        self.advance(0.1)
        self.assertEqual(len(gateway.seen), 3)
        self.assertEqual(pusher.counters.delivered, 1)
        self.assertEqual(pusher.counters.failed, 2)

    def test_4xx_dropped(self) -> None:
        """
        A 4xx other than 429 is never retried: the push is counted as
        refused and dropped, and the next tick pushes a new snapshot.
        """
        gateway = ScriptedGateway(respond(401, body=b"unknown token"), respond(204))
        pusher = self.pusher(gateway)
        pusher.startService()
        self.http.flush()
        self.assertEqual((pusher.counters.rejected, pusher.counters.items_rejected), (1, 1))
        self.assertEqual(pusher.counters.last_error, "401 unknown token")
        self.advance(9.0)
        self.assertEqual(len(gateway.seen), 1)
        self.advance(1.0)
        self.assertEqual(len(gateway.seen), 2)
        self.assertEqual(pusher.counters.delivered, 1)

    def test_redirect_not_followed(self) -> None:
        """
        A redirect is a wrong URL: refused, not followed, not retried.
        """
        gateway = ScriptedGateway(respond(308, {"Location": "http://elsewhere/"}))
        pusher = self.pusher(gateway)
        pusher.startService()
        self.http.flush()
        self.assertEqual(pusher.counters.rejected, 1)
        self.assertEqual(len(gateway.seen), 1)

    def test_only_the_latest_is_kept(self) -> None:
        """
        Through an outage, a snapshot taken while a push waits for its
        retry replaces it: the retry sends the newest, and the older ones
        are counted as superseded, never queued.
        """
        gateway = ScriptedGateway(respond(503), respond(204))
        backoff = Backoff(initial=21.0, random=lambda: 0)  # the retry comes at 10.5 s
        pusher = self.pusher(gateway, interval=1.0, backoff=backoff)
        pusher.startService()
        self.http.flush()
        for _ in range(5):
            self.jobs.labels("batch").inc()
            self.advance(1.0)
        self.assertEqual(len(gateway.seen), 1)
        # The failed snapshot, then four that waited, each replaced by
        # the next.
        self.assertEqual(pusher.counters.superseded, 5)
        for _ in range(5):
            self.advance(1.0)
        self.assertEqual((len(gateway.seen), pusher.counters.superseded), (1, 10))
        self.advance(0.5)
        self.assertEqual(len(gateway.seen), 2)
        self.assertEqual(self.jobs_value(gateway, 1), 3.0 + 5)
        self.assertEqual(pusher.counters.delivered, 1)

    def test_one_waits_behind_one_in_flight(self) -> None:
        """
        While a push is in flight, ticks leave only the newest snapshot
        waiting; it goes as soon as the answer comes.
        """
        gateway = ScriptedGateway(HANG, respond(204))
        pusher = self.pusher(gateway, interval=1.0, timeout=60.0)
        pusher.startService()
        for _ in range(3):
            self.jobs.labels("batch").inc()
            self.advance(1.0)
        self.assertEqual(len(gateway.seen), 1)
        self.assertEqual(pusher.counters.superseded, 2)
        [request] = gateway.hanging
        request.setResponseCode(204)
        request.finish()
        self.http.flush()
        self.assertEqual(len(gateway.seen), 2)
        self.assertEqual(self.jobs_value(gateway, 1), 6.0)
        self.assertEqual(pusher.counters.delivered, 2)

    def test_connection_errors_retried(self) -> None:
        """
        A gateway that cannot be reached is retried like a 5xx.
        """
        gateway = ScriptedGateway()
        http = Unreachable(2, stub(gateway))
        self.http = http.then
        pusher = self.pusher(gateway, http=http, interval=100.0)
        pusher.startService()
        self.assertEqual(pusher.counters.failed, 1)
        self.assertIn("ConnectionRefusedError", pusher.counters.last_error or "")
        self.advance(1.0)
        self.advance(2.0)
        self.assertEqual((http.attempts, len(gateway.seen)), (3, 1))
        self.assertEqual(pusher.counters.delivered, 1)

    def test_timeout_retried(self) -> None:
        """
        A gateway that does not answer within C{timeout} is given up on
        (the request is cancelled) and retried.
        """
        gateway = ScriptedGateway(HANG, respond(204))
        pusher = self.pusher(gateway, interval=100.0, timeout=5.0)
        pusher.startService()
        self.http.flush()
        self.advance(5.0)
        self.assertEqual(pusher.counters.failed, 1)
        self.assertIn("no answer within 5s", pusher.counters.last_error or "")
        self.advance(1.0)
        self.assertEqual(len(gateway.seen), 2)
        self.assertEqual(pusher.counters.delivered, 1)

    def test_loop_survives_collect_errors(self) -> None:
        """
        A collector that raises costs that push only: it is logged and
        counted, and the loop goes on.
        """
        broken = Flaky()
        self.registry.register(broken)
        gateway = ScriptedGateway()
        pusher = self.pusher(gateway)
        pusher.startService()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((pusher.counters.errors, len(gateway.seen)), (1, 0))
        self.assertIn("collecting metrics: flaky", pusher.counters.last_error or "")
        self.advance(10.0)
        self.assertEqual(len(gateway.seen), 1)
        self.assertEqual(gateway.seen[0].series()['flaky{job="app"}'], 1.0)

    def test_loop_survives_before_push_errors(self) -> None:
        """
        So does a C{before_push} hook that raises.
        """
        calls: list[int] = []

        def before_push() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("not yet")

        gateway = ScriptedGateway()
        pusher = self.pusher(gateway, before_push=before_push)
        pusher.startService()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.advance(10.0)
        self.assertEqual((len(calls), len(gateway.seen), pusher.counters.errors), (2, 1, 1))

    def test_loop_survives_client_errors(self) -> None:
        """
        An HTTP client that raises is a failed attempt, retried.
        """

        class Broken:
            def request(self, method: str, url: Any, **kwargs: Any) -> Any:
                raise TypeError("bug")

        gateway = ScriptedGateway()
        pusher = self.pusher(gateway, http=Broken())
        pusher.startService()
        self.advance(1.0)
        self.advance(2.0)
        self.assertEqual(pusher.counters.failed, 3)
        self.assertTrue(pusher.running)

    def test_final_push_on_stop(self) -> None:
        """
        Stopping pushes the latest snapshot once more, and then nothing.
        """
        gateway = ScriptedGateway()
        pusher = self.pusher(gateway)
        pusher.startService()
        self.http.flush()
        self.jobs.labels("batch").inc(10)
        d = pusher.stopService()
        self.http.flush()
        self.successResultOf(d)
        self.assertEqual(len(gateway.seen), 2)
        self.assertEqual(self.jobs_value(gateway, 1), 13.0)
        self.assertIs(pusher.stopService(), d)
        self.advance(100.0)
        self.assertEqual(len(gateway.seen), 2)
        self.assertFalse(pusher.running)

    def test_stop_replaces_a_pending_retry(self) -> None:
        """
        A push waiting for its retry is replaced by the last snapshot,
        sent once, without retrying it after the stop.
        """
        gateway = ScriptedGateway(respond(503), respond(503))
        pusher = self.pusher(gateway, interval=100.0)
        pusher.startService()
        self.http.flush()
        self.jobs.labels("batch").inc()
        d = pusher.stopService()
        self.http.flush()
        self.successResultOf(d)
        self.assertEqual(len(gateway.seen), 2)
        self.assertEqual(self.jobs_value(gateway, 1), 4.0)
        self.assertEqual(pusher.counters.superseded, 1)
        self.advance(100.0)
        self.assertEqual(len(gateway.seen), 2)

    def test_stop_is_bounded(self) -> None:
        """
        A stop waits for a push in flight, but never past C{stop_timeout}:
        then the request is cancelled and the stop is over, counted.
        """
        gateway = ScriptedGateway(HANG)
        pusher = self.pusher(gateway, timeout=60.0, stop_timeout=3.0)
        pusher.startService()
        self.http.flush()
        d = pusher.stopService()
        self.assertNoResult(d)
        self.advance(3.0)
        self.successResultOf(d)
        self.assertEqual(pusher.counters.errors, 1)
        self.assertIn("stopping", pusher.counters.last_error or "")
        self.assertEqual(len(gateway.seen), 1)
        self.advance(100.0)  # the cancelled push is not retried after the stop
        self.assertEqual(len(gateway.seen), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_without_final_push(self) -> None:
        gateway = ScriptedGateway()
        pusher = self.pusher(gateway)
        pusher.startService()
        self.http.flush()
        self.successResultOf(pusher.stop(final_push=False))
        self.assertEqual(len(gateway.seen), 1)

    def test_pushes_when_the_reactor_stops(self) -> None:
        """
        A pusher left running makes its last push when the reactor shuts
        down, and the shutdown waits for it.
        """
        gateway = ScriptedGateway()
        pusher = self.pusher(gateway)
        pusher.start()
        self.reactor.run_from_threads()  # in case this is not the reactor thread
        self.http.flush()
        d = self.reactor.shutdown()
        self.http.flush()
        self.successResultOf(d)
        self.assertEqual(len(gateway.seen), 2)
        self.assertFalse(pusher.running)
        self.assertEqual(self.reactor.triggers, {})

    def test_stop_removes_the_shutdown_trigger(self) -> None:
        gateway = ScriptedGateway()
        pusher = self.pusher(gateway)
        pusher.startService()
        self.assertEqual(len(self.reactor.triggers), 1)
        pusher.stopService()
        self.assertEqual(self.reactor.triggers, {})

    def test_wait_delivered(self) -> None:
        gateway = ScriptedGateway()
        pusher = self.pusher(gateway)
        d = pusher.wait_delivered(2)
        pusher.startService()
        self.http.flush()
        self.assertNoResult(d)
        self.advance(10.0)
        self.successResultOf(d)
        self.successResultOf(pusher.wait_delivered(1))


class Flaky(Collector):
    """
    Raises on its first collection, then reports a gauge.
    """

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> Iterator[Any]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("flaky")
        yield GaugeMetricFamily("flaky", "a gauge", value=1.0)


class GaugeLabelsTests(SynchronousTestCase):
    """
    Labels given to the pusher win over a metric's own.
    """

    def test_pusher_labels_win(self) -> None:
        reactor = FakeReactor()
        registry = CollectorRegistry()
        Gauge("g", "g", ["job"], registry=registry).labels("mine").set(2)
        gateway = ScriptedGateway()
        http = stub(gateway)
        pusher = MetricsPusher(
            URL,
            registry=registry,
            labels={"job": "app"},
            reactor=reactor,
            http=http,
            report_to=io.StringIO(),
        )
        pusher.startService()
        http.flush()
        self.assertEqual(gateway.seen[0].series(), {'g{job="app"}': 2.0})
        self.assertNotIn("authorization", gateway.seen[0].headers)
