"""
A small pool of PromQL parser processes (L{sealgw.tenancy._child}): label
enforcement of the queries that could take the parser more than a
moment, done where it cannot stall the reactor.

The parser holds the GIL while it works, so a thread would stall the
reactor as surely as parsing inline; a child process does not.  Each
child takes one query at a time, under a time budget: a child over it is
killed (the query is refused, 400) and another started for the next.
Children start when first needed and stop with the gateway.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any, Optional

import attr
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from sealgw.tenancy import LabelEnforcementError, PromQLBounds, TenantLabel
from sealgw.tenancy._child import MAX_FRAME, answer, encode_frame, request

_log = Logger()

#: How long a child may take to end once its input is closed, when the
#: gateway stops, before it is killed.
STOP_GRACE = 5.0


class ParserUnavailable(Exception):
    """
    No parser process could take the query (too many waiting, the gateway
    stopping, a child that could not start): answered 503, to try again.
    """


class ParseBudgetExceeded(LabelEnforcementError):
    """
    The query took its parser process longer than the time budget: the
    query is too expensive to check, answered 400 naming the budget.
    """


class IPromQLParser(Interface):
    """
    Where label enforcement of a query runs: in processes of its own
    (L{ParserPool}), or inline (L{InlineParser}, for tests and queries the
    bounds make cheap).
    """

    def enforce(kind: str, text: str, tenant: TenantLabel, bounds: PromQLBounds) -> Deferred[str]:
        """
        C{text} (a C{query} or a C{selector}) held to C{tenant}.

        @return: fires with the text to send upstream, or fails with
            L{LabelEnforcementError} (400), L{ParseBudgetExceeded} (400)
            or L{ParserUnavailable} (503).
        """

    def stop() -> Deferred[None]:
        """
        Stop every process; queries still waiting fail with
        L{ParserUnavailable}.
        """


@implementer(IPromQLParser)
class InlineParser:
    """
    Label enforcement on the calling thread.  Only for queries whose
    bounds make them cheap, and for tests.
    """

    def enforce(self, kind: str, text: str, tenant: TenantLabel, bounds: PromQLBounds) -> Deferred[str]:
        return _outcome(answer(request(kind, text, tenant, bounds)))

    def stop(self) -> Deferred[None]:
        return succeed(None)


def _outcome(message: dict[str, Any]) -> Deferred[str]:
    d: Deferred[str] = Deferred()
    if isinstance(message.get("rewritten"), str):
        d.callback(message["rewritten"])
    else:
        d.errback(LabelEnforcementError(str(message.get("refused", "the query cannot be checked"))))
    return d


@attr.define(eq=False)
class _Job:
    frame: bytes
    done: Deferred[str]
    tenant: str = ""
    timer: Optional[IDelayedCall] = None


class _FairQueue:
    """
    The queries waiting for a parser process, in a queue per tenant, taken
    from the tenants in turn: a tenant with many costly queries waiting
    delays another's by at most one query of its own, not by its whole
    queue.
    """

    def __init__(self) -> None:
        # Tenants with queries waiting, in the order they are served next.
        self._queues: dict[str, deque[_Job]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def waiting_for(self, tenant: str) -> int:
        queue = self._queues.get(tenant)
        return len(queue) if queue is not None else 0

    def append(self, job: _Job) -> None:
        self._queues.setdefault(job.tenant, deque()).append(job)
        self._count += 1

    def remove(self, job: _Job) -> bool:
        """
        Take C{job} out if it is waiting; whether it was.
        """
        queue = self._queues.get(job.tenant)
        if queue is None or job not in queue:
            return False
        queue.remove(job)
        self._count -= 1
        if not queue:
            del self._queues[job.tenant]
        return True

    def popleft(self) -> _Job:
        """
        The next query: the oldest of the tenant whose turn it is; that
        tenant then goes to the back of the turns.
        """
        tenant = next(iter(self._queues))
        queue = self._queues.pop(tenant)
        job = queue.popleft()
        if queue:
            self._queues[tenant] = queue
        self._count -= 1
        return job

    def drain(self) -> list[_Job]:
        jobs = [job for queue in self._queues.values() for job in queue]
        self._queues.clear()
        self._count = 0
        return jobs


class _Child(ProcessProtocol):
    """
    One parser process: its frames, and the one job it holds.
    """

    def __init__(self, pool: ParserPool) -> None:
        self.pool = pool
        self.ready = False
        self.job: Optional[_Job] = None
        self.ended: Deferred[None] = Deferred()
        self.gone = False
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            size = int.from_bytes(self._buffer[:4], "big")
            if size > MAX_FRAME:
                self.kill()
                return
            if len(self._buffer) < 4 + size:
                return
            body, self._buffer = self._buffer[4 : 4 + size], self._buffer[4 + size :]
            try:
                message = json.loads(body)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                _log.error("the PromQL parser process wrote what is not a frame; it is killed")
                self.kill()
                return
            self.pool._answered(self, message)

    def send(self, job: _Job) -> None:
        self.job = job
        assert self.transport is not None
        self.transport.write(job.frame)

    def kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except (ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason: Failure) -> None:
        self.gone = True
        self.pool._ended(self, reason)
        self.ended.callback(None)


@implementer(IPromQLParser)
class ParserPool:
    """
    Up to C{processes} parser processes, started when first needed.

    @ivar budget: seconds one query may take its process.
    @ivar max_waiting: queries that may wait for a process; more are
        refused with L{ParserUnavailable} at once.
    @ivar max_waiting_per_tenant: of those, how many one tenant's may be
        (a quarter by default), so that one tenant's flood of costly
        queries cannot fill the queue the others need.  Waiting queries
        are taken from the tenants in turn.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        processes: int = 1,
        budget: float = 2.0,
        max_waiting: int = 64,
        max_waiting_per_tenant: Optional[int] = None,
        command: Optional[Sequence[str]] = None,
    ) -> None:
        self.reactor = reactor
        self.processes = processes
        self.budget = budget
        self.max_waiting = max_waiting
        self.max_waiting_per_tenant = (
            max_waiting_per_tenant
            if max_waiting_per_tenant is not None
            else max(1, max_waiting // 4)
        )
        self.command = list(command or [sys.executable, "-m", "sealgw.tenancy._child"])
        self.children: list[_Child] = []
        self.waiting = _FairQueue()
        self.stopping = False

    def enforce(self, kind: str, text: str, tenant: TenantLabel, bounds: PromQLBounds) -> Deferred[str]:
        if self.stopping:
            return fail(ParserUnavailable("the gateway is stopping"))
        if len(self.waiting) >= self.max_waiting:
            return fail(ParserUnavailable(
                f"{self.max_waiting} queries are already waiting for the PromQL parser"
            ))
        key = str(tenant)
        if self.waiting.waiting_for(key) >= self.max_waiting_per_tenant:
            return fail(ParserUnavailable(
                f"{self.max_waiting_per_tenant} of this tenant's queries are already waiting "
                "for the PromQL parser"
            ))

        def cancel(d: Deferred[str]) -> None:
            # A query not yet sent is dropped; one in a process runs out
            # its budget, and its answer is ignored.
            self.waiting.remove(job)

        job = _Job(encode_frame(request(kind, text, tenant, bounds)), Deferred(cancel), key)
        self.waiting.append(job)
        self._dispatch()
        return job.done

    def _dispatch(self) -> None:
        while self.waiting:
            idle = next((c for c in self.children if c.ready and c.job is None), None)
            if idle is None:
                break
            job = self.waiting.popleft()
            job.timer = self.reactor.callLater(self.budget, self._overrun, idle, job)
            idle.send(job)
        starting = sum(1 for c in self.children if not c.ready)
        if self.waiting and starting == 0 and len(self.children) < self.processes:
            self._start()

    def _start(self) -> None:
        child = _Child(self)
        # The child imports this very sealgw, wherever it was imported
        # from, and gets nothing else of the gateway's environment (no
        # credentials in it).
        env = {
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "PATH": os.environ.get("PATH", ""),
        }
        self.children.append(child)
        try:
            self.reactor.spawnProcess(
                child, self.command[0], self.command, env=env, childFDs={0: "w", 1: "r", 2: 2}
            )
        except OSError as e:
            self.children.remove(child)
            _log.error("the PromQL parser process could not start: {why}", why=str(e))
            self._fail_waiting("the PromQL parser could not start")

    def _answered(self, child: _Child, message: dict[str, Any]) -> None:
        if message.get("ready"):
            child.ready = True
            self._dispatch()
            return
        job, child.job = child.job, None
        if job is None:
            return
        if job.timer is not None and job.timer.active():
            job.timer.cancel()
        if not job.done.called:
            _outcome(message).chainDeferred(job.done)
        self._dispatch()

    def _overrun(self, child: _Child, job: _Job) -> None:
        """
        A query took longer than the budget: its process is killed (the
        parser cannot be interrupted) and the query refused.
        """
        if child.job is not job:
            return
        child.job = None
        _log.warn(
            "a PromQL query took its parser process more than {budget}s; the process is "
            "killed and replaced",
            budget=self.budget,
        )
        child.kill()
        if not job.done.called:
            job.done.errback(ParseBudgetExceeded(
                f"checking the query took longer than the {self.budget:g}s the gateway gives "
                "one query (query.promql.parse_timeout)"
            ))

    def _ended(self, child: _Child, reason: Failure) -> None:
        if child in self.children:
            self.children.remove(child)
        job, child.job = child.job, None
        if not child.ready and not self.stopping:
            _log.error("the PromQL parser process ended before it was ready: {why}",
                       why=reason.getErrorMessage())
            self._fail_waiting("the PromQL parser could not start")
        if job is not None:
            if job.timer is not None and job.timer.active():
                job.timer.cancel()
            if not job.done.called:
                if self.stopping:
                    job.done.errback(ParserUnavailable("the gateway is stopping"))
                else:
                    if not reason.check(ProcessDone):
                        _log.warn("the PromQL parser process ended on a query: {why}",
                                  why=reason.getErrorMessage())
                    job.done.errback(LabelEnforcementError(
                        "the query cannot be checked: the PromQL parser ended on it"
                    ))
        if not self.stopping:
            self._dispatch()

    def _fail_waiting(self, why: str) -> None:
        for job in self.waiting.drain():
            if not job.done.called:
                job.done.errback(ParserUnavailable(why))

    def stop(self) -> Deferred[None]:
        """
        Close every child's input (it ends when it has answered), kill
        those still there after L{STOP_GRACE}.
        """
        self.stopping = True
        self._fail_waiting("the gateway is stopping")
        children = list(self.children)
        timers = []
        for child in children:
            job = child.job
            if job is not None and job.timer is not None and job.timer.active():
                # The grace decides now; the query is refused as the
                # gateway stops, not for its time.
                job.timer.cancel()
            if child.transport is not None:
                child.transport.closeStdin()
            timers.append(self.reactor.callLater(STOP_GRACE, child.kill))

        done: Deferred[None] = Deferred()

        def stopped(_: object) -> None:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            if not done.called:
                done.callback(None)

        # A child whose end is never reported (a reactor without its
        # SIGCHLD handler) does not hold the gateway's stop for ever.
        timers.append(self.reactor.callLater(2 * STOP_GRACE, stopped, None))
        ended = DeferredList([c.ended for c in children if not c.gone], consumeErrors=True)
        ended.addCallback(stopped)
        return done
