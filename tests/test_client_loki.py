"""
L{sealgw.client.LokiHandler} on a clock, against a scripted gateway:
batching, labels and metadata, the bounded queue, retries, and the last
flush.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

from twisted.python import threadable
from twisted.trial.unittest import SynchronousTestCase

from sealgw.client import Backoff, LokiHandler
from sealgw.client._streams import loki_body, metadata_name
from tests.test_client_fakes import HANG, FakeReactor, ScriptedGateway, respond, stub

URL = "http://gateway.example:8080"
NO_JITTER = Backoff(initial=2.0, maximum=16.0, random=lambda: 0.0)
#: Pauses of 2, 4, 8, 16 s after refusals in a row.
REFUSAL_PAUSES = Backoff(initial=4.0, maximum=32.0, random=lambda: 0.0)


class HandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Trial runs the reactor in this thread: say so, whether or not a
        # test has run it yet.
        threadable.registerAsIOThread()
        self.reactor = FakeReactor()
        self.gateway = ScriptedGateway()
        self.logger = logging.getLogger(f"app.{self.id()}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)

    def handler(self, gateway: ScriptedGateway | None = None, **kwargs: Any) -> LokiHandler:
        self.http = stub(gateway or self.gateway)
        self.stderr = io.StringIO()
        options: dict[str, Any] = {
            "token": "tok-1",
            "labels": {"service_name": "shop"},
            "backoff": NO_JITTER,
            "refusal_backoff": REFUSAL_PAUSES,
            "report_to": self.stderr,
            "reactor": self.reactor,
            "http": self.http,
            **kwargs,
        }
        handler = LokiHandler(URL, **options)
        self.reactor.run_from_threads()  # it starts itself on the reactor thread
        self.logger.addHandler(handler)
        self.addCleanup(self.logger.removeHandler, handler)
        return handler

    def advance(self, seconds: float) -> None:
        self.reactor.run_from_threads()
        self.reactor.advance(seconds)
        self.http.flush()

    def lines(self, index: int = 0) -> list[tuple[dict[str, str], list[Any]]]:
        doc = self.gateway.seen[index].loki()
        return [(s["stream"], v) for s in doc["streams"] for v in s["values"]]

    def test_batch(self) -> None:
        """
        Records are sent every C{flush_interval}, gzipped JSON to the Loki
        push path with the token and tenant: one stream per label set
        (static labels, level and logger), the formatted line, the
        record's time in nanoseconds, and C{extra} as structured metadata.
        """
        handler = self.handler(tenant="team-a")
        self.logger.info("hello %s", "world", extra={"request_id": "r-1", "user.id": 7})
        self.logger.error("boom")
        self.assertEqual(self.gateway.seen, [])
        self.advance(1.0)
        [seen] = self.gateway.seen
        self.assertEqual((seen.method, seen.path), (b"POST", b"/loki/api/v1/push"))
        self.assertEqual(seen.headers["authorization"], "Bearer tok-1")
        self.assertEqual(seen.headers["x-scope-orgid"], "team-a")
        self.assertEqual(seen.headers["content-type"], "application/json")
        self.assertEqual(seen.headers["content-encoding"], "gzip")
        [(info_stream, info), (error_stream, error)] = self.lines()
        name = self.logger.name
        self.assertEqual(info_stream, {"service_name": "shop", "level": "INFO", "logger": name})
        self.assertEqual(error_stream["level"], "ERROR")
        self.assertEqual(info[1:], ["hello world", {"request_id": "r-1", "user_id": "7"}])
        self.assertEqual(error[1:], ["boom"])
        self.assertLess(abs(int(info[0]) / 1e9 - time.time()), 60)
        self.assertEqual(handler.counters.items_delivered, 2)
        self.advance(1.0)
        self.assertEqual(len(self.gateway.seen), 1)  # nothing new, nothing sent

    def test_label_fields(self) -> None:
        """
        Labels come from the record attributes named; metadata can be
        left out; uncompressed bodies are plain JSON.
        """
        self.handler(
            label_fields={"lvl": "levelname", "fn": "funcName"},
            labels={},
            metadata=False,
            compress=False,
        )
        self.logger.warning("w", extra={"dropped": "yes"})
        self.advance(1.0)
        self.assertNotIn("content-encoding", self.gateway.seen[0].headers)
        [(stream, value)] = self.lines()
        self.assertEqual(stream, {"lvl": "WARNING", "fn": "test_label_fields"})
        self.assertEqual(value[1:], ["w"])

    def test_bad_labels_refused(self) -> None:
        self.assertRaises(ValueError, LokiHandler, URL, labels={"bad-name": "x"})
        self.assertRaises(ValueError, LokiHandler, URL, labels={}, label_fields={})

    def test_full_batch_goes_at_once(self) -> None:
        """
        C{batch_size} records wake the reactor thread (once), without
        waiting for the timer.
        """
        handler = self.handler(batch_size=3, flush_interval=60.0)
        for i in range(4):
            self.logger.info("line %d", i)
        self.assertEqual(len(self.reactor.from_threads), 1)
        self.reactor.run_from_threads()
        self.http.flush()
        self.assertEqual([v[1] for _, v in self.lines()], ["line 0", "line 1", "line 2"])
        self.assertEqual(handler.queued, 1)

    def test_bounded_queue(self) -> None:
        """
        Past C{max_queue}, new records are dropped and counted; emit
        returns at once whatever the reactor thread is doing.
        """
        handler = self.handler(max_queue=3, batch_size=100)
        for i in range(5):
            self.logger.info("line %d", i)
        self.assertEqual((handler.queued, handler.counters.dropped), (3, 2))
        self.advance(1.0)
        self.assertEqual([v[1] for _, v in self.lines()], ["line 0", "line 1", "line 2"])

    def test_emit_from_other_threads(self) -> None:
        """
        Threads other than the reactor's only append to the queue: a
        thousand records from four threads while nothing runs the reactor
        are all queued, and sent in order per thread.
        """
        handler = self.handler(max_queue=10_000, batch_size=5000)

        def work(n: int) -> None:
            for i in range(250):
                self.logger.info("t%d %d", n, i)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(handler.queued, 1000)
        self.advance(1.0)
        lines = [v[1] for _, v in self.lines()]
        self.assertEqual(len(lines), 1000)
        for n in range(4):
            mine = [int(line.split()[1]) for line in lines if line.startswith(f"t{n} ")]
            self.assertEqual(mine, list(range(250)))

    def test_retry_keeps_the_batch(self) -> None:
        """
        A batch that failed is sent again, as it was, after the backoff;
        records logged meanwhile wait their turn in the queue.
        """
        self.gateway = ScriptedGateway(respond(503), respond(429, {"Retry-After": "5"}))
        self.gateway.script.append(respond(204))
        handler = self.handler()
        self.logger.info("first")
        self.advance(1.0)
        self.logger.info("second")
        self.advance(1.0)  # the retry, one second after the failure
        self.assertEqual(len(self.gateway.seen), 2)
        self.assertEqual(self.gateway.seen[1].body, self.gateway.seen[0].body)
        self.advance(4.9)
        self.assertEqual(len(self.gateway.seen), 2)
        self.advance(0.1)
        self.assertEqual([v[1] for _, v in self.lines(2)], ["first"])
        self.advance(1.0)
        self.assertEqual([v[1] for _, v in self.lines(3)], ["second"])
        self.assertEqual((handler.counters.failed, handler.counters.items_delivered), (2, 2))

    def test_refused_batch_dropped(self) -> None:
        """
        A batch the gateway refuses for good is dropped and counted, and
        the next one waits for the pause after a refusal.
        """
        self.gateway = ScriptedGateway(respond(400, body=b"bad stream"), respond(204))
        handler = self.handler()
        self.logger.info("a")
        self.logger.info("b")
        self.advance(1.0)
        self.assertEqual((handler.counters.rejected, handler.counters.items_rejected), (1, 2))
        self.logger.info("c")
        self.advance(1.0)
        self.assertEqual(len(self.gateway.seen), 1)
        self.advance(1.0)
        self.assertEqual([v[1] for _, v in self.lines(1)], ["c"])

    def test_long_lines_cut(self) -> None:
        handler = self.handler(max_line_bytes=100)
        self.logger.info("é" * 80)
        self.advance(1.0)
        [(_, value)] = self.lines()
        self.assertEqual(value[1], "é" * 50)
        self.assertEqual(handler.counters.truncated, 1)

    def test_close_flushes(self) -> None:
        """
        Closing sends everything queued, in batches; records logged after
        are dropped and counted.
        """
        handler = self.handler(batch_size=2, flush_interval=60.0)
        for i in range(5):
            self.logger.info("line %d", i)
        self.reactor.from_threads.clear()  # the wake-ups: the close does it all
        handler.close()
        for _ in range(3):
            self.http.flush()
        self.assertEqual(len(self.gateway.seen), 3)
        self.assertEqual([len(self.lines(i)) for i in range(3)], [2, 2, 1])
        self.logger.info("too late")
        self.assertEqual(handler.counters.dropped, 1)
        self.assertEqual(self.reactor.triggers, {})

    def test_close_from_another_thread(self) -> None:
        """
        From an application thread, close waits until the reactor thread
        has sent what was queued.
        """
        handler = self.handler(flush_interval=60.0)
        self.logger.info("last words")
        closing = threading.Thread(target=handler.close)
        closing.start()
        deadline = time.monotonic() + 10
        while closing.is_alive() and time.monotonic() < deadline:
            self.reactor.run_from_threads()
            self.http.flush()
            closing.join(0.01)
        self.assertFalse(closing.is_alive())
        self.assertEqual([v[1] for _, v in self.lines()], ["last words"])

    def test_close_without_a_reactor(self) -> None:
        """
        From an application thread with no reactor running, close returns
        at once and counts what could not be sent.
        """
        handler = self.handler(flush_interval=60.0)
        self.logger.info("never sent")
        self.reactor.running = False
        closing = threading.Thread(target=handler.close)
        closing.start()
        closing.join(2)
        self.assertFalse(closing.is_alive())
        self.assertEqual(handler.counters.dropped, 1)

    def test_close_waits_for_the_batch_in_flight(self) -> None:
        """
        A batch in flight is answered before the last one goes.
        """
        self.gateway = ScriptedGateway(HANG, respond(204))
        handler = self.handler(timeout=60.0)
        self.logger.info("first")
        self.advance(1.0)
        self.logger.info("second")
        d = handler.stop()
        self.http.flush()
        self.assertEqual(len(self.gateway.seen), 1)
        [request] = self.gateway.hanging
        request.setResponseCode(204)
        request.finish()
        self.http.flush()
        self.successResultOf(d)
        self.assertEqual([v[1] for _, v in self.lines(1)], ["second"])

    def test_close_sends_a_failed_batch_once(self) -> None:
        """
        At stop, a batch waiting for its retry gets one more attempt; if
        that fails too, it and everything queued are dropped and counted,
        and the stop ends.
        """
        self.gateway = ScriptedGateway(respond(503))
        handler = self.handler()
        self.logger.info("first")
        self.advance(1.0)
        self.logger.info("second")
        self.logger.info("third")
        d = handler.stop()
        self.http.flush()
        self.successResultOf(d)
        self.assertEqual(len(self.gateway.seen), 2)
        self.assertEqual(handler.counters.dropped, 3)
        self.advance(100.0)
        self.assertEqual(len(self.gateway.seen), 2)

    def test_stop_is_bounded(self) -> None:
        self.gateway = ScriptedGateway(HANG)
        handler = self.handler(timeout=60.0, stop_timeout=2.0)
        self.logger.info("first")
        d = handler.stop()
        self.http.flush()
        self.assertNoResult(d)
        self.advance(2.0)
        self.successResultOf(d)
        self.assertEqual(handler.counters.errors, 1)

    def test_flushed_when_the_reactor_stops(self) -> None:
        self.handler(flush_interval=60.0)
        self.logger.info("bye")
        d = self.reactor.shutdown()
        self.http.flush()
        self.successResultOf(d)
        self.assertEqual([v[1] for _, v in self.lines()], ["bye"])

    def test_emit_errors_go_to_handle_error(self) -> None:
        """
        A record that cannot be formatted is the stdlib's handleError's
        business; the handler goes on.
        """
        handler = self.handler()
        errors: list[logging.LogRecord] = []
        handler.handleError = errors.append  # type: ignore[method-assign,assignment]
        self.logger.info("%d", "not a number")
        self.logger.info("fine")
        self.advance(1.0)
        self.assertEqual(len(errors), 1)
        self.assertEqual([v[1] for _, v in self.lines()], ["fine"])

    def test_loop_survives_errors(self) -> None:
        """
        A failure while building a batch is logged and counted; the timer
        keeps running.
        """
        handler = self.handler()
        calls: list[int] = []
        original = handler._payload

        def payload(batch: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("bug")
            return original(batch)

        handler._payload = payload  # type: ignore[method-assign]
        self.logger.info("lost")
        self.advance(1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.logger.info("sent")
        self.advance(1.0)
        self.assertEqual([v[1] for _, v in self.lines()], ["sent"])
        self.assertEqual(handler.counters.errors, 1)


class BodyTests(SynchronousTestCase):
    def test_metadata_names(self) -> None:
        self.assertEqual(metadata_name("user.id"), "user_id")
        self.assertEqual(metadata_name("1st"), "_1st")
        self.assertEqual(metadata_name("ok_name"), "ok_name")

    def test_surrogates_replaced(self) -> None:
        """
        A line with a lone surrogate (a bad file name) is sent with it
        replaced, not refused by the gateway for not being UTF-8.
        """
        from sealgw.client._streams import Entry

        body = loki_body([Entry((("a", "b"),), 1, "bad \udcff name", None)])
        body.decode("utf-8")
        self.assertIn(b"bad ? name", body)
