"""
Taking over other folders on a Clock: a push that arrives during a
takeover, a worker that is only restarting, replay folders, a takeover
that fails; and the spool's bounds: memory for pushes waiting to be
written, damaged segments set aside, the modes of what it creates, and
the drain on stop.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent

from sealgw.relay import UpstreamRejected, UpstreamUnavailable
from sealgw.spool import SPOOLED
from sealgw.spool._disk import SpoolDirectory
from sealgw.spool._format import new_salt
from sealgw.testing import MemoryUpstream
from tests.test_spool import DOWN, SpoolTestCase, numbers, push


class TakeoverTests(SpoolTestCase):
    def replay_folder(self, name: str, *ns: int) -> SpoolDirectory:
        """
        A C{replay-*} folder holding C{ns}, as C{replay-dead-letters}
        leaves it.
        """
        folder = SpoolDirectory(os.path.join(self.directory, name))
        os.makedirs(folder.path)
        folder.append(1, new_salt(), [push(n, at=self.clock.seconds()) for n in ns], create=True)
        folder.close_segment()
        return folder

    def run_one(self, f: Any = None) -> None:
        """
        Run the first held thread call (or the first one calling C{f}).
        """
        for index, (g, args, d) in enumerate(self.threads.queue):
            if f is None or g == f:
                del self.threads.queue[index]
                d.callback(g(*args))
                return
        self.fail(f"no call to {f} waiting in {self.threads.queue}")

    def test_push_during_a_takeover(self) -> None:
        """
        A push that arrives while a folder is being taken over opens a
        segment numbered after the ones taken over: the reader does not go
        there before they are in, every record is delivered in sequence
        order, and the spool does not report itself full once the taken
        over records would have passed max_age (the lock-up of issue 19).
        """
        inner = MemoryUpstream("mimir")
        spool = self.spool(inner, max_age=60.0, concurrency=1)
        self.accepted(spool, push(1, at=self.clock.seconds()))
        self.replay_folder("replay-a", 100, 101, 102)
        self.threads.held = True
        self.clock.advance(30)  # housekeeping: looks for folders to take over
        for _ in range(10):
            if any(f == spool.directory.adopt for f, _, _ in self.threads.queue):
                break
            self.run_one()
        # The segments are being moved in; a push comes meanwhile and is
        # written first.
        answer = spool.deliver(push(2, at=self.clock.seconds()))
        self.run_one(spool.directory.append)
        self.assertEqual(self.successResultOf(answer), SPOOLED)
        self.assertEqual(numbers(inner.delivered), [1])
        self.threads.held = False
        self.threads.run()
        self.assertEqual(numbers(inner.delivered), [1, 100, 101, 102, 2])
        # Steady pushes for max_age and more: none refused, all delivered.
        for n in range(3, 30):
            self.clock.advance(10)
            self.accepted(spool, push(n, at=self.clock.seconds()))
        self.assertEqual(spool.counts.refused, 0)
        self.assertEqual(numbers(inner.delivered), [1, 100, 101, 102, *range(2, 30)])
        self.assertEqual(spool.state(), "idle")
        self.assertFalse(os.path.exists(os.path.join(self.directory, "replay-a")))

    def test_takeover_while_the_upstream_is_down(self) -> None:
        """
        Records taken over while deliveries wait go after those written
        before, and before those written after.
        """
        inner = MemoryUpstream("mimir", [DOWN] * 5)
        spool = self.spool(inner, concurrency=2, segment_size=1)
        self.accepted(spool, push(1, at=self.clock.seconds()), push(2, at=self.clock.seconds()))
        self.replay_folder("replay-b", 100, 101)
        self.clock.advance(30)
        self.accepted(spool, push(3, at=self.clock.seconds()))
        self.settle(30, step=0.5)
        got = numbers(inner.delivered)
        self.assertEqual(got, [1, 2, 100, 101, 3])

    def test_max_age_counts_from_the_takeover(self) -> None:
        """
        Records taken over that are older than max_age already do not
        make the spool full at once: under C{refuse}, their age counts from
        when this spool took them on.  If they still wait max_age later,
        the spool is full.
        """
        inner = MemoryUpstream("mimir", [DOWN] * 1000)
        spool = self.spool(inner, max_age=60.0, concurrency=1)
        folder = SpoolDirectory(os.path.join(self.directory, "replay-old"))
        os.makedirs(folder.path)
        folder.append(1, new_salt(), [push(100, at=self.clock.seconds() - 3600)], create=True)
        folder.close_segment()
        self.settle(30, step=1.0)
        self.assertFalse(os.path.exists(folder.path))
        for n in range(5):
            self.accepted(spool, push(n, at=self.clock.seconds()))
            self.settle(10, step=1.0)
        self.assertEqual(spool.counts.refused, 0)
        self.settle(15, step=1.0)
        self.failureResultOf(spool.deliver(push(9)), UpstreamUnavailable)
        self.assertEqual(spool.state(), "full")
        # The age shown is the records' own.
        self.assertGreater(spool.gauges()["oldest_age_seconds"], 3600)

    def test_a_restarting_worker_is_left_alone(self) -> None:
        """
        A worker's folder is taken over only once it has been free for
        takeover_after: a worker seen holding it again (restarted) keeps it.
        """
        left = self.spool(MemoryUpstream("mimir", [DOWN] * 1000), worker=1)
        self.accepted(left, push(7))
        self.successResultOf(left.close())
        inner = MemoryUpstream("mimir")
        self.spool(inner, worker=0, takeover_after=120.0)
        self.settle(90, step=1.0)
        # Worker 1 is back, for a while.
        restarted = SpoolDirectory(os.path.join(self.directory, "worker-1"))
        self.assertTrue(restarted.lock(False))
        self.settle(60, step=1.0)
        restarted.unlock()
        self.settle(90, step=1.0)
        self.assertEqual(inner.pushes, [])
        self.assertEqual(len(self.segments("worker-1")), 1)
        # Gone for good: free since 180 s (seen at 180 s), taken at 300 s.
        self.settle(60, step=1.0)
        self.assertEqual(numbers(inner.delivered), [7])
        self.assertEqual(self.segments("worker-1"), [])

    def test_replay_folders_at_once(self) -> None:
        inner = MemoryUpstream("mimir")
        self.spool(inner)
        self.replay_folder("replay-c", 5, 6)
        self.clock.advance(30)
        self.assertEqual(numbers(inner.delivered), [5, 6])

    def test_a_failed_takeover_lets_the_reader_on(self) -> None:
        """
        A takeover that fails gives its reservation back: what is written
        after it is delivered, and the failure is logged.
        """
        inner = MemoryUpstream("mimir")
        spool = self.spool(inner)
        self.replay_folder("replay-d", 5)

        def broken(orphan: SpoolDirectory, first: int) -> Any:
            raise OSError(28, "No space left on device")

        spool.directory.adopt = broken  # type: ignore[method-assign]
        with capturedLogs() as events:
            self.clock.advance(30)
            self.accepted(spool, push(1))
        self.assertEqual(numbers(inner.delivered), [1])
        self.assertFalse(spool.log.taking_over)
        self.assertTrue(
            any("taking over" in formatEvent(e) and "No space" in formatEvent(e) for e in events)
        )


class BoundsTests(SpoolTestCase):
    def test_memory_for_pushes_waiting_to_be_written(self) -> None:
        """
        Pushes waiting for the disk take at most max_memory: past it a push
        is answered 503 with Retry-After, and taken again once the writes
        caught up.
        """
        spool = self.spool(max_memory=4000)
        self.threads.held = True
        first = spool.deliver(push(1, size=1000))
        second = spool.deliver(push(2, size=500))
        refused = spool.deliver(push(3, size=1000))
        error = self.failureResultOf(refused, UpstreamUnavailable).value
        self.assertEqual(error.status, 503)
        self.assertEqual(error.retry_after, 1.0)
        self.assertIn("max_memory", error.reason)
        self.assertEqual(spool.counts.refused, 1)
        self.threads.held = False
        self.threads.run()
        self.successResultOf(first)
        self.successResultOf(second)
        self.accepted(spool, push(4, size=1000))

    def test_a_push_alone_is_taken(self) -> None:
        spool = self.spool(max_memory=100)
        self.accepted(spool, push(1, size=1000))

    def test_damaged_segment_is_set_aside(self) -> None:
        """
        A segment whose header is unreadable is renamed aside, never
        deleted, and reported.
        """
        folder = SpoolDirectory(os.path.join(self.directory, "worker-0"))
        folder.lock()
        folder.unlock()
        with open(folder.segment_path(3), "wb") as f:
            f.write(b"not a segment, but maybe someone's data")
        inner = MemoryUpstream("mimir")
        with capturedLogs() as events:
            spool = self.spool(inner)
        self.assertEqual(folder.segments(), [])
        self.assertEqual(folder.damaged(), ["00000000000000000003.seg.damaged"])
        with open(folder.damaged_path(3), "rb") as f:
            self.assertEqual(f.read(), b"not a segment, but maybe someone's data")
        self.assertEqual(spool.counts.torn, 1)
        self.assertTrue(any("renamed aside" in formatEvent(e) for e in events))
        # Numbers go on past it.
        self.accepted(spool, push(1))
        self.assertGreater(folder.segments()[-1] if folder.segments() else 4, 3)

    def test_modes(self) -> None:
        """
        Folders the spool creates are 0700, its files 0600, whatever the
        umask.
        """
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        spool = self.spool(MemoryUpstream("mimir", [UpstreamRejected(400, "bad")]))
        self.accepted(spool, push(1), push(2))
        self.clock.advance(2)  # the cursor is saved
        folder = os.path.join(self.directory, "worker-0")
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o700)
        names = os.listdir(folder)
        self.assertEqual(
            sorted(names),
            ["00000000000000000001.seg", "cursor.json", "dead-letters.jsonl", "lock"],
        )
        for name in names:
            mode = stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
            self.assertEqual(mode, 0o600, name)


class DrainTests(SpoolTestCase):
    def test_delivers_for_up_to_drain_grace(self) -> None:
        """
        On stop, the spool goes on delivering what it holds while the
        upstream takes it, for up to drain_grace.
        """
        slow: list[Deferred[Any]] = [Deferred() for _ in range(3)]
        inner = MemoryUpstream("mimir", list(slow))
        spool = self.spool(inner, concurrency=1, drain_grace=10.0)
        self.accepted(spool, push(1), push(2), push(3))
        closed = spool.close()
        for d in slow:
            self.assertNoResult(closed)
            self.clock.advance(1)
            d.callback(SPOOLED)
        self.clock.advance(0.1)
        self.successResultOf(closed)
        self.assertEqual(numbers(inner.delivered), [1, 2, 3])
        self.assertEqual(spool.counts.forwarded, 3)

    def test_stops_at_the_deadline(self) -> None:
        hang: Deferred[Any] = Deferred()
        inner = MemoryUpstream("mimir", [hang])
        spool = self.spool(inner, drain_grace=5.0)
        self.accepted(spool, push(1))
        closed = spool.close()
        self.clock.advance(4.9)
        self.assertNoResult(closed)
        self.clock.advance(0.2)
        self.successResultOf(closed)
        # Left for the next start.
        self.assertEqual(len(self.segments()), 1)

    def test_stops_at_once_when_the_upstream_is_down(self) -> None:
        inner = MemoryUpstream("mimir", [DOWN] * 1000)
        spool = self.spool(inner, drain_grace=60.0)
        self.accepted(spool, push(1))
        closed = spool.close()
        self.clock.advance(0.1)
        self.successResultOf(closed)
