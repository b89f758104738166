"""
A thread pool of the gateway's own for work that would stall the reactor:
decoding large bodies and writing files.

The reactor's default pool also runs Twisted's DNS lookups, so a burst of
big pushes queued there would delay every upstream connect behind them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

#: Threads for CPU and disk work.  Decoding holds the GIL, so more threads
#: buy no speed there; a few let a slow disk write and a decode overlap.
DEFAULT_SIZE = 4


class WorkerThreads(Service):
    """
    Runs blocking callables off the reactor thread, on a pool started and
    stopped with the gateway.

    Work handed over before the service starts waits in the queue and runs
    once it does.
    """

    name = "worker-threads"

    def __init__(self, reactor: Any, size: int = DEFAULT_SIZE) -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name="sealgw-work")

    def run(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call C{f(*args, **kwargs)} in a worker thread; the result (or its
        failure) fires on the reactor thread.  C{f} must not touch the
        reactor.
        """
        return deferToThreadPool(self._reactor, self.pool, f, *args, **kwargs)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        # Called once the drain is over: what is still queued is a write
        # whose request was answered, so let it finish.
        self.pool.stop()
