"""
One lookup in flight per key, shared by every caller.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth._shared import Coalescer


class CoalescerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.coalescer: Coalescer[str, int] = Coalescer()
        self.started: list[Deferred[int]] = []

    def start(self) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        self.started.append(d)
        return d

    def test_shared(self) -> None:
        a = self.coalescer.run("k", self.start)
        b = self.coalescer.run("k", self.start)
        other = self.coalescer.run("other", self.start)
        self.assertEqual(len(self.started), 2)
        self.assertIn("k", self.coalescer)
        self.started[0].callback(7)
        self.assertEqual((self.successResultOf(a), self.successResultOf(b)), (7, 7))
        self.assertNoResult(other)
        self.assertNotIn("k", self.coalescer)
        # Once done, the next call starts afresh.
        self.coalescer.run("k", self.start)
        self.assertEqual(len(self.started), 3)

    def test_failure_reaches_everyone(self) -> None:
        a = self.coalescer.run("k", self.start)
        b = self.coalescer.run("k", self.start)
        self.started[0].errback(ValueError("no"))
        self.failureResultOf(a, ValueError)
        self.failureResultOf(b, ValueError)

    def test_one_caller_cancelling(self) -> None:
        """
        A caller that goes away does not take the lookup with it.
        """
        a = self.coalescer.run("k", self.start)
        b = self.coalescer.run("k", self.start)
        a.cancel()
        self.failureResultOf(a, CancelledError)
        self.started[0].callback(1)
        self.assertEqual(self.successResultOf(b), 1)

    def test_everyone_cancelling(self) -> None:
        a = self.coalescer.run("k", self.start)
        a.cancel()
        self.failureResultOf(a, CancelledError)
        # The lookup finishing later with nobody waiting is not an error.
        self.started[0].errback(ValueError("late"))

    def test_cancel_all(self) -> None:
        a = self.coalescer.run("k", self.start)
        self.coalescer.cancel_all()
        self.failureResultOf(a, CancelledError)
        self.assertNotIn("k", self.coalescer)

    def test_start_raises(self) -> None:
        def broken() -> Deferred[int]:
            raise RuntimeError("bug")

        self.failureResultOf(self.coalescer.run("k", broken), RuntimeError)
        self.assertNotIn("k", self.coalescer)
