"""
The daemon as one worker process sees it: which worker it is, the
sockets it adopts, and the supervisor's latest word on every worker,
which its C{/health}, C{/ready} and C{/metrics} report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import attr
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet import main as connection_done
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReadDescriptor, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sealgw.daemon._handoff import WorkerSetup
from sealgw.daemon._health import DEGRADED, DOWN, OK
from sealgw.daemon._listeners import adopted_endpoint


class DaemonView:
    """
    The supervisor's latest state (L{sealgw.daemon._supervisor.Supervisor.status}),
    as a C{workers} component of C{/health}, a C{workers} condition of
    C{/ready}, and a collector of the C{sealgw_workers_*} series.

    Until the first state arrives (it comes once this worker serves) the
    daemon is not known to be whole, and this worker is not ready.
    """

    def __init__(self, index: int, pid: int) -> None:
        self.index = index
        self.pid = pid
        self.state: Optional[dict[str, Any]] = None

    def update(self, state: dict[str, Any]) -> None:
        self.state = state

    def health(self) -> dict[str, Any]:
        answered_by = {"index": self.index, "pid": self.pid}
        state = self.state
        if state is None:
            return {"status": DEGRADED, "answered_by": answered_by, "error": "no word yet"}
        serving, configured = state.get("serving", 0), state.get("configured", 0)
        status = OK if serving >= configured else DEGRADED if serving else DOWN
        return {"status": status, "answered_by": answered_by, **state}

    def ready(self) -> bool:
        state = self.state
        return state is not None and state.get("serving", 0) >= state.get("configured", 1)

    def collect(self) -> Iterator[Metric]:
        state = self.state or {}
        configured = GaugeMetricFamily(
            "sealgw_workers_configured", "Worker processes the daemon runs (workers)."
        )
        configured.add_metric([], state.get("configured", 0))
        serving = GaugeMetricFamily(
            "sealgw_workers_serving", "Worker processes accepting connections."
        )
        serving.add_metric([], state.get("serving", 0))
        restarts = CounterMetricFamily(
            "sealgw_worker_restarts", "Worker processes restarted after they ended."
        )
        restarts.add_metric([], state.get("restarts", 0))
        loops = CounterMetricFamily(
            "sealgw_worker_crash_loops",
            "Times a worker ended soon after starting several times in a row.",
        )
        loops.add_metric([], state.get("crash_loops", 0))
        yield from (configured, serving, restarts, loops)


@implementer(IReadDescriptor)
class ControlChannel:
    """
    Reads the main process's pipe: a JSON object a line.  One with a
    C{reply} answers this worker's request for a limit decision and goes
    to C{replies}; one with a C{kind} goes to that kind's handler
    (L{sealgw.daemon._handoff} names the kinds); one with neither is the
    daemon's state, handed to C{update}.  When the pipe closes the main
    process has gone (killed, or crashed) and C{orphaned} is called: a
    worker must not serve on without a supervisor.

    A line is never logged: some carry tokens.
    """

    log = Logger()

    def __init__(
        self,
        fd: int,
        update: Callable[[dict[str, Any]], None],
        orphaned: Callable[[], None],
        replies: Optional[Callable[[dict[str, Any]], None]] = None,
        handlers: Optional[Mapping[str, Callable[[dict[str, Any]], None]]] = None,
    ) -> None:
        self._fd = fd
        self._update = update
        self._replies = replies
        self._orphaned = orphaned
        self._handlers = dict(handlers or {})
        self._buffer = b""
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "main process"

    # The reactor wants what Twisted's own descriptors return: an
    # exception (main.CONNECTION_DONE), whatever IReadDescriptor says.
    def doRead(self) -> Optional[BaseException]:  # type: ignore[override]
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            # The reactor then removes this reader and calls connectionLost.
            return connection_done.CONNECTION_DONE
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        states = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                self.log.error(
                    "unreadable line ({size} bytes) from the main process", size=len(line)
                )
                continue
            if not isinstance(message, dict):
                continue
            if "reply" in message:
                if self._replies is not None:
                    self._replies(message)
                continue
            kind = message.get("kind")
            if kind is None:
                states.append(message)
                continue
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            body = message.get("body")
            if handler is None or not isinstance(body, dict):
                self.log.error("unknown message from the main process: {kind!r}",
                               kind=str(kind)[:64])
                continue
            self._dispatch(handler, body, kind)
        if states:
            self._update(states[-1])  # only the latest state matters
        return None

    def _dispatch(
        self, handler: Callable[[dict[str, Any]], None], body: dict[str, Any], kind: str
    ) -> None:
        # A handler's failure must not end the channel: the reactor would
        # drop this reader and the worker would be deaf to its main process.
        try:
            handler(body)
        except Exception:
            self.log.failure("handling a {kind} message from the main process failed",
                             kind=kind)

    def connectionLost(self, reason: Failure) -> None:
        # The end of the pipe (not the reactor letting go of every reader
        # as it shuts down, which is ConnectionLost).
        if reason.check(ConnectionDone):
            self.log.warn("the main process has gone; stopping")
            self._orphaned()


@attr.frozen
class Worker:
    """
    This process is worker C{setup.index} of C{setup.count}: what
    L{sealgw.build.build_gateway} does differently in a worker.
    """

    setup: WorkerSetup
    view: DaemonView
    #: How this worker asks the main process for limit decisions
    #: (a L{sealgw.daemon._leases.LeaseClient}).
    leases: Optional[Any] = None

    @property
    def index(self) -> int:
        return self.setup.index

    @property
    def count(self) -> int:
        return self.setup.count

    def endpoint(self, reactor: Any, where: str) -> IStreamServerEndpoint:
        """
        Where listener C{where} listens: the socket the main process bound.

        @raise KeyError: for a listener the main process did not hand over.
        """
        for inherited in self.setup.sockets:
            if inherited.where == where:
                return adopted_endpoint(reactor, inherited.fd, inherited.family)
        raise KeyError(where)
