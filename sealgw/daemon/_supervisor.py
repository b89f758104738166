"""
Keeping the worker processes running: each is started, watched,
restarted with backoff when it ends, told of SIGHUP, and stopped on a
drain.  What starts a process is a seam (L{IWorkerLauncher}), so all of
this runs on a L{twisted.internet.task.Clock} in tests.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, Optional

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessProtocol, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from sealgw.daemon._handoff import FROM_MAIN, SERVING, TO_MAIN, encode_state
from sealgw.daemon._leases import MAX_LINE, LeaseServer

#: Seconds before restarting a worker that ended after running a while;
#: each quick exit in a row doubles it, up to L{MAX_BACKOFF}.
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
#: A worker that ran this long had started well: its end is not part of a
#: crash loop, and its restart waits L{INITIAL_BACKOFF} again.
STABLE_AFTER = 10.0
#: Quick exits in a row that make a crash loop (logged as critical and
#: counted; the worker is still restarted, every L{MAX_BACKOFF} at most).
CRASH_LOOP = 5
#: The exit status of a worker that found, while starting, that the
#: gateway cannot run as configured (an upstream's first Entra ID token
#: refused): what ends a single-process gateway with status 1.  Before any
#: worker has served, it ends the whole daemon the same way; afterwards it
#: is one more worker end, restarted with backoff, since the others serve.
FAILED_TO_START = 3
#: How long past C{drain_grace} a worker may take to stop after SIGTERM
#: (its own drain ends at C{drain_grace}; then it closes its upstreams)
#: before it is killed; and how long a killed one is then waited for.
KILL_MARGIN = 5.0

# A worker's states, as /health shows them.
STARTING = "starting"
SERVING_STATE = "serving"
RESTARTING = "restarting"
STOPPING = "stopping"
STOPPED = "stopped"


class IWorkerLauncher(Interface):
    """
    What starts worker processes.
    """

    def launch(index: int, protocol: IProcessProtocol) -> None:
        """
        Start worker C{index}, connected to C{protocol}
        (C{makeConnection}) before this returns.

        @raise Exception: when no process could be started.
        """

    def ended(pid: int) -> None:
        """
        Tidy what a worker process that has ended left behind.
        """


class WorkerProcess(ProcessProtocol):
    """
    One run of one worker: its pid, whether it said it is serving, and a
    L{Deferred} that fires once it has ended.
    """

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: Optional[int] = None
        self.serving = False
        self.ended: Deferred[None] = Deferred()
        self.reason: Optional[Failure] = None
        self._said = b""

    def connectionMade(self) -> None:
        self.pid = getattr(self.transport, "pid", None)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != TO_MAIN:
            return
        # A line at a time: SERVING once, then the worker's requests for
        # limit decisions (sealgw.daemon._leases).
        self._said += data
        *lines, self._said = self._said.split(b"\n")
        if len(self._said) > MAX_LINE:
            self._said = b""  # no request is this long: not one to keep
        for line in lines:
            if line + b"\n" == SERVING:
                if not self.serving:
                    self.serving = True
                    self.supervisor._serving(self)
            elif line and self.supervisor.leases is not None:
                answer = self.supervisor.leases.handle(line)
                if answer is not None:
                    self.send(answer)

    def processEnded(self, reason: Failure) -> None:  # type: ignore[override]
        self.reason = reason
        self.supervisor._ended(self, reason)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)  # type: ignore[union-attr]
        except (ProcessExitedAlready, OSError, AttributeError):
            pass  # it has ended, or is ending: processEnded says so

    def send(self, data: bytes) -> None:
        try:
            self.transport.writeToChild(FROM_MAIN, data)  # type: ignore[union-attr]
        except (KeyError, OSError, AttributeError):
            pass  # its end of the pipe is closed: it is ending


@attr.define
class _Slot:
    """
    One of the C{count} workers, across its restarts.

    @ivar quick_exits: ends in a row within L{STABLE_AFTER} of starting.
    """

    index: int
    process: Optional[WorkerProcess] = None
    state: str = STARTING
    started: float = 0.0
    restarts: int = 0
    quick_exits: int = 0
    last_exit: Optional[str] = None
    restart: Optional[IDelayedCall] = None


class Supervisor(Service):
    """
    Keeps C{count} workers running.

    A worker that ends while the daemon is not stopping is restarted after
    a backoff: L{INITIAL_BACKOFF}, doubled for each quick exit in a row,
    at most L{MAX_BACKOFF}.  L{CRASH_LOOP} quick exits in a row are a crash
    loop: logged as critical and counted, and the worker is still
    restarted.  Nothing stops the supervisor but L{stopService}.

    Every change is sent to the workers serving (L{status}), so that any
    of them answers C{/health} and C{/ready} for the whole daemon.

    @ivar restarts: workers restarted since the start.
    @ivar crash_loops: times a worker entered a crash loop.
    """

    log = Logger()
    name = "workers"

    def __init__(
        self,
        count: int,
        launcher: IWorkerLauncher,
        clock: IReactorTime,
        drain_grace: float,
        on_fatal: Optional[Callable[[str], None]] = None,
        leases: Optional[LeaseServer] = None,
    ) -> None:
        """
        @param on_fatal: called with the reason when a worker exits with
            L{FAILED_TO_START} before any worker has served: the daemon
            cannot start, and this ends it (twistd's exit with status 1).
        @param leases: the limits the workers ask for their decisions;
            a worker's places in flight are freed when it ends.
        """
        self.leases = leases
        self.count = count
        self.on_fatal = on_fatal
        self.served = False
        self.launcher = launcher
        self.clock = clock
        self.drain_grace = drain_grace
        self.slots = [_Slot(index) for index in range(count)]
        self.restarts = 0
        self.crash_loops = 0
        self.stopping = False
        self._launched = False
        #: Each called as a worker is launched, for a message it is sent
        #: right after its setup (what it needs before it can serve).
        self.greetings: list[Callable[[], bytes]] = []

    def start(self) -> None:
        """
        Start every worker; called once the listening sockets are bound.
        """
        if self._launched or self.stopping:
            return
        self._launched = True
        for slot in self.slots:
            self._launch(slot)

    def _launch(self, slot: _Slot) -> None:
        # Never raises: it runs from timers, and a slot must not be lost.
        process = WorkerProcess(self, slot.index)
        slot.process = process
        slot.state = STARTING
        slot.started = self.clock.seconds()
        try:
            self.launcher.launch(slot.index, process)
        except Exception:
            self.log.failure("worker {index} could not be started", index=slot.index)
            if slot.process is process:
                slot.process = None
                self._after_end(slot, "could not be started")
            return
        self.log.info("worker {index} started (pid {pid})", index=slot.index, pid=process.pid)
        for greeting in self.greetings:
            try:
                process.send(greeting())
            except Exception:
                self.log.failure("greeting worker {index} failed", index=slot.index)

    def _serving(self, process: WorkerProcess) -> None:
        slot = self.slots[process.index]
        if slot.process is not process or self.stopping:
            return
        slot.state = SERVING_STATE
        self.served = True
        self.log.info("worker {index} (pid {pid}) is serving", index=slot.index, pid=process.pid)
        self._broadcast()

    def _ended(self, process: WorkerProcess, reason: Failure) -> None:
        slot = self.slots[process.index]
        if slot.process is not process:
            return
        slot.process = None
        how = describe_end(reason)
        slot.last_exit = how
        if process.pid is not None and self.leases is not None:
            self.leases.worker_ended(process.pid)
        if process.pid is not None:
            try:
                self.launcher.ended(process.pid)
            except Exception:
                self.log.failure("tidying after worker {index} failed", index=slot.index)
        if self.stopping:
            slot.state = STOPPED
            self.log.info(
                "worker {index} (pid {pid}) {how}", index=slot.index, pid=process.pid, how=how
            )
            return
        if _exit_status(reason) == FAILED_TO_START and not self.served and self.on_fatal:
            slot.state = STOPPED
            why = (
                f"worker {slot.index} cannot start with this configuration (its log line "
                "above says why); the daemon stops"
            )
            self.log.critical("{why}", why=why)
            self.on_fatal(why)
            return
        self._after_end(slot, f"(pid {process.pid}) {how}")
        self._broadcast()

    def _after_end(self, slot: _Slot, what: str) -> None:
        """
        Schedule the restart of a worker that ended, with backoff.
        """
        if self.clock.seconds() - slot.started >= STABLE_AFTER:
            slot.quick_exits = 0
        delay = min(MAX_BACKOFF, INITIAL_BACKOFF * 2 ** min(slot.quick_exits, 32))
        slot.quick_exits += 1
        slot.state = RESTARTING
        if slot.quick_exits == CRASH_LOOP:
            self.crash_loops += 1
            self.log.critical(
                "worker {index} {what}, {quick} times in a row within {stable:g}s of "
                "starting: a crash loop.  It is restarted every {most:g}s at most until "
                "it stays up; its log lines above say why it ends",
                index=slot.index, what=what, quick=slot.quick_exits, stable=STABLE_AFTER,
                most=MAX_BACKOFF,
            )
        else:
            self.log.error(
                "worker {index} {what}; restarting it in {delay:g}s",
                index=slot.index, what=what, delay=delay,
            )
        slot.restart = self.clock.callLater(delay, self._restart, slot)

    def _restart(self, slot: _Slot) -> None:
        slot.restart = None
        if self.stopping:
            return
        slot.restarts += 1
        self.restarts += 1
        self._launch(slot)

    def reload(self) -> None:
        """
        Forward SIGHUP to every worker running.
        """
        processes = self._running()
        self.log.info("SIGHUP: forwarded to {count} workers", count=len(processes))
        for process in processes:
            process.signal("HUP")

    def stopService(self) -> Deferred[None]:
        """
        Send SIGTERM to every worker (each drains as a single gateway does),
        and fire once all have ended.  A worker still running
        C{drain_grace} + L{KILL_MARGIN} seconds later is killed.
        """
        super().stopService()
        self.stopping = True
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
            if slot.process is None:
                slot.state = STOPPED
        processes = self._running()
        if not processes:
            return succeed(None)
        for process in processes:
            self.slots[process.index].state = STOPPING
            process.signal("TERM")
        done: Deferred[None] = Deferred()

        def settle(_: object = None) -> None:
            if not done.called:
                done.callback(None)

        ended = DeferredList([p.ended for p in processes], consumeErrors=True)
        ended.addCallback(settle)
        limit = self.drain_grace + KILL_MARGIN
        killer = self.clock.callLater(limit, self._kill, processes, limit, settle)

        def finished(_: object) -> None:
            if killer.active():
                killer.cancel()

        return done.addCallback(finished)

    def _kill(self, processes: list[WorkerProcess], waited: float, settle: Any) -> None:
        left = [p for p in processes if p.reason is None]
        for process in left:
            self.log.warn(
                "worker {index} (pid {pid}) still running {waited:g}s after SIGTERM; killing it",
                index=process.index, pid=process.pid, waited=waited,
            )
            process.signal("KILL")
        if left:
            # A process that does not end even now is not waited for forever.
            self.clock.callLater(KILL_MARGIN, settle)

    def _running(self) -> list[WorkerProcess]:
        return [slot.process for slot in self.slots if slot.process is not None]

    def status(self) -> dict[str, Any]:
        """
        The daemon's workers as the supervisor sees them: JSON-able, sent to
        every worker (L{sealgw.daemon._view.DaemonView}).
        """
        return {
            "configured": self.count,
            "serving": sum(1 for slot in self.slots if slot.state == SERVING_STATE),
            "restarts": self.restarts,
            "crash_loops": self.crash_loops,
            "workers": [
                {
                    "index": slot.index,
                    "pid": slot.process.pid if slot.process is not None else None,
                    "state": slot.state,
                    "restarts": slot.restarts,
                    "last_exit": slot.last_exit,
                }
                for slot in self.slots
            ],
        }

    def tell_all(self, data: bytes) -> None:
        """
        Send C{data} (one message) to every worker running, those still
        starting included: it follows their setup on the pipe.
        """
        for process in self._running():
            process.send(data)

    def _broadcast(self) -> None:
        data = encode_state(self.status())
        for process in self._running():
            # Those still starting are reading their setup; they get the
            # state once they serve, which is itself a change.
            if process.serving:
                process.send(data)


def _exit_status(reason: Failure) -> Optional[int]:
    error = reason.value
    if isinstance(error, ProcessTerminated) and error.signal is None:
        code: Optional[int] = error.exitCode
        return code
    return None


def describe_end(reason: Failure) -> str:
    """
    How a process ended, in a few words.
    """
    error = reason.value
    if isinstance(error, ProcessDone):
        return "exited with status 0"
    if isinstance(error, ProcessTerminated):
        if error.signal is not None:
            try:
                name = signal.Signals(error.signal).name
            except ValueError:
                name = "unknown"
            return f"was killed by signal {error.signal} ({name})"
        return f"exited with status {error.exitCode}"
    return f"ended: {error}"
