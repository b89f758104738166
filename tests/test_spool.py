"""
The spool on a Clock: answers only after the fsync, outages and recovery,
order, dead letters, a full spool, drop_oldest, group commit, restarts,
torn records, spools of stopped workers, metrics and health.

Disk work runs in the test's thread when it is called (or when the test
says, for the tests about what waits for what); fsyncs are counted, not
made.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any, Optional

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sealgw.config import HTTPUpstreamConfig, RetryConfig
from sealgw.config._spool import SpoolConfig
from sealgw.relay import (
    Delivery,
    IUpstream,
    RelayMetrics,
    UpstreamRejected,
    UpstreamsService,
    UpstreamUnavailable,
    build_upstreams,
)
from sealgw.signals.push import Push
from sealgw.spool import SPOOLED, SpoolUpstream
from sealgw.spool._dead import DEAD_LETTERS
from sealgw.spool._disk import SpoolDirectory, worker_directory
from sealgw.spool._format import RECORD_MAGIC, frame, seed, segment_header
from sealgw.spool._metrics import spool_metrics
from sealgw.spool._upstream import LOCK_ATTEMPTS, LOCK_RETRY
from sealgw.testing import MemoryUpstream

RETRY = RetryConfig(attempts=2, initial_backoff=0.1, max_backoff=1.0, deadline=5.0)
DOWN = UpstreamUnavailable(503, "cannot reach upstream")


class Threads:
    """
    The spool's worker threads, in the test's thread: work runs when it is
    handed over, or, while C{held}, when the test calls L{run}.
    """

    def __init__(self) -> None:
        self.held = False
        self.queue: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if not self.held:
            return maybeDeferred(f, *args)
        d: Deferred[Any] = Deferred()
        self.queue.append((f, args, d))
        return d

    def run(self) -> int:
        ran = 0
        while self.queue:
            f, args, d = self.queue.pop(0)
            ran += 1
            try:
                result = f(*args)
            except BaseException:
                d.errback(Failure())
            else:
                d.callback(result)
        return ran


def push(n: int, size: int = 10, at: float = 0.0) -> Push:
    return Push(
        signal="remote_write",
        tenant="team-a",
        body=f"push-{n}:".encode() + b"x" * size,
        content_type="application/x-protobuf",
        content_encoding="snappy",
        path="/api/v1/push",
        extra_headers={"X-Prometheus-Remote-Write-Version": "0.1.0"},
        received_at=at,
    )


def numbers(pushes: list[Push]) -> list[int]:
    return [int(p.body.split(b":")[0].split(b"-")[1]) for p in pushes]


class SpoolTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.threads = Threads()
        self.fsyncs: list[int] = []
        self.directory = os.path.abspath(self.mktemp())

    def spool(
        self,
        inner: Optional[MemoryUpstream] = None,
        worker: Any = None,
        start: bool = True,
        segment_size: Optional[int] = None,
        **settings: Any,
    ) -> SpoolUpstream:
        # Closing a spool in these tests ends its deliveries at once, as
        # before drain_grace; the drain is tested on its own.
        settings.setdefault("drain_grace", 0.0)
        config = SpoolConfig(directory=self.directory, **settings)
        spool = SpoolUpstream(
            inner if inner is not None else MemoryUpstream("mimir"),
            config,
            self.clock,
            retry=RETRY,
            run_in_thread=self.threads,
            worker=worker,
            random=lambda: 0.5,
            fsync=self.fsyncs.append,
            segment_size=segment_size,
        )
        self.addCleanup(self.close, spool)
        if start:
            self.successResultOf(spool.start())
        return spool

    def close(self, spool: SpoolUpstream) -> None:
        self.threads.held = False
        self.threads.run()
        spool.close()
        self.threads.run()

    def accepted(self, spool: SpoolUpstream, *pushes: Push) -> None:
        for p in pushes:
            self.assertEqual(self.successResultOf(spool.deliver(p)), SPOOLED)

    def segments(self, worker: str = "worker-0") -> list[int]:
        return SpoolDirectory(os.path.join(self.directory, worker)).segments()

    def settle(self, seconds: float = 60.0, step: float = 0.05) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)


class InterfaceTests(SpoolTestCase):
    def test_is_an_upstream(self) -> None:
        spool = self.spool()
        verifyObject(IUpstream, spool)
        self.assertEqual(spool.name, "mimir")

    def test_worker_directory(self) -> None:
        self.assertEqual(worker_directory(None), "worker-0")
        self.assertEqual(worker_directory(3), "worker-3")
        self.assertEqual(worker_directory("blue"), "blue")
        for bad in ["", ".", "..", "a/b", ".hidden"]:
            self.assertRaises(ValueError, worker_directory, bad)


class WriteTests(SpoolTestCase):
    def test_answered_after_the_fsync(self) -> None:
        """
        A push is answered only once its record is written and fsynced;
        then it is forwarded.
        """
        inner = MemoryUpstream("mimir")
        spool = self.spool(inner)
        self.threads.held = True
        answer = spool.deliver(push(1))
        self.assertNoResult(answer)
        self.assertEqual(self.fsyncs, [])
        self.threads.run()
        self.assertEqual(self.successResultOf(answer), SPOOLED)
        # The segment file and its folder (a new segment).
        self.assertEqual(len(self.fsyncs), 2)
        self.threads.run()
        self.assertEqual(numbers(inner.delivered), [1])
        delivered = inner.delivered[0]
        self.assertEqual(delivered.body, push(1).body)
        self.assertEqual(delivered.extra_headers, push(1).extra_headers)
        self.assertEqual(delivered.tenant, "team-a")

    def test_always_shares_an_fsync_only_while_one_runs(self) -> None:
        """
        fsync: always writes at once; pushes that arrive during a write
        share the next one.
        """
        spool = self.spool()
        self.threads.held = True
        first = spool.deliver(push(1))
        self.assertEqual(len(self.threads.queue), 1)
        second, third = spool.deliver(push(2)), spool.deliver(push(3))
        self.assertEqual(len(self.threads.queue), 1)
        f, args, d = self.threads.queue.pop(0)
        d.callback(f(*args))
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertNoResult(third)
        self.threads.held = False
        self.threads.run()
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(spool.counts.writes, 2)

    def test_batch_group_commit(self) -> None:
        """
        fsync: batch gathers for fsync_interval; the whole group is answered
        after its one fsync.
        """
        spool = self.spool(fsync="batch", fsync_interval=0.01)
        answers = [spool.deliver(push(n)) for n in range(5)]
        self.clock.advance(0.005)
        answers.append(spool.deliver(push(5)))
        for answer in answers:
            self.assertNoResult(answer)
        self.assertEqual(self.fsyncs, [])
        self.threads.held = True
        self.clock.advance(0.005)
        for answer in answers:
            self.assertNoResult(answer)
        self.threads.run()
        for answer in answers:
            self.assertEqual(self.successResultOf(answer), SPOOLED)
        self.assertEqual(spool.counts.writes, 1)
        # A later group is a second write and a single fsync (the segment
        # already exists).
        fsyncs = len(self.fsyncs)
        self.threads.held = False
        later = spool.deliver(push(6))
        self.assertNoResult(later)
        self.clock.advance(0.01)
        self.successResultOf(later)
        self.assertEqual(spool.counts.writes, 2)
        self.assertEqual(len(self.fsyncs), fsyncs + 1)

    def test_client_gone_write_goes_on(self) -> None:
        inner = MemoryUpstream("mimir")
        spool = self.spool(inner)
        self.threads.held = True
        answer = spool.deliver(push(1))
        answer.cancel()
        self.failureResultOf(answer)
        self.threads.run()
        self.threads.run()
        self.assertEqual(numbers(inner.delivered), [1])

    def test_write_failure_is_503_and_the_next_write_starts_a_segment(self) -> None:
        broken = [True]

        def fsync(fd: int) -> None:
            if broken[0]:
                raise OSError(5, "Input/output error")

        spool = self.spool(MemoryUpstream("mimir", [DOWN] * 100))
        spool.directory._fsync = fsync
        with capturedLogs() as events:
            failure = self.failureResultOf(spool.deliver(push(1)), UpstreamUnavailable)
        self.assertEqual(failure.value.status, 503)
        self.assertIn("cannot write to disk: Input/output error", failure.value.reason)
        self.assertIn("cannot write", " ".join(formatEvent(e) for e in events))
        health = spool.health()
        self.assertEqual(health["status"], "degraded")
        self.assertIn("Input/output error", health["spool"]["error"])
        broken[0] = False
        self.accepted(spool, push(2))
        self.assertNotIn("error", spool.health()["spool"])

    def test_pushes_before_start_wait(self) -> None:
        inner = MemoryUpstream("mimir")
        spool = self.spool(inner, start=False)
        answer = spool.deliver(push(1))
        self.assertNoResult(answer)
        self.assertEqual(spool.state(), "starting")
        self.successResultOf(spool.start())
        self.successResultOf(answer)
        self.assertEqual(numbers(inner.delivered), [1])

    def test_directory_in_use_by_another_process(self) -> None:
        """
        A folder whose lock another process holds is asked for again for a
        while (a worker being replaced), then the spool gives up and says
        why instead of keeping pushes waiting.
        """
        self.spool()
        second = self.spool(start=False)
        started = second.start()
        answer = second.deliver(push(1))
        self.settle(LOCK_ATTEMPTS * LOCK_RETRY + 1)
        self.successResultOf(started)
        self.assertEqual(second.state(), "failed")
        failure = self.failureResultOf(answer, UpstreamUnavailable)
        self.assertIn("in use by another process", failure.value.reason)

    def test_directory_released_in_time(self) -> None:
        first = self.spool()
        inner = MemoryUpstream("mimir")
        second = self.spool(inner, start=False)
        started = second.start()
        answer = second.deliver(push(1))
        self.clock.advance(1)
        self.successResultOf(first.close())
        self.clock.advance(LOCK_RETRY)
        self.successResultOf(started)
        self.successResultOf(answer)
        self.assertEqual(numbers(inner.delivered), [1])

    def test_unopenable_directory(self) -> None:
        with open(self.directory, "w") as f:
            f.write("a file, not a folder")
        with capturedLogs() as events:
            spool = self.spool()
        self.assertTrue(any("cannot open" in formatEvent(e) for e in events))
        failure = self.failureResultOf(spool.deliver(push(1)), UpstreamUnavailable)
        self.assertEqual(failure.value.status, 503)
        self.assertIn("spool unavailable", failure.value.reason)
        self.assertEqual(spool.health()["status"], "degraded")
        self.assertEqual(spool.state(), "failed")


class CloseTests(SpoolTestCase):
    def test_close_after_the_worker_threads_stopped(self) -> None:
        """
        The gateway stops its worker threads right after asking upstreams to
        close: what closing still writes (the cursor) goes to the reactor's
        own pool.
        """
        reactor_pool: list[str] = []

        class Pool:
            def callInThreadWithCallback(
                self, done: Callable[[bool, Any], None], f: Callable[..., Any], *args: Any
            ) -> None:
                reactor_pool.append(f.__name__)
                done(True, f(*args))

        class Reactor(Clock):
            def getThreadPool(self) -> Pool:
                return Pool()

            def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
                f(*args)

        self.clock = Reactor()
        inner = MemoryUpstream("mimir", [DOWN] * 100)
        spool = self.spool(inner)
        self.accepted(spool, push(1))
        # The worker threads stop: nothing handed to them runs any more.
        self.threads.held = True
        closed = spool.close()
        self.successResultOf(closed)
        self.assertEqual(self.threads.queue, [])
        self.assertIn("write_cursor", reactor_pool)
        self.assertIn("unlock", reactor_pool)
        self.assertTrue(inner.closed)
        self.assertFalse(SpoolDirectory(spool.directory.path).in_use())


class ForwardTests(SpoolTestCase):
    def test_outage_then_recovery_in_order(self) -> None:
        """
        Pushes are answered while the upstream is down, and delivered in
        order once it is back, each once; the segments are then deleted.
        """
        inner = MemoryUpstream("mimir", [DOWN] * 6)
        spool = self.spool(inner, concurrency=1, segment_size=200)
        self.accepted(spool, *[push(n) for n in range(10)])
        self.assertEqual(inner.delivered, [])
        self.assertEqual(spool.state(), "retrying")
        self.assertEqual(spool.health()["spool"]["records"], 10)
        self.assertGreater(len(self.segments()), 1)
        self.settle()
        self.assertEqual(numbers(inner.delivered), list(range(10)))
        self.assertEqual(spool.counts.forwarded, 10)
        self.assertEqual(spool.counts.retried, 6)
        self.assertEqual(spool.state(), "idle")
        self.assertEqual(spool.gauges()["records"], 0)
        # Only the open segment is left.
        self.assertEqual(len(self.segments()), 1)

    def test_retry_after_is_honoured(self) -> None:
        inner = MemoryUpstream("mimir", [UpstreamUnavailable(503, "busy", retry_after=7.0)])
        spool = self.spool(inner)
        self.accepted(spool, push(1))
        self.clock.advance(6.9)
        self.assertEqual(inner.delivered, [])
        self.clock.advance(0.2)
        self.assertEqual(numbers(inner.delivered), [1])

    def test_the_inner_retries_get_a_fresh_deadline(self) -> None:
        """
        A record delivered long after it arrived still gets the relay's
        retries: the inner upstream sees the time it is handed over.
        """
        inner = MemoryUpstream("mimir", [DOWN])
        spool = self.spool(inner)
        old = self.clock.seconds() - 3600
        self.accepted(spool, push(1, at=old))
        self.settle(5)
        self.assertEqual(len(inner.pushes), 2)
        self.assertGreater(inner.pushes[0].received_at, old)

    def test_concurrency_is_bounded_and_dispatch_is_in_order(self) -> None:
        held: list[Deferred[Delivery]] = [Deferred() for _ in range(10)]
        inner = MemoryUpstream("mimir", held)
        spool = self.spool(inner, concurrency=3)
        self.accepted(spool, *[push(n) for n in range(10)])
        self.assertEqual(numbers(inner.pushes), [0, 1, 2])
        held[1].callback(SPOOLED)
        self.assertEqual(numbers(inner.pushes), [0, 1, 2, 3])
        for d in held:
            if not d.called:
                d.callback(SPOOLED)
        self.assertEqual(numbers(inner.pushes), list(range(10)))
        self.assertEqual(sorted(numbers(inner.delivered)), list(range(10)))

    def test_no_new_dispatch_while_backing_off(self) -> None:
        """
        While a record waits to be tried again, no later one is sent ahead
        of it.
        """
        inner = MemoryUpstream("mimir", [DOWN])
        spool = self.spool(inner, concurrency=4)
        self.accepted(spool, push(0))
        self.accepted(spool, push(1), push(2))
        self.assertEqual(numbers(inner.pushes), [0])
        self.settle(2)
        self.assertEqual(numbers(inner.delivered), [0, 1, 2])

    def test_no_new_dispatch_while_backing_off_after_a_read(self) -> None:
        """
        Records read back together are still started one after the other:
        the first one's failure holds the rest.
        """
        left = self.spool(MemoryUpstream("mimir", [DOWN] * 1000))
        self.accepted(left, push(0), push(1), push(2))
        self.successResultOf(left.close())
        inner = MemoryUpstream("mimir", [DOWN])
        self.spool(inner, concurrency=4)
        self.assertEqual(numbers(inner.pushes), [0])
        self.settle(2)
        self.assertEqual(numbers(inner.delivered), [0, 1, 2])

    def test_rejected_record_is_dead_lettered_and_the_rest_flow(self) -> None:
        inner = MemoryUpstream(
            "mimir",
            [DOWN, DOWN, UpstreamRejected(400, "out of order sample")],
        )
        spool = self.spool(inner, concurrency=1)
        with capturedLogs() as events:
            self.accepted(spool, push(1), push(2), push(3))
            self.settle(10)
        self.assertEqual(numbers(inner.delivered), [2, 3])
        self.assertEqual(spool.counts.dead_lettered, 1)
        path = os.path.join(self.directory, "worker-0", DEAD_LETTERS)
        with open(path) as f:
            letters = [json.loads(line) for line in f]
        self.assertEqual(len(letters), 1)
        letter = letters[0]
        self.assertEqual(letter["status"], 400)
        self.assertEqual(letter["reason"], "out of order sample")
        self.assertEqual(letter["upstream"], "mimir")
        self.assertEqual(letter["tenant"], "team-a")
        self.assertEqual(Push.from_bytes(base64.b64decode(letter["push"])).body, push(1).body)
        self.assertTrue(any("out of order sample" in formatEvent(e) for e in events))

    def test_unreadable_record_is_dead_lettered(self) -> None:
        """
        A record that checks out but is not a push (written by something
        else) goes to the dead letters, never upstream.
        """
        path = os.path.join(self.directory, "worker-0")
        os.makedirs(path)
        salt = b"s" * 16
        with open(os.path.join(path, f"{1:020d}.seg"), "wb") as f:
            f.write(segment_header(salt) + frame(b"not a push at all", seed(salt)))
        inner2 = MemoryUpstream("mimir")
        spool2 = self.spool(inner2)
        self.settle(1)
        self.assertEqual(inner2.pushes, [])
        self.assertEqual(spool2.counts.dead_lettered, 1)
        with open(os.path.join(path, DEAD_LETTERS)) as f:
            letter = json.loads(f.readline())
        self.assertIsNone(letter["status"])
        self.assertIn("not a sealgw push", letter["reason"])


class DiskTroubleTests(SpoolTestCase):
    def test_read_failure_is_tried_again(self) -> None:
        left = self.spool(MemoryUpstream("mimir", [DOWN] * 100))
        self.accepted(left, *[push(n) for n in range(3)])
        self.successResultOf(left.close())
        inner = MemoryUpstream("mimir")
        spool = self.spool(inner, start=False)
        real = spool.directory.read
        calls: list[int] = []

        def read(*args: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise OSError(5, "Input/output error")
            return real(*args)

        spool.directory.read = read  # type: ignore[method-assign,assignment]
        with capturedLogs() as events:
            self.successResultOf(spool.start())
        self.assertEqual(inner.delivered, [])
        self.assertTrue(any("cannot read segment" in formatEvent(e) for e in events))
        self.clock.advance(RETRY.max_backoff)
        self.assertEqual(numbers(inner.delivered), [0, 1, 2])

    def test_dead_letter_write_failure_is_tried_again(self) -> None:
        inner = MemoryUpstream("mimir", [UpstreamRejected(400, "bad")])
        spool = self.spool(inner, start=False)
        real = spool.dead_letters.append
        calls: list[int] = []

        def dead_letter(letter: Any) -> int:
            calls.append(1)
            if len(calls) == 1:
                raise OSError(28, "No space left on device")
            return real(letter)

        spool.dead_letters.append = dead_letter  # type: ignore[method-assign]
        self.successResultOf(spool.start())
        self.accepted(spool, push(1), push(2))
        self.assertEqual(spool.counts.dead_lettered, 0)
        self.clock.advance(RETRY.max_backoff)
        self.assertEqual(spool.counts.dead_lettered, 1)
        self.assertEqual(numbers(inner.delivered), [2])


class FullTests(SpoolTestCase):
    def test_full_refuses_with_retry_after_and_recovers(self) -> None:
        inner = MemoryUpstream("mimir", [DOWN] * 1000)
        spool = self.spool(inner, max_size=20_000, concurrency=1)
        accepted = 0
        with capturedLogs() as events:
            while True:
                result = spool.deliver(push(accepted, size=1000))
                if result.called and isinstance(result.result, Failure):
                    failure = self.failureResultOf(result, UpstreamUnavailable)
                    break
                self.successResultOf(result)
                accepted += 1
        self.assertGreater(accepted, 5)
        self.assertEqual(failure.value.status, 503)
        self.assertIn("spool is full", failure.value.reason)
        self.assertEqual(failure.value.retry_after, RETRY.max_backoff)
        self.assertEqual(spool.counts.refused, 1)
        self.assertEqual(spool.state(), "full")
        self.assertEqual(spool.health()["status"], "degraded")
        self.assertEqual(sum("is full" in formatEvent(e) for e in events), 1)
        self.assertLessEqual(spool.disk_bytes(), 20_000)
        # The upstream comes back: the spool drains and takes pushes again.
        inner._outcomes.clear()
        self.settle(5)
        self.assertEqual(numbers(inner.delivered), list(range(accepted)))
        self.accepted(spool, push(accepted, size=1000))
        self.assertNotEqual(spool.state(), "full")
        # Drained to (nearly) nothing on disk: a full spool can empty.
        self.settle(5)
        self.accepted(spool, *[push(accepted + 1 + n, size=1000) for n in range(accepted)])

    def test_too_old_refuses(self) -> None:
        inner = MemoryUpstream("mimir", [DOWN] * 1000)
        spool = self.spool(inner, max_age=60.0)
        self.accepted(spool, push(1, at=self.clock.seconds()))
        self.clock.advance(61)
        failure = self.failureResultOf(spool.deliver(push(2)), UpstreamUnavailable)
        self.assertIn("oldest record is 61s old", failure.value.reason)
        self.assertGreaterEqual(spool.gauges()["oldest_age_seconds"], 61)

    def test_drop_oldest(self) -> None:
        """
        when_full: drop_oldest never refuses for space: the oldest segments
        go, counted and logged, and what is left is delivered.
        """
        inner = MemoryUpstream("mimir", [DOWN] * 1000)
        spool = self.spool(
            inner, max_size=20_000, when_full="drop_oldest", concurrency=1, segment_size=2500
        )
        with capturedLogs() as events:
            self.accepted(spool, *[push(n, size=1000) for n in range(60)])
        self.assertGreater(spool.counts.dropped, 0)
        self.assertEqual(spool.counts.refused, 0)
        self.assertLessEqual(spool.disk_bytes(), 20_000)
        self.assertTrue(any("dropped" in formatEvent(e) for e in events))
        inner._outcomes.clear()
        self.settle(10)
        got = numbers(inner.delivered)
        # The newest arrive, in order, and with the dropped ones (the one in
        # flight when its segment went included) the count adds up.
        self.assertEqual(got[-1], 59)
        self.assertEqual(got, sorted(got))
        self.assertEqual(len(set(got)) + spool.counts.dropped, 60)

    def test_drop_expired(self) -> None:
        inner = MemoryUpstream("mimir", [DOWN] * 1000)
        spool = self.spool(
            inner, max_age=60.0, when_full="drop_oldest", concurrency=1, segment_size=1
        )
        self.accepted(spool, push(1, at=self.clock.seconds()))
        self.clock.advance(30)
        self.accepted(spool, push(2, at=self.clock.seconds()))
        self.clock.advance(40)
        # Housekeeping runs every 30 s.
        self.settle(30, step=1.0)
        self.assertEqual(spool.counts.dropped, 1)
        inner._outcomes.clear()
        self.settle(5)
        self.assertEqual(numbers(inner.delivered)[-1], 2)
        self.assertNotIn(1, numbers(inner.delivered)[1:])


class RetryAfterTests(SpoolTestCase):
    """
    Every 503 the spool gives says when to come back: the upstream's
    max_backoff, the pace of the forwarder's own retries, at least 1 s.
    """

    def refusal(self, answer: Deferred[Delivery]) -> UpstreamUnavailable:
        failure = self.failureResultOf(answer, UpstreamUnavailable)
        error: UpstreamUnavailable = failure.value
        self.assertEqual(error.status, 503)
        return error

    def test_full(self) -> None:
        spool = self.spool(MemoryUpstream("mimir", [DOWN] * 1000), max_size=4_000)
        self.accepted(spool, push(1, size=1000), push(2, size=1000))
        error = self.refusal(spool.deliver(push(3, size=1000)))
        self.assertIn("spool is full", error.reason)
        self.assertEqual(error.retry_after, RETRY.max_backoff)

    def test_too_old(self) -> None:
        spool = self.spool(MemoryUpstream("mimir", [DOWN] * 1000), max_age=60.0)
        self.accepted(spool, push(1, at=self.clock.seconds()))
        self.clock.advance(61)
        self.assertEqual(self.refusal(spool.deliver(push(2))).retry_after, RETRY.max_backoff)

    def test_cannot_write(self) -> None:
        spool = self.spool()

        def fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        spool.directory._fsync = fsync
        with capturedLogs():
            error = self.refusal(spool.deliver(push(1)))
        self.assertIn("cannot write to disk", error.reason)
        self.assertEqual(error.retry_after, RETRY.max_backoff)

    def test_cannot_be_opened(self) -> None:
        with open(self.directory, "w") as f:
            f.write("a file, not a folder")
        with capturedLogs():
            spool = self.spool()
        error = self.refusal(spool.deliver(push(1)))
        self.assertIn("spool unavailable", error.reason)
        self.assertEqual(error.retry_after, RETRY.max_backoff)

    def test_waiting_when_it_could_not_be_opened(self) -> None:
        self.spool()
        second = self.spool(start=False)
        second.start()
        answer = second.deliver(push(1))
        with capturedLogs():
            self.settle(LOCK_ATTEMPTS * LOCK_RETRY + 1)
        self.assertEqual(self.refusal(answer).retry_after, RETRY.max_backoff)

    def test_stopping(self) -> None:
        spool = self.spool()
        spool.close()
        self.threads.run()
        error = self.refusal(spool.deliver(push(1)))
        self.assertEqual(error.reason, "the gateway is stopping")
        self.assertEqual(error.retry_after, RETRY.max_backoff)

    def test_stopping_before_it_started(self) -> None:
        spool = self.spool(start=False)
        answer = spool.deliver(push(1))
        spool.close()
        self.assertEqual(self.refusal(answer).retry_after, RETRY.max_backoff)

    def test_at_least_a_second(self) -> None:
        for max_backoff, expected in ((0.2, 1.0), (30.0, 30.0)):
            spool = SpoolUpstream(
                MemoryUpstream("mimir"),
                SpoolConfig(directory=self.directory),
                self.clock,
                retry=RetryConfig(initial_backoff=0.1, max_backoff=max_backoff),
                run_in_thread=self.threads,
            )
            spool.close()
            self.assertEqual(self.refusal(spool.deliver(push(1))).retry_after, expected)


class RestartTests(SpoolTestCase):
    def test_restart_delivers_what_was_left(self) -> None:
        spool = self.spool(MemoryUpstream("mimir", [DOWN] * 1000))
        self.accepted(spool, *[push(n) for n in range(5)])
        self.successResultOf(spool.close())
        inner = MemoryUpstream("mimir")
        with capturedLogs() as events:
            self.spool(inner)
        self.assertEqual(numbers(inner.delivered), list(range(5)))
        self.assertTrue(any("5 record(s)" in formatEvent(e) for e in events))

    def test_restart_skips_what_was_delivered(self) -> None:
        hang: Deferred[Any] = Deferred()
        inner = MemoryUpstream("mimir", [SPOOLED, SPOOLED, hang])
        spool = self.spool(inner, concurrency=1)
        self.accepted(spool, *[push(n) for n in range(5)])
        self.assertEqual(numbers(inner.delivered), [0, 1])
        self.successResultOf(spool.close())
        inner2 = MemoryUpstream("mimir")
        self.spool(inner2)
        self.assertEqual(numbers(inner2.delivered), [2, 3, 4])

    def test_torn_final_record_is_reported_and_skipped(self) -> None:
        spool = self.spool(MemoryUpstream("mimir", [DOWN] * 1000))
        self.accepted(spool, *[push(n) for n in range(3)])
        self.successResultOf(spool.close())
        (seq,) = self.segments()
        path = os.path.join(self.directory, "worker-0", f"{seq:020d}.seg")
        with open(path, "ab") as f:
            f.write(RECORD_MAGIC + b"\x00\x00\x10\x00" + b"half a reco")
        inner = MemoryUpstream("mimir")
        with capturedLogs() as events:
            spool2 = self.spool(inner)
        self.assertEqual(numbers(inner.delivered), [0, 1, 2])
        self.assertEqual(spool2.counts.torn, 1)
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn("torn record", text)
        self.assertIn("skipped, never forwarded", text)

    def test_new_segment_numbers_never_reuse_cursor_entries(self) -> None:
        inner = MemoryUpstream("mimir")
        spool = self.spool(inner, segment_size=1)
        self.accepted(spool, *[push(n) for n in range(4)])
        self.clock.advance(2)
        self.successResultOf(spool.close())
        before = self.segments()
        spool2 = self.spool(MemoryUpstream("mimir"))
        self.accepted(spool2, push(9))
        self.assertGreater(max(self.segments()), max(before))


class WorkerTests(SpoolTestCase):
    def test_own_directory_per_worker(self) -> None:
        spool = self.spool(worker=2)
        self.accepted(spool, push(1))
        self.assertTrue(os.path.isdir(os.path.join(self.directory, "worker-2")))

    def test_spool_of_a_stopped_worker_is_drained(self) -> None:
        left = self.spool(MemoryUpstream("mimir", [DOWN] * 1000), worker=1)
        self.accepted(left, *[push(n) for n in range(4)])
        self.successResultOf(left.close())
        inner = MemoryUpstream("mimir")
        with capturedLogs() as events:
            spool = self.spool(inner, worker=0)
            # Not while worker-1 may only be restarting.
            self.assertEqual(inner.pushes, [])
            self.clock.advance(spool.config.takeover_after)
        self.assertEqual(numbers(inner.delivered), [0, 1, 2, 3])
        self.assertEqual(self.segments("worker-1"), [])
        self.assertTrue(any("took over 4 record(s)" in formatEvent(e) for e in events))
        # Written after the adopted ones, and delivered after them.
        self.accepted(spool, push(10))
        self.assertEqual(numbers(inner.delivered), [0, 1, 2, 3, 10])

    def test_spool_of_a_live_worker_is_left_alone(self) -> None:
        live = self.spool(MemoryUpstream("mimir", [DOWN] * 1000), worker=1)
        self.accepted(live, push(1))
        inner = MemoryUpstream("mimir")
        self.spool(inner, worker=0)
        self.settle(31, step=1.0)
        self.assertEqual(inner.pushes, [])
        self.assertEqual(len(self.segments("worker-1")), 1)

    def test_adopted_later(self) -> None:
        """
        A worker that stops while others run is taken over at the next
        housekeeping.
        """
        inner = MemoryUpstream("mimir")
        self.spool(inner, worker=0)
        other = self.spool(MemoryUpstream("mimir", [DOWN] * 1000), worker=1)
        self.accepted(other, push(7))
        self.successResultOf(other.close())
        self.assertEqual(inner.pushes, [])
        # Seen free at the next housekeeping, taken over once it has been
        # free for takeover_after.
        self.clock.advance(30)
        self.assertEqual(inner.pushes, [])
        self.clock.advance(120)
        self.assertEqual(numbers(inner.delivered), [7])


class ReportTests(SpoolTestCase):
    def test_health(self) -> None:
        inner = MemoryUpstream("mimir", [DOWN] * 1000)
        spool = self.spool(inner)
        self.accepted(spool, push(1, at=self.clock.seconds()))
        self.clock.advance(10)
        health = spool.health()
        spool_report = health["spool"]
        self.assertEqual(spool_report["state"], "retrying")
        self.assertEqual(spool_report["records"], 1)
        self.assertGreater(spool_report["bytes"], 10)
        self.assertEqual(spool_report["oldest_age_seconds"], 10.0)
        self.assertEqual(spool_report["max_size"], SpoolConfig(directory="x").max_size)
        self.assertTrue(spool_report["directory"].endswith("worker-0"))
        self.assertIsNotNone(spool_report["oldest_record"])

    def test_health_takes_the_inner_health(self) -> None:
        class Inner(MemoryUpstream):
            def health(self) -> dict[str, Any]:
                return {"status": "degraded", "consecutive_failures": 3}

        spool = self.spool(Inner("mimir"))
        health = spool.health()
        self.assertEqual(health["status"], "degraded")
        self.assertEqual(health["consecutive_failures"], 3)
        self.assertEqual(health["spool"]["state"], "idle")

    def test_metrics(self) -> None:
        registry = CollectorRegistry()
        metrics = spool_metrics(registry)
        self.assertIs(spool_metrics(registry), metrics)
        inner = MemoryUpstream("mimir", [UpstreamRejected(400, "bad"), DOWN, DOWN])
        spool = SpoolUpstream(
            inner,
            SpoolConfig(directory=self.directory, concurrency=1),
            self.clock,
            retry=RETRY,
            run_in_thread=self.threads,
            metrics=metrics,
            random=lambda: 0.5,
            fsync=self.fsyncs.append,
        )
        self.addCleanup(self.close, spool)
        spool.start()
        now = self.clock.seconds()
        self.accepted(spool, push(1), push(2, at=now - 3), push(3, at=now))

        def value(name: str) -> Optional[float]:
            return registry.get_sample_value(name, {"upstream": "mimir"})

        self.assertEqual(value("sealgw_spool_queued_records"), 2)
        self.assertEqual(value("sealgw_spool_oldest_record_age_seconds"), 3)
        self.assertGreater(value("sealgw_spool_queued_bytes") or 0, 0)
        self.assertEqual(value("sealgw_spool_retried_total"), 1)
        self.assertEqual(value("sealgw_spool_dead_lettered_total"), 1)
        self.settle(5)
        self.assertEqual(value("sealgw_spool_retried_total"), 2)
        self.assertEqual(value("sealgw_spool_forwarded_total"), 2)
        self.assertEqual(value("sealgw_spool_dead_lettered_total"), 1)
        self.assertEqual(value("sealgw_spool_queued_records"), 0)
        self.assertEqual(value("sealgw_spool_oldest_record_age_seconds"), 0)
        self.assertEqual(value("sealgw_spool_writes_total"), 3)


class BuildTests(SpoolTestCase):
    def config(self, name: str, directory: str) -> HTTPUpstreamConfig:
        return HTTPUpstreamConfig(
            name=name, url="http://mimir:9009", spool=SpoolConfig(directory=directory)
        )

    def test_wrapped_when_configured(self) -> None:
        registry = CollectorRegistry()
        upstreams = build_upstreams(
            {
                "mimir": self.config("mimir", self.directory),
                "loki": HTTPUpstreamConfig(name="loki", url="http://loki:3100"),
            },
            self.clock,
            metrics=RelayMetrics(registry),
            run_in_thread=self.threads,
            worker=3,
        )
        spool = upstreams["mimir"]
        assert isinstance(spool, SpoolUpstream)
        self.assertEqual(spool.directory.path, os.path.join(self.directory, "worker-3"))
        self.assertNotIsInstance(upstreams["loki"], SpoolUpstream)
        upstreams.startService()
        self.assertTrue(os.path.isdir(spool.directory.path))
        self.assertEqual(
            registry.get_sample_value("sealgw_spool_queued_records", {"upstream": "mimir"}), 0
        )
        self.assertEqual(upstreams.health()["mimir"]["spool"]["state"], "idle")
        self.successResultOf(upstreams.stopService())
        self.assertFalse(SpoolDirectory(spool.directory.path).in_use())

    def test_overlapping_directories(self) -> None:
        from sealgw.config import ConfigError

        error = self.assertRaises(
            ConfigError,
            build_upstreams,
            {
                "a": self.config("a", self.directory),
                "b": self.config("b", os.path.join(self.directory, "b")),
            },
            self.clock,
        )
        self.assertEqual(len(error.problems), 1)
        self.assertIn("upstreams.b.spool.directory", error.problems[0])
        self.assertIn("overlaps upstreams.a's spool", error.problems[0])

    def test_unwritable_directory(self) -> None:
        from sealgw.config import ConfigError

        with open(self.directory, "w"):
            pass
        error = self.assertRaises(
            ConfigError,
            build_upstreams,
            {"a": self.config("a", os.path.join(self.directory, "spool"))},
            self.clock,
        )
        self.assertIn("is not a directory", error.problems[0])
        self.assertFalse(os.path.exists(os.path.join(self.directory, "spool")))

    def test_service_starts_spools(self) -> None:
        spool = self.spool(start=False)
        service = UpstreamsService({"mimir": spool})
        self.assertEqual(spool.state(), "starting")
        service.startService()
        self.assertEqual(spool.state(), "idle")
        self.successResultOf(service.stopService())
        self.assertEqual(spool.state(), "stopped")


class ConfigTests(SynchronousTestCase):
    def load(self, spool: str) -> Any:
        from sealgw.config import load

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(
                "listeners: [{endpoint: 'tcp:0'}]\n"
                "upstreams:\n  mimir:\n    url: http://mimir:8080\n"
                f"    spool: {spool}\n"
            )
        return folder, path, load

    def test_defaults_and_units(self) -> None:
        folder, path, load = self.load(
            "{directory: spool, max_size: 2GiB, max_age: 1h, fsync: batch, "
            "fsync_interval: 5ms, when_full: drop_oldest, concurrency: 2}"
        )
        spool = load(path).upstreams["mimir"].spool
        self.assertEqual(
            spool,
            SpoolConfig(
                directory=os.path.join(folder, "spool"),
                max_size=2 * 1024**3,
                max_age=3600.0,
                fsync="batch",
                fsync_interval=0.005,
                when_full="drop_oldest",
                concurrency=2,
            ),
        )
        _, path, load = self.load("{directory: /var/spool/x}")
        self.assertEqual(
            load(path).upstreams["mimir"].spool, SpoolConfig(directory="/var/spool/x")
        )
        _, path, load = self.load("~")
        self.assertIsNone(load(path).upstreams["mimir"].spool)

    def test_problems(self) -> None:
        from sealgw.config import ConfigError

        _, path, load = self.load(
            "{max_size: 0, fsync: sometimes, when_full: panic, concurency: 2}"
        )
        error = self.assertRaises(ConfigError, load, path)
        text = "\n".join(error.problems)
        self.assertIn("upstreams.mimir.spool.directory: required", text)
        self.assertIn("upstreams.mimir.spool.max_size: must be larger than zero", text)
        self.assertIn("upstreams.mimir.spool.fsync: 'sometimes' is not one of", text)
        self.assertIn("upstreams.mimir.spool.when_full: 'panic' is not one of", text)
        self.assertIn("concurency: unknown key (did you mean 'concurrency'?)", text)
