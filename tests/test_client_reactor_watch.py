"""
Forgetting C{start_in_thread()}: with records or metrics waiting and no
reactor running, the client says so once on standard error, after a
grace period timed without the reactor (a fake timer here), and again
at close with what was never sent.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.python import threadable
from twisted.trial.unittest import SynchronousTestCase

from sealgw.client import LokiHandler, MetricsPusher, _report
from sealgw.client._report import DeliveryReport, ReactorWatch, Subject
from tests.test_client_fakes import FakeReactor, ScriptedGateway, stub

URL = "http://gateway.example:8080"
SUBJECT = Subject("a log batch", "log batches", "log line(s)", "log records")


class FakeTimers:
    """
    Stands for the watch's thread: remembers what it was asked to run.
    """

    def __init__(self) -> None:
        self.started: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, f: Callable[[], None]) -> None:
        self.started.append((delay, f))

    def fire(self) -> None:
        for _, f in self.started:
            f()


class WatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.reactor.running = False
        self.stderr = io.StringIO()
        self.timers = FakeTimers()
        report = DeliveryReport(SUBJECT, URL + "/loki/api/v1/push", self.stderr, None)
        self.watch = ReactorWatch(self.reactor, report, grace=5.0, timer=self.timers)

    def test_reactor_never_runs(self) -> None:
        """
        Armed (any number of times), it looks once, after the grace
        period, and says so once.
        """
        self.watch.arm()
        self.watch.arm()
        [(delay, _)] = self.timers.started
        self.assertEqual(delay, 5.0)
        self.assertEqual(self.stderr.getvalue(), "")
        self.timers.fire()
        self.assertEqual(
            self.stderr.getvalue(),
            "sealgw client: log records for http://gateway.example:8080/loki/api/v1/push are "
            "waiting, but Twisted's reactor has not run for 5s: nothing is sent until it does "
            "(an application that does not run it calls sealgw.client.start_in_thread() first)\n",
        )

    def test_reactor_runs_in_time(self) -> None:
        """
        A Twisted application that logs before C{reactor.run()} hears
        nothing.
        """
        self.watch.arm()
        self.reactor.running = True
        self.timers.fire()
        self.assertEqual(self.stderr.getvalue(), "")

    def test_no_thread_at_exit(self) -> None:
        """
        At interpreter exit no thread can be started: arming says nothing
        and raises nothing (it runs inside the application's logging).
        """

        def refuse(delay: float, f: Callable[[], None]) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

        report = DeliveryReport(SUBJECT, URL, self.stderr, None)
        ReactorWatch(self.reactor, report, timer=refuse).arm()
        self.assertEqual(self.stderr.getvalue(), "")

    def test_reactor_already_running(self) -> None:
        self.reactor.running = True
        self.watch.arm()
        self.assertEqual(self.timers.started, [])


class ClientWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.reactor.running = False
        self.stderr = io.StringIO()
        self.timers = FakeTimers()
        self.patch(_report, "start_daemon_timer", self.timers)
        # An application that never ran a reactor: no thread is its thread
        # (trial's own reactor may have claimed this one).
        self.patch(threadable, "ioThread", None)
        self.gateway = ScriptedGateway()

    def options(self, **kwargs: Any) -> dict[str, Any]:
        return {
            "token": "tok-1",
            "report_to": self.stderr,
            "reactor": self.reactor,
            "http": stub(self.gateway),
            **kwargs,
        }

    def test_handler(self) -> None:
        """
        The first record logged arms the watch; none before it, one
        thread whatever follows.  Closing with nothing run says how many
        records were never sent.
        """
        handler = LokiHandler(URL, **self.options(labels={"service_name": "shop"}))
        logger = logging.getLogger(f"app.{self.id()}")
        logger.propagate = False
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        self.assertEqual(self.timers.started, [])
        for i in range(3):
            logger.warning("line %d", i)
        self.assertEqual(len(self.timers.started), 1)
        self.timers.fire()
        [line] = self.stderr.getvalue().splitlines()
        self.assertIn("log records for http://gateway.example:8080/loki/api/v1/push", line)
        self.assertIn("start_in_thread()", line)
        handler.close()
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(
            lines[1],
            "sealgw client: 3 log records for http://gateway.example:8080/loki/api/v1/push were "
            "never sent: Twisted's reactor did not run (an application that does not run it "
            "calls sealgw.client.start_in_thread() first)",
        )
        self.assertEqual(handler.counters.dropped, 3)
        self.assertEqual(self.gateway.seen, [])

    def test_pusher(self) -> None:
        """
        Starting a pusher arms the watch; closing it with nothing run
        says its metrics were never sent.
        """
        pusher = MetricsPusher(URL, **self.options(registry=CollectorRegistry()))
        pusher.start()
        self.assertEqual(len(self.timers.started), 1)
        self.timers.fire()
        self.assertIn("metrics for http://gateway.example:8080/api/v1/push", self.stderr.getvalue())
        self.assertFalse(pusher.close())
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn(
            "metrics for http://gateway.example:8080/api/v1/push were never sent", lines[1]
        )

    def test_running_reactor(self) -> None:
        """
        With the reactor running, nothing is watched.
        """
        self.reactor.running = True
        pusher = MetricsPusher(URL, **self.options(registry=CollectorRegistry()))
        pusher.start()
        self.reactor.run_from_threads()
        self.assertEqual(self.timers.started, [])
        self.assertEqual(self.stderr.getvalue(), "")
        pusher.stopService()
