"""
The main process of a gateway with workers: it binds the listeners, then
serves nothing itself; worker processes adopt the listening sockets and
serve every listener, and the main process keeps them running.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from typing import Any, Optional

from prometheus_client.multiprocess import mark_process_dead
from twisted.application.service import MultiService
from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver
from zope.interface import implementer

import sealgw
from sealgw.config import Config
from sealgw.daemon._handoff import (
    FIRST_SOCKET,
    FROM_MAIN,
    TO_MAIN,
    InheritedSocket,
    WorkerSetup,
    encode_setup,
)
from sealgw.daemon._listeners import Listener
from sealgw.daemon._service import GatewayService
from sealgw.daemon._supervisor import IWorkerLauncher, Supervisor

#: What runs a worker: this Python, this module.
WORKER_MODULE = "sealgw.daemon.worker"

#: Variables a worker must not inherit: systemd's socket-activation ones
#: describe the main process's descriptors (the worker gets its own).
_NOT_INHERITED = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class NotServed(Factory):
    """
    The factory the main process binds its listeners with.  It never
    accepts (the workers do); were it ever to, the connection is closed.
    """

    noisy = False

    def buildProtocol(self, addr: Any) -> None:  # type: ignore[override]
        return None


@implementer(IWorkerLauncher)
class ProcessLauncher:
    """
    Starts workers as C{python -m sealgw.daemon.worker}: with the listening
    sockets from descriptor L{FIRST_SOCKET} on, their L{WorkerSetup} on
    standard input, the main process's standard output and error, and
    C{PROMETHEUS_MULTIPROC_DIR} naming a private folder made for this run.
    """

    def __init__(self, reactor: Any, config: Config) -> None:
        self.reactor = reactor
        self.config = config
        self.sockets: list[tuple[str, int, int]] = []
        self.metrics_dir: Optional[str] = None

    def start(self, listeners: Iterable[Listener]) -> None:
        """
        Take the bound listeners' sockets, and make the metrics folder.
        """
        self.sockets = [
            (li.where, li.port.fileno(), li.port.socket.family)
            for li in listeners
            if li.port is not None
        ]
        # Fresh for every run: files left by an earlier one would add
        # their counts to this one's.
        self.metrics_dir = tempfile.mkdtemp(prefix="sealgw-metrics-")

    def launch(self, index: int, protocol: IProcessProtocol) -> None:
        assert self.metrics_dir is not None, "start() comes first"
        setup = WorkerSetup(
            config=self.config,
            index=index,
            count=self.config.workers,
            sockets=tuple(
                InheritedSocket(where, FIRST_SOCKET + i, family)
                for i, (where, _, family) in enumerate(self.sockets)
            ),
            metrics_dir=self.metrics_dir,
        )
        child_fds: dict[int, Any] = {FROM_MAIN: "w", 1: 1, 2: 2, TO_MAIN: "r"}
        for i, (_, fd, _) in enumerate(self.sockets):
            child_fds[FIRST_SOCKET + i] = fd
        transport = self.reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", WORKER_MODULE, f"--index={index}"],
            env=self._environment(),
            childFDs=child_fds,
        )
        transport.writeToChild(FROM_MAIN, encode_setup(setup))

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        assert self.metrics_dir is not None
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        # The sealgw this process runs, whatever put it on sys.path.
        here = os.path.dirname(os.path.dirname(os.path.abspath(sealgw.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
        return env

    def ended(self, pid: int) -> None:
        """
        A worker's live gauges (requests in flight, open connections) go
        with it; its counters and histograms stay in the daemon's sums.
        """
        if self.metrics_dir is not None:
            mark_process_dead(pid, self.metrics_dir)

    def close(self) -> None:
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None


class WorkersService(GatewayService):
    """
    The main process: binds every listener (while still privileged, and
    failing start-up in one line as a single gateway does), never accepts
    on them, and hands them to the workers the L{Supervisor} keeps running.

    SIGHUP is forwarded to every worker.  Stopping closes this process's
    copies of the sockets, forwards SIGTERM, and waits for the workers'
    drains (see L{Supervisor.stopService}).
    """

    def __init__(
        self,
        reactor: Any,
        listeners: Iterable[Listener],
        drain_grace: float,
        launcher: ProcessLauncher,
        supervisor: Supervisor,
        log_observer: Optional[ILogObserver] = None,
        install_signal_handlers: bool = True,
    ) -> None:
        super().__init__(
            reactor,
            listeners,
            [],
            drain_grace,
            log_observer=log_observer,
            install_signal_handlers=install_signal_handlers,
        )
        self.launcher = launcher
        self.supervisor = supervisor
        supervisor.setServiceParent(self)

    def _bind(self) -> None:
        super()._bind()
        self._hold()

    def _hold(self) -> None:
        for li in self.listeners:
            if li.port is not None:
                li.port.stopReading()
                # The workers share each socket: shutdown() would stop it
                # listening for them too.  Ours is only to be closed (as
                # Twisted does for sockets it adopted).
                li.port._shouldShutdown = False

    def _listening(self) -> None:
        self._hold()
        super()._listening()
        self.launcher.start(self.listeners)
        self.supervisor.start()

    def reload(self) -> None:
        self.supervisor.reload()

    async def _drain(self) -> None:
        self.draining = True
        self.log.info(
            "draining: stopping {count} workers, each with up to {grace:g}s for its "
            "requests in flight",
            count=self.supervisor.count,
            grace=self.drain_grace,
        )
        await self._stop_listening()
        await MultiService.stopService(self)
        self.launcher.close()
        self.log.info("drained: every worker has stopped")
