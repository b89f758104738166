"""
The Loki handler never ships the library's own records: Twisted's and
treq's lines (logged directly or bridged from C{twisted.logger}), the
client's own, and whatever is logged while it ships, on any thread.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from twisted.logger import LegacyLogObserverWrapper, Logger, LogPublisher, STDLibLogObserver
from twisted.python import log as legacy_log
from twisted.python import threadable
from twisted.trial.unittest import SynchronousTestCase

from sealgw.client import Backoff, LokiHandler
from sealgw.client._selflog import busy, library_name, own_record, shipping
from tests.test_client_fakes import FakeReactor, ScriptedGateway, respond, stub

URL = "http://gateway.example:8080"


def record(name: str, msg: Any = "hello") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, (), None)


class OwnRecordTests(SynchronousTestCase):
    def test_by_logger_name(self) -> None:
        for name in ["twisted", "twisted.web.client", "treq", "treq.client", "crochet"]:
            self.assertTrue(own_record(record(name)), name)
        for name in ["sealgw.client", "sealgw.client._loki"]:
            self.assertTrue(own_record(record(name)), name)
        for name in ["root", "app", "twistedish", "treqs", "sealgw", "sealgw.relay", "app.twisted"]:
            self.assertFalse(own_record(record(name)), name)

    def test_library_names(self) -> None:
        self.assertTrue(library_name("twisted.internet.protocol.Factory"))
        self.assertFalse(library_name("sealgw.clientele"))

    def test_shipping_guard(self) -> None:
        """
        The guard nests, and is over when the outermost block is.
        """
        self.assertFalse(busy())
        with shipping():
            with shipping():
                self.assertTrue(busy())
            self.assertTrue(busy())
        self.assertFalse(busy())


class HandlerGuardTests(SynchronousTestCase):
    """
    Records reaching a handler through the routes an application sets up:
    a bridge from Twisted's logging, a standard error that logs, a
    formatter or an HTTP client that logs.
    """

    def setUp(self) -> None:
        threadable.registerAsIOThread()
        self.reactor = FakeReactor()
        self.gateway = ScriptedGateway()
        self.http = stub(self.gateway)
        self.logger = logging.getLogger(f"app.{self.id()}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)

    def handler(self, logger: logging.Logger | None = None, **kwargs: Any) -> LokiHandler:
        options: dict[str, Any] = {
            "labels": {"service_name": "shop"},
            "backoff": Backoff(initial=2.0, random=lambda: 0.0),
            "report_to": io.StringIO(),
            "reactor": self.reactor,
            "http": self.http,
            **kwargs,
        }
        handler = LokiHandler(URL, **options)
        self.reactor.run_from_threads()
        logger = logger or self.logger
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        return handler

    def shipped(self) -> list[str]:
        self.reactor.run_from_threads()
        self.reactor.advance(1.0)
        self.http.flush()
        return [
            v[1] for seen in self.gateway.seen for s in seen.loki()["streams"] for v in s["values"]
        ]

    def test_bridged_twisted_events(self) -> None:
        """
        Through C{STDLibLogObserver}, every Twisted event is logged under
        one logger: the event's namespace decides.  Twisted's own lines
        (a factory starting, the HTTP client's protocol), treq's and the
        client's are not shipped; the application's own events are.
        """
        handler = self.handler()
        publisher = LogPublisher(STDLibLogObserver(name=self.logger.name))
        for namespace in [
            "twisted.web.client._HTTP11ClientFactory",
            "twisted.web._newclient.HTTP11ClientProtocol",
            "treq.testing.RequestTraversalAgent",
            "sealgw.client._loki.LokiHandler",
        ]:
            Logger(namespace=namespace, observer=publisher).info("Starting factory {f}", f=1)
        Logger(namespace="shop.orders", observer=publisher).info("order {id} placed", id=7)
        self.assertEqual(self.shipped(), ["order 7 placed"])
        self.assertEqual(handler.counters.skipped, 4)

    def test_legacy_twisted_lines(self) -> None:
        """
        Twisted's old C{log.msg} lines say nothing of where they come
        from: under the C{twisted} logger (C{crochet}, and
        C{PythonLoggingObserver} by default), they are not shipped.
        """
        twisted_logger = logging.getLogger("twisted")
        self.patch(twisted_logger, "propagate", False)
        level = twisted_logger.level
        twisted_logger.setLevel(logging.DEBUG)
        self.addCleanup(twisted_logger.setLevel, level)
        handler = self.handler(logger=twisted_logger)
        observer = legacy_log.PythonLoggingObserver()
        publisher = legacy_log.LogPublisher()
        publisher.addObserver(observer.emit)
        publisher.msg("Starting protocol <twisted.internet.protocol.Protocol>")
        wrapped = LegacyLogObserverWrapper(observer.emit)  # type: ignore[arg-type]
        Logger(namespace="shop.orders", observer=wrapped).info("order placed")
        self.assertEqual(self.shipped(), ["order placed"])
        self.assertEqual(handler.counters.skipped, 1)

    def test_logged_while_formatting(self) -> None:
        """
        A record logged while the handler formats another (an object
        whose C{str} logs) is not shipped, and does not recurse.
        """
        handler = self.handler()
        logger = self.logger

        class Noisy:
            def __str__(self) -> str:
                logger.warning("formatting a Noisy")
                return "noisy"

        logger.info("value: %s", Noisy())
        self.assertEqual(self.shipped(), ["value: noisy"])
        self.assertEqual(handler.counters.skipped, 1)

    def test_logged_while_sending(self) -> None:
        """
        What the HTTP client logs while the handler sends (on the reactor
        thread, under any logger name) is not shipped.
        """
        logger = self.logger

        class Chatty:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def request(self, method: str, url: Any, **kwargs: Any) -> Any:
                logger.info("connecting to %s", url)
                return self.inner.request(method, url, **kwargs)

        self.http = stub(self.gateway)
        handler = self.handler(http=Chatty(self.http))
        logger.info("real line")
        self.assertEqual(self.shipped(), ["real line"])
        self.assertEqual(handler.counters.skipped, 1)
        self.reactor.advance(1.0)
        self.http.flush()
        self.assertEqual(len(self.gateway.seen), 1)

    def test_reports_to_a_logging_stderr(self) -> None:
        """
        Where standard error is turned into log records (C{twistd}), the
        handler's own report of a refusal is not shipped either.
        """
        logger = self.logger

        class LoggingStream(io.StringIO):
            def write(self, text: str) -> int:
                logger.error("stderr: %s", text.strip())
                return super().write(text)

        self.gateway.script[:] = [respond(401, body=b"unknown token"), respond(204)]
        stream = LoggingStream()
        handler = self.handler(
            report_to=stream, refusal_backoff=Backoff(initial=2.0, random=lambda: 0.0)
        )
        logger.info("first")
        self.shipped()
        self.assertEqual(len(stream.getvalue().splitlines()), 1)
        logger.info("second")
        self.assertEqual(self.shipped(), ["first", "second"])
        self.assertEqual(handler.counters.skipped, 2)  # the refusal, the recovery
