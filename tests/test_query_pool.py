"""
The PromQL parser processes (L{sealgw.query._pool.ParserPool}), as real
child processes of the test: the same answers as parsing inline, the
time budget (driven by a L{Clock}; the child is held with SIGSTOP, so
that it is mid-query for as long as the test wants), the bound on
queries waiting, cancellation, a child that dies, and stopping.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from sealgw.query._pool import (
    InlineParser,
    ParseBudgetExceeded,
    ParserPool,
    ParserUnavailable,
)
from sealgw.tenancy import DEFAULT_BOUNDS, LabelEnforcementError, TenantLabel

A = TenantLabel.parse("tenant", "team-a")

#: A child that says it is ready, then reads one request and ends.
DIES_ON_A_QUERY = (
    "import sys; out = sys.stdout.buffer; out.write(b'\\x00\\x00\\x00\\x0e{\"ready\":true}'); "
    "out.flush(); sys.stdin.buffer.read(5); sys.exit(7)"
)


#: A child that says it is ready, then answers a request with what is not
#: JSON.
WRITES_GARBAGE = (
    "import sys; out = sys.stdout.buffer; out.write(b'\\x00\\x00\\x00\\x0e{\"ready\":true}'); "
    "out.flush(); sys.stdin.buffer.read(5); out.write(b'\\x00\\x00\\x00\\x03xyz'); out.flush(); "
    "sys.stdin.buffer.read()"
)


class ClockedReactor:
    """
    The real reactor's processes, a L{Clock}'s time: the budget runs out
    when the test says so.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.spawned: list[Any] = []

    def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
        transport = reactor.spawnProcess(*args, **kwargs)
        self.spawned.append(transport)
        return transport

    def callLater(self, *args: Any, **kwargs: Any) -> Any:
        return self.clock.callLater(*args, **kwargs)


def enforce(pool: Any, text: str, kind: str = "query") -> Deferred[str]:
    return pool.enforce(kind, text, A, DEFAULT_BOUNDS)


class ParserPoolTests(TestCase):
    def pool(self, **kwargs: Any) -> ParserPool:
        self.reactor = ClockedReactor()
        pool = ParserPool(self.reactor, **kwargs)
        self.addCleanup(pool.stop)
        return pool

    async def started(self, pool: ParserPool) -> int:
        """
        Start a child with a first query; its process id.
        """
        await enforce(pool, "up")
        [child] = pool.children
        pid: int = child.transport.pid  # type: ignore[union-attr]
        return pid

    def hold(self, pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(self.release, pid)

    def release(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    async def test_same_as_inline(self) -> None:
        """
        The child answers what parsing inline answers: rewrites, and the
        same refusals.
        """
        pool = self.pool()
        inline = InlineParser()
        for kind, text in [
            ("query", 'sum by (job) (rate(http_requests_total{code=~"5.."}[5m]))'),
            ("query", "info(up)"),
            ("query", "sum(("),
            ("query", 'up{l0=~"\\\\w{250}"}'),
            ("selector", '{job=~"api|web"}'),
            ("selector", "sum(up)"),
        ]:
            mine = await _outcome(pool.enforce(kind, text, A, DEFAULT_BOUNDS))
            theirs = await _outcome(inline.enforce(kind, text, A, DEFAULT_BOUNDS))
            self.assertEqual(mine, theirs, text)
        self.assertEqual(len(self.reactor.spawned), 1)

    async def test_budget(self) -> None:
        """
        A query over the budget is refused naming it, its child is killed,
        and the next query gets a new child.
        """
        pool = self.pool(budget=2.5)
        pid = await self.started(pool)
        self.hold(pid)
        old = pool.children[0]
        slow = enforce(pool, 'up{a=~"x"}')
        self.assertNoResult(slow)
        self.reactor.clock.advance(2.4)
        self.assertNoResult(slow)
        self.reactor.clock.advance(0.1)
        e = self.failureResultOf(slow, ParseBudgetExceeded).value
        self.assertEqual(
            str(e),
            "checking the query took longer than the 2.5s the gateway gives one query "
            "(query.promql.parse_timeout)",
        )
        await old.ended
        self.assertEqual(
            await enforce(pool, 'up{a=~"y"}'), '{__name__="up", a=~"y", tenant="team-a"}'
        )
        self.assertEqual(len(self.reactor.spawned), 2)

    async def test_waiting_bounded(self) -> None:
        """
        Past C{max_waiting} queries waiting for a child, more are refused
        at once (503 to the client); those waiting are answered in turn.
        """
        pool = self.pool(max_waiting=1)
        pid = await self.started(pool)
        self.hold(pid)
        first = enforce(pool, "a")
        second = enforce(pool, "b")
        third = enforce(pool, "c")
        e = self.failureResultOf(third, ParserUnavailable).value
        self.assertEqual(str(e), "1 queries are already waiting for the PromQL parser")
        self.release(pid)
        self.assertEqual(await first, '{__name__="a", tenant="team-a"}')
        self.assertEqual(await second, '{__name__="b", tenant="team-a"}')

    async def test_tenants_served_in_turn(self) -> None:
        """
        Queries waiting for the child are taken from the tenants in turn:
        tenant B's one query waits behind at most one of A's, not A's whole
        queue; and A alone may not fill the queue the others need.
        """
        pool = self.pool(max_waiting=8, max_waiting_per_tenant=3)
        pid = await self.started(pool)
        self.hold(pid)
        b = TenantLabel("tenant", ("team-b",))
        order: list[str] = []

        def asked(tenant: TenantLabel, text: str) -> Deferred[str]:
            d = pool.enforce("query", text, tenant, DEFAULT_BOUNDS)
            d.addCallback(lambda rewritten: order.append(text) or rewritten)
            return d

        running = asked(A, "a0")
        queued = [asked(A, f"a{n}") for n in range(1, 4)]
        refused = asked(A, "a4")
        e = self.failureResultOf(refused, ParserUnavailable).value
        self.assertIn("3 of this tenant's queries are already waiting", str(e))
        bs = asked(b, "b0")
        self.release(pid)
        for d in (running, *queued, bs):
            await d
        self.assertEqual(order, ["a0", "a1", "b0", "a2", "a3"])

    async def test_cancel_waiting(self) -> None:
        """
        A query whose client went away leaves the queue.
        """
        pool = self.pool()
        pid = await self.started(pool)
        self.hold(pid)
        first = enforce(pool, "a")
        second = enforce(pool, "b")
        self.assertEqual(len(pool.waiting), 1)
        second.cancel()
        self.failureResultOf(second, CancelledError)
        self.assertEqual(len(pool.waiting), 0)
        self.release(pid)
        self.assertEqual(await first, '{__name__="a", tenant="team-a"}')

    async def test_child_dies_on_a_query(self) -> None:
        """
        A child that ends while it holds a query: the query is refused
        (400) and the next one gets a new child.
        """
        pool = self.pool(command=[sys.executable, "-c", DIES_ON_A_QUERY])
        e = await _outcome(enforce(pool, "up"))
        self.assertEqual(e, "the query cannot be checked: the PromQL parser ended on it")
        await _outcome(enforce(pool, "up"))
        self.assertEqual(len(self.reactor.spawned), 2)

    async def test_child_writes_garbage(self) -> None:
        """
        A child that writes what is not a frame is killed; its query is
        refused.
        """
        pool = self.pool(command=[sys.executable, "-c", WRITES_GARBAGE])
        e = await _outcome(enforce(pool, "up"))
        self.assertEqual(e, "the query cannot be checked: the PromQL parser ended on it")
        self.assertEqual(pool.children, [])

    async def test_child_cannot_start(self) -> None:
        """
        A child that ends before it is ready: the queries waiting are
        answered 503.
        """
        pool = self.pool(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
        waiting = enforce(pool, "up")
        failure = await _failure(waiting)
        self.assertTrue(failure.check(ParserUnavailable))
        self.assertEqual(str(failure.value), "the PromQL parser could not start")

    async def test_stop(self) -> None:
        """
        Stopping ends every child (the one mid-query too) and refuses
        the queries waiting and any asked afterwards.
        """
        pool = self.pool()
        pid = await self.started(pool)
        self.hold(pid)
        running = enforce(pool, "a")
        waiting = enforce(pool, "b")
        stopped = pool.stop()
        self.failureResultOf(waiting, ParserUnavailable)
        self.release(pid)
        await stopped
        self.assertEqual(pool.children, [])
        # The query in the child was answered as it ended, or refused.
        await _outcome(running)
        self.failureResultOf(enforce(pool, "c"), ParserUnavailable)

    async def test_stop_kills_a_child_that_does_not_end(self) -> None:
        """
        A child still busy after the grace is killed.
        """
        pool = self.pool()
        pid = await self.started(pool)
        self.hold(pid)
        running = enforce(pool, "a")
        stopped = pool.stop()
        self.assertNoResult(stopped)
        self.reactor.clock.advance(5)
        await stopped
        failure = await _failure(running)
        self.assertTrue(failure.check(ParserUnavailable))


async def _outcome(d: Deferred[str]) -> str:
    """
    The rewrite, or the refusal's message.
    """
    try:
        return await d
    except LabelEnforcementError as e:
        return f"refused: {e}" if not str(e).startswith("the query cannot be checked") else str(e)


async def _failure(d: Deferred[str]) -> Failure:
    try:
        await d
    except Exception:
        return Failure()
    raise AssertionError("no failure")
