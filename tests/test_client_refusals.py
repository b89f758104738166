"""
What the client library does when the gateway refuses it (a wrong or
revoked token) or fails for a while, on a clock: one line on standard
error, pauses that grow, a bounded buffer keeping the newest records,
recovery once the gateway takes payloads again, and a bounded stop.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from twisted.python import threadable
from twisted.trial.unittest import SynchronousTestCase

from sealgw.client import Backoff, LokiHandler, MetricsPusher
from sealgw.client._report import one_line, public_url
from tests.test_client_fakes import FakeReactor, ScriptedGateway, respond, stub

URL = "http://gateway.example:8080"
TOKEN = "tok-secret-1"
NO_JITTER = Backoff(initial=2.0, maximum=16.0, random=lambda: 0.0)
#: Pauses of 2, 4, 8, 16, 32, 32 ... s after refusals in a row.
REFUSAL_PAUSES = Backoff(initial=4.0, maximum=64.0, random=lambda: 0.0)


def reports(stderr: io.StringIO) -> list[str]:
    return stderr.getvalue().splitlines()


class HandlerRefusalTests(SynchronousTestCase):
    def setUp(self) -> None:
        threadable.registerAsIOThread()
        self.reactor = FakeReactor()
        self.logger = logging.getLogger(f"app.{self.id()}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.stderr = io.StringIO()

    def handler(self, gateway: ScriptedGateway, **kwargs: Any) -> LokiHandler:
        self.gateway = gateway
        self.http = stub(gateway)
        options: dict[str, Any] = {
            "token": TOKEN,
            "labels": {"service_name": "shop"},
            "backoff": NO_JITTER,
            "refusal_backoff": REFUSAL_PAUSES,
            "report_to": self.stderr,
            "reactor": self.reactor,
            "http": self.http,
            **kwargs,
        }
        handler = LokiHandler(URL, **options)
        self.reactor.run_from_threads()
        self.logger.addHandler(handler)
        self.addCleanup(self.logger.removeHandler, handler)
        return handler

    def run_for(self, seconds: int, log_every_second: bool = True) -> list[float]:
        """
        Log a line every second for C{seconds}, and return when the
        gateway was asked.
        """
        times = []
        for _ in range(seconds):
            if log_every_second:
                self.logger.info("tick at %d", self.reactor.seconds())
            before = len(self.gateway.seen)
            self.reactor.run_from_threads()
            self.reactor.advance(1.0)
            self.http.flush()
            times += [self.reactor.seconds()] * (len(self.gateway.seen) - before)
        return times

    def test_wrong_token(self) -> None:
        """
        A refused token is told once on standard error, with the URL, the
        status and the gateway's reason, never the token; sending pauses
        longer after each refusal (2, 4, 8 ... s, up to the cap), instead
        of once a second for as long as the process runs.
        """
        gateway = ScriptedGateway(respond(401, body=b"unknown token\n"))
        handler = self.handler(gateway)
        times = self.run_for(200)
        # The first tick, then each probe at the first tick after its pause.
        self.assertEqual(times, [1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 95.0, 127.0, 159.0, 191.0])
        [line] = reports(self.stderr)
        self.assertEqual(
            line,
            "sealgw client: the gateway refused a log batch to "
            "http://gateway.example:8080/loki/api/v1/push: 401 unknown token; it is dropped, "
            "not retried, and sending pauses for 2.0s, longer after each refusal, until the "
            "gateway takes one (not reported again unless its answer changes)",
        )
        self.assertNotIn(TOKEN, self.stderr.getvalue())
        self.assertEqual(handler.counters.rejected, 10)
        self.assertEqual(handler.counters.failed, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_buffer_keeps_the_newest(self) -> None:
        """
        While refused, records wait in the bounded queue; past
        C{max_queue} the oldest are dropped and counted, so that the
        newest are there when the gateway takes them again.
        """
        gateway = ScriptedGateway(respond(403, body=b"tenant not allowed"))
        handler = self.handler(gateway, max_queue=5, batch_size=3)
        self.logger.info("refused")
        self.run_for(1, log_every_second=False)
        self.assertTrue(handler._outbox.refused)
        for i in range(8):
            self.logger.info("line %d", i)
        self.assertEqual((handler.queued, handler.counters.dropped), (5, 3))
        gateway.script[:] = [respond(204)]
        self.run_for(2, log_every_second=False)  # the probe at the end of the pause
        delivered = [v[1] for s in gateway.seen[1].loki()["streams"] for v in s["values"]]
        self.assertEqual(delivered, ["line 3", "line 4", "line 5"])
        self.assertFalse(handler._outbox.refused)
        # Delivering again: a full queue drops new records, as before.
        for i in range(8, 20):
            self.logger.info("line %d", i)
        self.assertEqual(handler.queued, 5)
        self.run_for(1, log_every_second=False)
        delivered = [v[1] for s in gateway.seen[2].loki()["streams"] for v in s["values"]]
        self.assertEqual(delivered, ["line 6", "line 7", "line 8"])

    def test_recovery(self) -> None:
        """
        Once the token works (the gateway's token file was fixed), the
        probe after the pause is delivered, that is told once with what
        the refusal cost, and a later refusal starts again from the
        shortest pause and is told again.
        """
        gateway = ScriptedGateway(respond(401, body=b"unknown token"))
        handler = self.handler(gateway)
        self.run_for(20)
        refused = handler.counters.items_rejected
        gateway.script[:] = [respond(204)]
        self.run_for(20)
        # Refused at 1, 3, 7 and 15; the probe at 31 is delivered, and
        # every tick after it.
        self.assertEqual(handler.counters.delivered, 10)
        self.assertEqual(
            reports(self.stderr)[1],
            "sealgw client: log batches to http://gateway.example:8080/loki/api/v1/push are "
            f"delivered again, after 4 refused ({refused} log line(s) dropped)",
        )
        gateway.script[:] = [respond(401, body=b"token revoked")]
        times = self.run_for(8)
        self.assertEqual(times, [41.0, 43.0, 47.0])
        lines = reports(self.stderr)
        self.assertEqual(len(lines), 3)
        self.assertIn("401 token revoked", lines[2])

    def test_each_refusal_status_told_once(self) -> None:
        """
        A different refusal (401, then 403 once the token is known but the
        tenant is not) is a different problem: told once too.
        """
        gateway = ScriptedGateway(
            respond(401, body=b"unknown token"),
            respond(401, body=b"unknown token"),
            respond(403, body=b"tenant team-b not allowed"),
        )
        self.handler(gateway)
        self.run_for(40)
        lines = reports(self.stderr)
        self.assertEqual(len(lines), 2)
        self.assertIn("401 unknown token", lines[0])
        self.assertIn("403 tenant team-b not allowed", lines[1])

    def test_temporary_failures_told_twice(self) -> None:
        """
        An outage is told when it starts and when it ends, not on every
        retry.
        """
        script = [respond(503, body=b"upstream\nunavailable")] * 5 + [respond(204)]
        gateway = ScriptedGateway(*script)
        handler = self.handler(gateway)
        self.run_for(60)
        self.assertEqual(handler.counters.failed, 5)
        self.assertEqual(
            reports(self.stderr),
            [
                "sealgw client: log batches to http://gateway.example:8080/loki/api/v1/push are "
                "failing (503 upstream unavailable); retrying with backoff, next in 1.0s; "
                "reported again once one is delivered",
                "sealgw client: log batches to http://gateway.example:8080/loki/api/v1/push are "
                "delivered again, after 5 failed attempt(s)",
            ],
        )

    def test_stop_while_refused(self) -> None:
        """
        Stopping a refused handler makes one attempt, not one per queued
        batch; what is left is dropped, counted, and told in one line.
        """
        gateway = ScriptedGateway(respond(401, body=b"unknown token"))
        handler = self.handler(gateway, batch_size=10, max_queue=1000)
        self.run_for(1)
        for i in range(500):
            self.logger.info("line %d", i)
        seen = len(gateway.seen)
        d = handler.stop()
        self.http.flush()
        self.successResultOf(d)
        self.assertEqual(len(gateway.seen), seen + 1)
        self.assertEqual(handler.counters.dropped, 490)
        lines = reports(self.stderr)
        self.assertEqual(len(lines), 2)
        self.assertEqual(
            lines[1],
            "sealgw client: 500 log line(s) for http://gateway.example:8080/loki/api/v1/push "
            "not sent at shutdown (401 unknown token)",
        )
        self.logger.info("after the stop")
        self.assertEqual(handler.counters.dropped, 491)


class PusherRefusalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.registry = CollectorRegistry()
        self.collections = 0

        def count() -> None:
            self.collections += 1

        Counter("jobs", "jobs", registry=self.registry).inc()
        self.before_push = count
        self.stderr = io.StringIO()

    def test_wrong_token(self) -> None:
        """
        A refused push is told once; pushing pauses (no snapshot is taken
        meanwhile) and the next tick after the pause tries again; once the
        gateway takes a push, that is told once too.
        """
        gateway = ScriptedGateway(respond(401, body=b"unknown token"))
        http = stub(gateway)
        pusher = MetricsPusher(
            URL + "/",
            token=TOKEN,
            registry=self.registry,
            interval=1.0,
            refusal_backoff=Backoff(initial=8.0, maximum=16.0, random=lambda: 0.0),
            report_to=self.stderr,
            before_push=self.before_push,
            reactor=self.reactor,
            http=http,
        )
        pusher.startService()
        http.flush()
        times = []
        for _ in range(30):
            before = len(gateway.seen)
            self.reactor.advance(1.0)
            http.flush()
            times += [self.reactor.seconds()] * (len(gateway.seen) - before)
            if self.reactor.seconds() == 20.0:
                gateway.script[:] = [respond(204)]
        # At 0; paused 4 s: at 4; paused 8 s: at 12, 20; delivered at 28
        # (20 + 8), then every second.
        self.assertEqual(times, [4.0, 12.0, 20.0, 28.0, 29.0, 30.0])
        self.assertEqual(self.collections, 1 + len(times))
        lines = reports(self.stderr)
        self.assertEqual(len(lines), 2)
        self.assertIn(
            "the gateway refused a metrics push to http://gateway.example:8080/api/v1/push: "
            "401 unknown token",
            lines[0],
        )
        self.assertIn("after 4 refused (4 series dropped)", lines[1])
        self.assertNotIn(TOKEN, self.stderr.getvalue())


class WordingTests(SynchronousTestCase):
    def test_one_line(self) -> None:
        """
        A gateway's reason is quoted on one line, cut, and without the
        token should a proxy echo it.
        """
        self.assertEqual(one_line("401\n  unknown\ttoken \n"), "401 unknown token")
        self.assertEqual(one_line(f"401 bad Bearer {TOKEN}", TOKEN), "401 bad Bearer <token>")
        long = one_line("x" * 1000)
        self.assertEqual((len(long), long[-3:]), (200, "..."))

    def test_public_url(self) -> None:
        self.assertEqual(public_url("https://u:p@gw.example/x"), "https://gw.example/x")
        self.assertEqual(public_url("http://gw.example:80/a"), "http://gw.example:80/a")
