"""
The spool against a model queue (Hypothesis's rule-based state machine):
pushes written, folders taken over, deliveries, upstream outages and
refusals, drops, clean restarts and crashes, in any order.

What must hold whatever happens:
    - the spool never refuses a push while under its limits;
    - records reach the upstream in sequence order (the order they were
      answered, taken-over records where the takeover put them), a
      record sent again after a crash aside;
    - every answered record ends delivered, dead-lettered or counted as
      dropped.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from typing import Any, Optional

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from sealgw.config import RetryConfig
from sealgw.config._spool import SpoolConfig
from sealgw.relay import Delivery, UpstreamRejected, UpstreamUnavailable
from sealgw.signals.push import Push
from sealgw.spool import SpoolUpstream
from sealgw.spool._dead import DEAD_LETTERS, OLDER_DEAD_LETTERS
from sealgw.spool._disk import SpoolDirectory
from sealgw.spool._format import new_salt
from tests.test_spool import SPOOLED, Threads

RETRY = RetryConfig(attempts=1, initial_backoff=0.5, max_backoff=2.0, deadline=5.0)


def record(n: int, size: int, tenant: str = "team-a") -> Push:
    return Push(
        signal="remote_write",
        tenant=tenant,
        body=f"{n}:".encode() + b"x" * size,
        content_type="application/x-protobuf",
        content_encoding="snappy",
        path="/api/v1/push",
        received_at=0.0,
    )


def number(push: Push) -> int:
    return int(push.body.split(b":")[0])


class Upstream:
    """
    An upstream that is up or down, and refuses (400) every push of the
    tenant C{poison}.
    """

    name = "mimir"

    def __init__(self) -> None:
        self.up = True
        self.delivered: list[int] = []

    def deliver(self, push: Push) -> Deferred[Delivery]:
        if push.tenant == "poison":
            return fail(UpstreamRejected(400, "series limit"))
        if not self.up:
            return fail(UpstreamUnavailable(503, "down"))
        self.delivered.append(number(push))
        return succeed(SPOOLED)

    def close(self) -> Deferred[None]:
        return succeed(None)


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="spool-model-")
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.threads = Threads()
        self.upstream = Upstream()
        self.config = SpoolConfig(
            directory=self.directory,
            max_size=6000,
            max_age=1e9,
            when_full="drop_oldest",
            concurrency=2,
            takeover_after=0.0,
            drain_grace=0.0,
            max_memory=1 << 20,
        )
        self.next = 0
        #: Every answered record, in the order it must be delivered.
        self.order: list[int] = []
        self.dropped = 0
        self.refused = 0
        self.crashed = False
        #: Restarted cleanly: records delivered past the watermark (out of
        #: order, concurrency > 1) are read again, and may be dropped then.
        self.restarted = False
        self.replays = 0
        self.spool: Optional[SpoolUpstream] = None
        self._start()

    def _start(self) -> None:
        spool = SpoolUpstream(
            self.upstream,  # type: ignore[arg-type]
            self.config,
            self.clock,
            retry=RETRY,
            run_in_thread=self.threads,
            random=lambda: 0.5,
            fsync=lambda fd: None,
            segment_size=1500,
        )
        started = spool.start()
        assert started.called
        self.spool = spool

    def _counted(self) -> None:
        assert self.spool is not None
        self.dropped += self.spool.counts.dropped
        self.refused += self.spool.counts.refused

    # -- rules -------------------------------------------------------------------

    @rule(size=st.integers(10, 400), poison=st.booleans())
    def write(self, size: int, poison: bool) -> None:
        assert self.spool is not None
        n = self.next
        self.next += 1
        answer = self.spool.deliver(record(n, size, "poison" if poison else "team-a"))
        results: list[Any] = []
        answer.addBoth(results.append)
        assert results and results[0] == SPOOLED, results
        self.order.append(n)

    @rule(count=st.integers(1, 4))
    def take_over(self, count: int) -> None:
        """
        A C{replay-*} folder appears (as C{replay-dead-letters} leaves it)
        and is taken over at the next housekeeping.
        """
        ns = list(range(self.next, self.next + count))
        self.next += count
        self.replays += 1
        folder = SpoolDirectory(os.path.join(self.directory, f"replay-{self.replays}"))
        os.makedirs(folder.path)
        folder.append(1, new_salt(), [record(n, 50) for n in ns], create=True)
        folder.close_segment()
        self.clock.advance(30)
        assert not os.path.exists(folder.path)
        self.order.extend(ns)

    @rule(
        count=st.integers(1, 3),
        during=st.lists(st.integers(10, 300), min_size=1, max_size=3),
        drop=st.booleans(),
    )
    def take_over_while_writing(self, count: int, during: list[int], drop: bool) -> None:
        """
        Pushes written while a folder is being taken over (its segments
        being moved in, in a worker thread) come after it; the oldest
        segment may be dropped meanwhile.
        """
        assert self.spool is not None
        spool = self.spool
        taken = list(range(self.next, self.next + count))
        self.next += count
        self.replays += 1
        folder = SpoolDirectory(os.path.join(self.directory, f"replay-{self.replays}"))
        os.makedirs(folder.path)
        folder.append(1, new_salt(), [record(n, 50) for n in taken], create=True)
        folder.close_segment()
        self.threads.held = True
        self.clock.advance(30)

        def others() -> None:
            # Run every held call but the takeover's move.
            while True:
                ready = [c for c in self.threads.queue if c[0] != spool.directory.adopt]
                if not ready:
                    return
                call = ready[0]
                self.threads.queue.remove(call)
                f, args, d = call
                d.callback(f(*args))

        others()
        assert [c[0] for c in self.threads.queue] == [spool.directory.adopt]
        answers: list[Any] = []
        written = []
        for size in during:
            n = self.next
            self.next += 1
            spool.deliver(record(n, size)).addBoth(answers.append)
            written.append(n)
            others()
        if drop:
            # The oldest segment dropped while the takeover is under way.
            spool._drop("a test drops it")
            others()
        self.threads.held = False
        self.threads.run()
        assert answers == [SPOOLED] * len(during), answers
        assert not os.path.exists(folder.path)
        self.order.extend(taken)
        self.order.extend(written)

    @rule(seconds=st.sampled_from([0.5, 2.0, 10.0]))
    def deliver(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.5)):
            self.clock.advance(0.5)

    @rule()
    def upstream_fails(self) -> None:
        self.upstream.up = False

    @rule()
    def upstream_recovers(self) -> None:
        self.upstream.up = True

    @rule()
    def restart(self) -> None:
        assert self.spool is not None
        closed = self.spool.close()
        assert closed.called
        self._counted()
        self.restarted = True
        self._start()

    @rule()
    def crash(self) -> None:
        """
        C{kill -9}: nothing more runs, the cursor is what was last saved,
        the lock goes with the process.
        """
        assert self.spool is not None
        self._counted()
        self.spool.forwarder.stop()
        if self.spool._housekeeping is not None and self.spool._housekeeping.running:
            self.spool._housekeeping.stop()
        self.spool.writer.stop()
        timer = self.spool._cursor_timer
        if timer is not None and timer.active():
            timer.cancel()
        self.spool.directory.unlock()
        self.crashed = True
        self._start()

    @precondition(lambda self: self.spool is not None)
    @rule()
    def drop(self) -> None:
        """
        The oldest segment dropped, as a full spool or max_age would.
        """
        assert self.spool is not None
        self.spool._drop("a test drops it")

    # -- what must hold ----------------------------------------------------------

    @invariant()
    def never_refused(self) -> None:
        assert self.spool is not None
        assert self.refused + self.spool.counts.refused == 0

    @invariant()
    def in_sequence_order(self) -> None:
        seen: set[int] = set()
        firsts = []
        for n in self.upstream.delivered:
            if n not in seen:
                seen.add(n)
                firsts.append(n)
        position = {n: i for i, n in enumerate(self.order)}
        assert all(n in position for n in firsts), "delivered a record never answered"
        indices = [position[n] for n in firsts]
        assert indices == sorted(indices), (firsts, self.order)

    def dead_lettered(self) -> set[int]:
        found = set()
        for root, _, files in os.walk(self.directory):
            for name in files:
                if name in (DEAD_LETTERS, OLDER_DEAD_LETTERS):
                    with open(os.path.join(root, name), "rb") as f:
                        for line in f:
                            payload = base64.b64decode(json.loads(line)["push"])
                            found.add(number(Push.from_bytes(payload)))
        return found

    def teardown(self) -> None:
        try:
            assert self.spool is not None
            self.upstream.up = True
            for _ in range(200):
                self.clock.advance(0.5)
            missing = set(self.order) - set(self.upstream.delivered) - self.dead_lettered()
            dropped = self.dropped + self.spool.counts.dropped
            if self.crashed or self.restarted:
                # A record sent again after a crash or restart may be
                # dropped then.
                assert len(missing) <= dropped, (missing, dropped)
            else:
                assert len(missing) == dropped, (missing, dropped)
            assert self.spool.log.totals()[0] == 0
            self.spool.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(
    derandomize=True, deadline=None, max_examples=60, stateful_step_count=30
)


class SpoolModelTests(SpoolMachine.TestCase):  # type: ignore[name-defined,misc]
    """
    The state machine, as a test trial runs.
    """

    def test_against_the_model(self) -> None:
        self.runTest()
