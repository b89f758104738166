"""
Workers without processes: the supervisor on a Clock with a fake
launcher (restarts with backoff, crash loops, SIGHUP and SIGTERM
forwarding, killing what outlives the drain), the main process's hold on
the sockets, what a worker knows of the daemon, and the per-worker
shares of limits, files and metrics.
"""

from __future__ import annotations

import io
import json
import os
import socket
import textwrap
from collections.abc import Callable
from typing import Any, Optional, cast

from prometheus_client import generate_latest, values
from prometheus_client.multiprocess import mark_process_dead
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone, ConnectionLost, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from sealgw.auth import Identity, RateLimited
from sealgw.auth._limits import Limiter
from sealgw.config import (
    ConfigError,
    FileUpstreamConfig,
    ListenerConfig,
    RateLimitConfig,
    TLSConfig,
    load,
)
from sealgw.daemon import Listener, make_observer, prepare_listener
from sealgw.daemon._handoff import (
    InheritedSocket,
    WorkerSetup,
    encode_setup,
    encode_state,
    read_setup,
)
from sealgw.daemon._limits import ConnectionLimit
from sealgw.daemon._listeners import adopted_endpoint
from sealgw.daemon._logging import WorkerTag
from sealgw.daemon._supervisor import (
    CRASH_LOOP,
    FAILED_TO_START,
    INITIAL_BACKOFF,
    KILL_MARGIN,
    MAX_BACKOFF,
    IWorkerLauncher,
    Supervisor,
    WorkerProcess,
    describe_end,
)
from sealgw.daemon._view import ControlChannel, DaemonView
from sealgw.daemon._workers import NotServed, WorkersService
from sealgw.relay import FileUpstream, Push
from sealgw.web import GatewayMetrics
from sealgw.web._metrics import daemon_registry
from tests.certs import CertificateAuthority


class FakeProcess:
    """
    The transport of a worker that never ran: records signals and writes.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.written: list[tuple[int, bytes]] = []
        self.on_signal: Callable[[str], None] = lambda name: None

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)
        self.on_signal(name)

    def writeToChild(self, fd: int, data: bytes) -> None:
        self.written.append((fd, data))


@implementer(IWorkerLauncher)
class FakeLauncher:
    def __init__(self) -> None:
        self.launched: list[tuple[int, WorkerProcess, FakeProcess]] = []
        self.ended_pids: list[int] = []
        self.failures = 0
        self._next_pid = 1000

    def launch(self, index: int, protocol: IProcessProtocol) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("fork: Resource temporarily unavailable")
        self._next_pid += 1
        transport = FakeProcess(self._next_pid)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        assert isinstance(protocol, WorkerProcess)
        self.launched.append((index, protocol, transport))

    def ended(self, pid: int) -> None:
        self.ended_pids.append(pid)

    def latest(self, index: int) -> tuple[WorkerProcess, FakeProcess]:
        _, protocol, transport = [entry for entry in self.launched if entry[0] == index][-1]
        return protocol, transport


def serve(protocol: WorkerProcess) -> None:
    protocol.childDataReceived(3, b"serv")
    protocol.childDataReceived(3, b"ing\n")


def end(protocol: WorkerProcess, code: int = 1, signal: Optional[int] = None) -> None:
    if code == 0 and signal is None:
        protocol.processEnded(Failure(ProcessDone(0)))
    else:
        protocol.processEnded(Failure(ProcessTerminated(code if signal is None else None, signal)))


def states(transport: FakeProcess) -> list[dict[str, Any]]:
    return [json.loads(data) for fd, data in transport.written if fd == 0]


class SupervisorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.launcher = FakeLauncher()
        self.events: list[dict[str, Any]] = []
        self.supervisor = Supervisor(2, self.launcher, self.clock, drain_grace=20.0)
        self.supervisor.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.supervisor.startService()
        self.supervisor.start()

    def logged(self, level: LogLevel) -> list[dict[str, Any]]:
        return [e for e in self.events if e["log_level"] == level]

    def test_starts_every_worker(self) -> None:
        """
        C{start} launches one process per worker; each is C{starting}
        until it says it serves, and every worker serving is told the
        daemon's state at each change.
        """
        self.assertEqual([index for index, _, _ in self.launcher.launched], [0, 1])
        self.assertEqual([w["state"] for w in self.supervisor.status()["workers"]],
                         ["starting", "starting"])
        first, first_transport = self.launcher.latest(0)
        second, second_transport = self.launcher.latest(1)
        serve(first)
        self.assertEqual(self.supervisor.status()["serving"], 1)
        self.assertEqual(states(first_transport)[-1]["serving"], 1)
        # Still reading its setup: it is told nothing yet.
        self.assertEqual(states(second_transport), [])
        serve(second)
        status = self.supervisor.status()
        self.assertEqual(status["serving"], 2)
        self.assertEqual(states(first_transport)[-1], status)
        self.assertEqual(states(second_transport)[-1], status)
        self.assertEqual(status["workers"][1]["pid"], second.pid)
        # start() again changes nothing.
        self.supervisor.start()
        self.assertEqual(len(self.launcher.launched), 2)

    def test_restart_after_backoff(self) -> None:
        """
        A worker that ends after running a while is restarted, in the
        same slot, after the initial backoff; its pid is handed to the
        launcher to tidy after.
        """
        first, _ = self.launcher.latest(0)
        serve(first)
        self.clock.advance(60)
        end(first, signal=9)
        self.assertEqual(self.launcher.ended_pids, [first.pid])
        slot = self.supervisor.status()["workers"][0]
        self.assertEqual(slot["state"], "restarting")
        self.assertEqual(slot["last_exit"], "was killed by signal 9 (SIGKILL)")
        self.assertEqual(slot["pid"], None)
        _, other_transport = self.launcher.latest(1)
        self.clock.advance(0.49)
        self.assertEqual(len(self.launcher.launched), 2)
        self.clock.advance(0.01)
        self.assertEqual(len(self.launcher.launched), 3)
        again, _ = self.launcher.latest(0)
        self.assertIsNot(again, first)
        self.assertEqual(self.supervisor.status()["workers"][0]["restarts"], 1)
        self.assertEqual(self.supervisor.restarts, 1)
        [error] = self.logged(LogLevel.error)
        self.assertIn("restarting it in 0.5s", error["log_format"].format(**error))

    def test_backoff_doubles_and_is_capped(self) -> None:
        """
        Each quick exit in a row doubles the wait, up to 30 seconds.
        """
        delays = []
        for _ in range(9):
            protocol, _ = self.launcher.latest(0)
            end(protocol)
            [call] = self.clock.getDelayedCalls()
            delays.append(call.getTime() - self.clock.seconds())
            self.clock.advance(delays[-1])
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 16, 30, 30, 30])

    def test_crash_loop(self) -> None:
        """
        L{CRASH_LOOP} quick exits in a row are logged as critical and
        counted once; restarts go on, and a worker that then stays up a
        while starts over with the initial backoff.
        """
        for _ in range(CRASH_LOOP + 3):
            protocol, _ = self.launcher.latest(0)
            end(protocol)
            self.clock.advance(30)
        self.assertEqual(self.supervisor.crash_loops, 1)
        [critical] = self.logged(LogLevel.critical)
        self.assertIn("crash loop", critical["log_format"])
        self.assertEqual(len(self.launcher.launched), 2 + CRASH_LOOP + 3)
        protocol, _ = self.launcher.latest(0)
        serve(protocol)
        self.clock.advance(60)
        end(protocol)
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime() - self.clock.seconds(), 0.5)
        # A second loop is a second count.
        for _ in range(CRASH_LOOP):
            self.clock.advance(30)
            protocol, _ = self.launcher.latest(0)
            end(protocol)
        self.assertEqual(self.supervisor.crash_loops, 2)
        self.assertEqual(self.supervisor.status()["crash_loops"], 2)

    def test_launch_failure_is_retried(self) -> None:
        """
        A process that cannot even be started counts as a quick exit: it
        is tried again after the backoff, and nothing escapes the timer.
        """
        protocol, _ = self.launcher.latest(0)
        self.launcher.failures = 2
        end(protocol)
        self.clock.advance(0.5)
        self.assertEqual(self.supervisor.status()["workers"][0]["state"], "restarting")
        self.clock.advance(1)
        self.assertEqual(self.supervisor.status()["workers"][0]["state"], "restarting")
        self.clock.advance(2)
        self.assertEqual(self.supervisor.status()["workers"][0]["state"], "starting")
        self.assertEqual(len(self.launcher.launched), 3)
        failures = [e for e in self.events if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 2)

    def test_sighup_forwarded(self) -> None:
        """
        SIGHUP goes to every worker running; one that has ended gets none.
        """
        first, first_transport = self.launcher.latest(0)
        second, second_transport = self.launcher.latest(1)
        serve(first)
        serve(second)
        self.supervisor.reload()
        self.assertEqual(first_transport.signals, ["HUP"])
        self.assertEqual(second_transport.signals, ["HUP"])
        end(second)
        self.supervisor.reload()
        self.assertEqual(first_transport.signals, ["HUP", "HUP"])
        self.assertEqual(second_transport.signals, ["HUP"])

    def test_sigterm_forwarded_and_waited_for(self) -> None:
        """
        Stopping sends SIGTERM to every worker and fires once all have
        ended; a worker waiting to be restarted is not, and none ending
        now is restarted.
        """
        first, first_transport = self.launcher.latest(0)
        second, second_transport = self.launcher.latest(1)
        serve(first)
        serve(second)
        self.clock.advance(60)
        end(second)  # waiting for its restart
        d = self.supervisor.stopService()
        self.assertEqual(first_transport.signals, ["TERM"])
        self.assertEqual(second_transport.signals, [])
        self.assertNoResult(d)
        self.clock.advance(10)
        self.assertNoResult(d)
        end(first, code=0)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.launcher.launched), 2)
        self.assertEqual(
            [w["state"] for w in self.supervisor.status()["workers"]], ["stopped", "stopped"]
        )
        self.assertEqual(self.launcher.ended_pids, [second.pid, first.pid])

    def test_killed_after_the_grace(self) -> None:
        """
        A worker still running C{drain_grace} + L{KILL_MARGIN} seconds
        after SIGTERM is killed; one that outlives even that is given up on.
        """
        first, first_transport = self.launcher.latest(0)
        second, second_transport = self.launcher.latest(1)
        d = self.supervisor.stopService()
        end(second, code=0)
        self.clock.advance(20 + KILL_MARGIN - 0.1)
        self.assertEqual(first_transport.signals, ["TERM"])
        self.clock.advance(0.1)
        self.assertEqual(first_transport.signals, ["TERM", "KILL"])
        self.assertEqual(second_transport.signals, ["TERM"])
        [warning] = self.logged(LogLevel.warn)
        self.assertEqual(warning["pid"], first.pid)
        self.assertNoResult(d)
        self.clock.advance(KILL_MARGIN)
        self.successResultOf(d)

    def test_stop_before_start(self) -> None:
        supervisor = Supervisor(2, self.launcher, self.clock, drain_grace=1.0)
        supervisor.startService()
        self.successResultOf(supervisor.stopService())
        supervisor.start()
        self.assertEqual(len(self.launcher.launched), 2)

    def test_failed_to_start_ends_the_daemon(self) -> None:
        """
        A worker that finds, starting, that the gateway cannot run (its
        fail-fast status) before any worker has served ends the daemon, as
        one process would end: no restart, one critical line, the hook
        called once.
        """
        fatal: list[str] = []
        supervisor = Supervisor(2, self.launcher, self.clock, drain_grace=1.0,
                                on_fatal=fatal.append)
        supervisor.log = self.supervisor.log
        supervisor.startService()
        supervisor.start()
        first, _ = self.launcher.latest(0)
        end(first, code=FAILED_TO_START)
        [why] = fatal
        self.assertIn("worker 0 cannot start with this configuration", why)
        self.clock.advance(MAX_BACKOFF)
        self.assertEqual(len(self.launcher.launched), 4)  # nothing relaunched
        self.assertEqual(supervisor.status()["workers"][0]["state"], "stopped")
        [critical] = self.logged(LogLevel.critical)
        self.assertEqual(critical["log_format"].format(**critical), why)

    def test_failed_to_start_after_serving_is_restarted(self) -> None:
        """
        Once a worker has served, the same status is one more worker end:
        the others serve, and it is restarted with backoff.
        """
        fatal: list[str] = []
        self.supervisor.on_fatal = fatal.append
        first, _ = self.launcher.latest(0)
        second, _ = self.launcher.latest(1)
        serve(first)
        end(second, code=FAILED_TO_START)
        self.assertEqual(fatal, [])
        self.clock.advance(INITIAL_BACKOFF)
        self.assertEqual(len(self.launcher.launched), 3)

    def test_describe_end(self) -> None:
        self.assertEqual(describe_end(Failure(ProcessDone(0))), "exited with status 0")
        self.assertEqual(
            describe_end(Failure(ProcessTerminated(3, None))), "exited with status 3"
        )
        self.assertEqual(
            describe_end(Failure(ProcessTerminated(None, 15))),
            "was killed by signal 15 (SIGTERM)",
        )


class _HoldingLauncher(FakeLauncher):
    """
    Stands in for L{sealgw.daemon._workers.ProcessLauncher}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sockets: list[Any] = []
        self.closed = False

    def start(self, listeners: Any) -> None:
        self.sockets = [li.port.fileno() for li in listeners]

    def close(self) -> None:
        self.closed = True


class WorkersServiceTests(TestCase):
    async def test_binds_holds_and_hands_over(self) -> None:
        """
        The main process binds, never accepts, starts the workers once
        bound, and on stopping closes its own copy of each socket without
        shutting it down, so a worker's copy goes on listening until the
        worker closes it.
        """
        clock = Clock()
        launcher = _HoldingLauncher()
        supervisor = Supervisor(1, launcher, clock, drain_grace=1.0)
        config = ListenerConfig(endpoint="tcp:0:interface=127.0.0.1")
        listener = Listener(
            "listeners[0]", config, serverFromString(reactor, config.endpoint), NotServed()
        )
        service = WorkersService(
            reactor, [listener], 1.0, launcher, supervisor,  # type: ignore[arg-type]
            install_signal_handlers=False,
        )
        service.privilegedStartService()
        service.startService()
        port = listener.port
        self.assertNotIn(port, reactor.getReaders())
        self.assertEqual(launcher.sockets, [port.fileno()])
        self.assertEqual(len(launcher.launched), 1)
        self.assertTrue(service.listening)
        # The worker's copy, as it would inherit it.
        worker_copy = socket.socket(fileno=os.dup(port.fileno()))
        self.addCleanup(worker_copy.close)
        address = port.getHost()
        protocol, transport = launcher.latest(0)
        transport.on_signal = lambda name: end(protocol, code=0)
        await service.stopService()
        self.assertEqual(transport.signals, ["TERM"])
        self.assertTrue(launcher.closed)
        self.assertFalse(service.listening)
        with socket.create_connection((address.host, address.port), timeout=5) as client:
            worker_copy.settimeout(5)
            accepted, _ = worker_copy.accept()
            accepted.close()
            self.assertIsNotNone(client)

    def test_reload_forwards(self) -> None:
        clock = Clock()
        launcher = _HoldingLauncher()
        supervisor = Supervisor(1, launcher, clock, drain_grace=1.0)
        service = WorkersService(
            clock, [], 1.0, launcher, supervisor,  # type: ignore[arg-type]
            install_signal_handlers=False,
        )
        service.startService()
        protocol, transport = launcher.latest(0)
        serve(protocol)
        service.reload()
        self.assertEqual(transport.signals, ["HUP"])


STATE = {
    "configured": 2,
    "serving": 2,
    "restarts": 3,
    "crash_loops": 1,
    "workers": [
        {"index": 0, "pid": 11, "state": "serving", "restarts": 3, "last_exit": "x"},
        {"index": 1, "pid": 12, "state": "serving", "restarts": 0, "last_exit": None},
    ],
}


class DaemonViewTests(SynchronousTestCase):
    def test_not_ready_before_word(self) -> None:
        view = DaemonView(1, 12)
        self.assertFalse(view.ready())
        self.assertEqual(view.health()["status"], "degraded")
        self.assertEqual(view.health()["answered_by"], {"index": 1, "pid": 12})

    def test_whole(self) -> None:
        view = DaemonView(1, 12)
        view.update(STATE)
        self.assertTrue(view.ready())
        health = view.health()
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["workers"], STATE["workers"])

    def test_one_missing(self) -> None:
        view = DaemonView(1, 12)
        view.update({**STATE, "serving": 1})
        self.assertFalse(view.ready())
        self.assertEqual(view.health()["status"], "degraded")
        view.update({**STATE, "serving": 0})
        self.assertEqual(view.health()["status"], "down")

    def test_metrics(self) -> None:
        view = DaemonView(0, 11)
        view.update(STATE)
        samples = {
            s.name: s.value for family in view.collect() for s in family.samples
        }
        self.assertEqual(samples["sealgw_workers_configured"], 2)
        self.assertEqual(samples["sealgw_workers_serving"], 2)
        self.assertEqual(samples["sealgw_worker_restarts_total"], 3)
        self.assertEqual(samples["sealgw_worker_crash_loops_total"], 1)


class ControlChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.read, self.write = os.pipe()
        self.addCleanup(os.close, self.read)
        self.updates: list[dict[str, Any]] = []
        self.orphaned: list[bool] = []
        self.channel = ControlChannel(
            self.read, self.updates.append, lambda: self.orphaned.append(True)
        )
        self.channel.log = Logger(observer=cast(ILogObserver, lambda e: None))

    def test_latest_state(self) -> None:
        """
        Lines may arrive in pieces and several at once: the latest whole
        state is the one taken.
        """
        data = encode_state({"serving": 1}) + encode_state({"serving": 2})
        os.write(self.write, data[:5])
        self.assertIsNone(self.channel.doRead())
        self.assertEqual(self.updates, [])
        os.write(self.write, data[5:] + b'{"serving"')
        self.assertIsNone(self.channel.doRead())
        self.assertEqual(self.updates, [{"serving": 2}])
        os.write(self.write, b": 3}\n")
        self.channel.doRead()
        self.assertEqual(self.updates[-1], {"serving": 3})
        os.close(self.write)

    def test_main_process_gone(self) -> None:
        """
        The end of the pipe means the main process has gone: the worker
        is told to stop.  The reactor letting go of the reader at shutdown
        is not that.
        """
        os.close(self.write)
        why = self.channel.doRead()
        self.assertIsInstance(why, ConnectionDone)
        self.channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.orphaned, [])
        self.channel.connectionLost(Failure(why))
        self.assertEqual(self.orphaned, [True])


class HandoffTests(SynchronousTestCase):
    def test_setup_round_trip(self) -> None:
        """
        The configuration the main process loaded reaches the worker whole,
        secrets included.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(textwrap.dedent("""\
                listeners: [{endpoint: "tcp:8080"}]
                upstreams:
                  mimir: {url: "http://mimir:8080", bearer_token: s3cret-value}
                workers: 3
                """))
        config = load(path)
        setup = WorkerSetup(
            config, 2, 3, (InheritedSocket("listeners[0]", 4, socket.AF_INET),), "/tmp/m"
        )
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        os.write(write, encode_setup(setup))
        os.close(write)
        self.assertEqual(read_setup(read), setup)

    def test_setup_cut_short(self) -> None:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        os.write(write, encode_setup(WorkerSetup(None, 0, 1, (), "/tmp"))[:12])  # type: ignore[arg-type]
        os.close(write)
        self.assertRaises(EOFError, read_setup, read)


class ConfigTests(SynchronousTestCase):
    def load(self, workers: str) -> Any:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f'listeners: [{{endpoint: "tcp:8080"}}]\n{workers}')
        return load(path)

    def test_default_one(self) -> None:
        self.assertEqual(self.load("").workers, 1)

    def test_number(self) -> None:
        self.assertEqual(self.load("workers: 4\n").workers, 4)

    def test_auto(self) -> None:
        self.assertEqual(self.load("workers: auto\n").workers, len(os.sched_getaffinity(0)))

    def test_problems(self) -> None:
        for value in ("0", "-1", "many", "true", "1.5"):
            e = self.assertRaises(ConfigError, self.load, f"workers: {value}\n")
            [problem] = e.problems
            self.assertIn("workers: ", problem)
            self.assertIn("is not a number of workers (a whole number from 1, or auto)", problem)


def identity(limits: RateLimitConfig) -> Identity:
    return Identity(name="alice", tenants=frozenset(["t"]), checker="token_file", limits=limits)


class SharedLimitTests(SynchronousTestCase):
    """
    Each of N workers enforces 1/N of every identity's limits.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_requests_divided(self) -> None:
        limiter = Limiter(self.clock, share=2)
        who = identity(RateLimitConfig(requests_per_second=10, burst=10))
        for _ in range(5):
            limiter.acquire(who, 0).release()
        e = self.assertRaises(RateLimited, limiter.acquire, who, 0)
        self.assertAlmostEqual(e.retry_after, 0.2)
        # The message names the identity's own limit, not the share.
        self.assertIn("more than 10 requests a second", str(e.message))
        self.clock.advance(0.2)
        limiter.acquire(who, 0).release()

    def test_small_burst(self) -> None:
        """
        A burst smaller than the worker count still lets a request through
        a full bucket, at the shared rate.
        """
        limiter = Limiter(self.clock, share=4)
        who = identity(RateLimitConfig(requests_per_second=1, burst=1))
        limiter.acquire(who, 0).release()
        e = self.assertRaises(RateLimited, limiter.acquire, who, 0)
        self.assertAlmostEqual(e.retry_after, 4.0)

    def test_bytes_divided(self) -> None:
        limiter = Limiter(self.clock, share=2)
        who = identity(RateLimitConfig(bytes_per_second=1000))
        limiter.acquire(who, 500).release()
        e = self.assertRaises(RateLimited, limiter.acquire, who, 100)
        self.assertEqual(e.reason, "byte_rate_limited")
        self.assertAlmostEqual(e.retry_after, 0.2)

    def test_concurrency_divided_rounded_up(self) -> None:
        limiter = Limiter(self.clock, share=2)
        who = identity(RateLimitConfig(max_concurrent=3))
        slots = [limiter.acquire(who, 0), limiter.acquire(who, 0)]
        e = self.assertRaises(RateLimited, limiter.acquire, who, 0)
        self.assertEqual(e.reason, "concurrency_limited")
        slots[0].release()
        limiter.acquire(who, 0)
        one = Limiter(self.clock, share=4)
        lone = identity(RateLimitConfig(max_concurrent=1))
        one.acquire(lone, 0)
        self.assertRaises(RateLimited, one.acquire, lone, 0)

    def test_single_process_unchanged(self) -> None:
        limiter = Limiter(self.clock)
        who = identity(RateLimitConfig(requests_per_second=10, burst=10, max_concurrent=3))
        for _ in range(3):
            limiter.acquire(who, 0)
        self.assertRaises(RateLimited, limiter.acquire, who, 0)


class FilePerWorkerTests(SynchronousTestCase):
    def test_names(self) -> None:
        config = FileUpstreamConfig(name="files", directory=os.path.abspath(self.mktemp()))
        p = Push(signal="loki", tenant="team-a", body=b"", content_type="application/json",
                 content_encoding=None)
        alone = FileUpstream(config, Clock())
        self.assertEqual(os.path.basename(alone.path_for(p)), "team-a.jsonl")
        second = FileUpstream(config, Clock(), worker=1)
        self.assertEqual(os.path.basename(second.path_for(p)), "team-a.1.jsonl")
        nobody = Push(signal="loki", tenant=None, body=b"", content_type="application/json",
                      content_encoding=None)
        self.assertEqual(os.path.basename(second.path_for(nobody)), "_none.1.jsonl")


class WorkerTagTests(SynchronousTestCase):
    def event(self) -> dict[str, Any]:
        return {
            "log_format": "GET / {status}",
            "status": 200,
            "log_level": LogLevel.info,
            "log_namespace": "sealgw.access",
            "log_time": 0.0,
        }

    def test_json(self) -> None:
        out = io.StringIO()
        WorkerTag(make_observer(out, "json"), 1, 4242)(self.event())
        line = json.loads(out.getvalue())
        self.assertEqual((line["worker"], line["pid"], line["message"]), (1, 4242, "GET / 200"))

    def test_text(self) -> None:
        out = io.StringIO()
        WorkerTag(make_observer(out, "text"), 1, 4242)(self.event())
        self.assertIn("[sealgw.access#info worker=1 pid=4242] GET / 200", out.getvalue())


class DaemonMetricsTests(SynchronousTestCase):
    def test_summed_over_workers(self) -> None:
        """
        C{/metrics} with workers: counters summed over every worker (ended
        ones too), gauges over the live ones, and the supervisor's figures.
        """
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        self.addCleanup(os.environ.pop, "PROMETHEUS_MULTIPROC_DIR")
        for pid in (101, 102):
            self.patch(values, "ValueClass", values.MultiProcessValue(lambda pid=pid: pid))
            metrics = GatewayMetrics()
            metrics.observe("loki", "POST", 204, "team-a", 0.01, 10, 0)
            metrics.in_flight.inc()
        view = DaemonView(0, 101)
        view.update(STATE)
        registry = daemon_registry(directory, [view])

        def sample(text: str, name: str) -> float:
            for line in text.splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
            raise AssertionError(f"{name} not in {text}")

        text = generate_latest(registry).decode()
        self.assertEqual(sample(text, "sealgw_http_requests_total"), 2)
        self.assertEqual(sample(text, "sealgw_http_requests_in_flight"), 2)
        self.assertEqual(sample(text, "sealgw_workers_serving"), 2)
        self.assertNotIn("process_resident_memory_bytes", text)
        mark_process_dead(102, directory)
        text = generate_latest(registry).decode()
        self.assertEqual(sample(text, "sealgw_http_requests_total"), 2)
        self.assertEqual(sample(text, "sealgw_http_requests_in_flight"), 1)


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


def _https_get(ca: str, port: int) -> bytes:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
    return answer


def _bound() -> tuple[socket.socket, int]:
    """
    A listening socket, as the main process hands it over, and a copy of
    its descriptor for a worker to adopt (adopting closes it).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock, os.dup(sock.fileno())


class AdoptedListenerTests(TestCase):
    async def test_tls_and_limit_around_adopted_socket(self) -> None:
        """
        In a worker, a listener on the inherited socket gets TLS and the
        connection limit exactly as one on its own endpoint does.
        """
        ca = CertificateAuthority(self.mktemp())
        server = ca.issue("server")
        sock, fd = _bound()
        self.addCleanup(sock.close)
        listener = prepare_listener(
            reactor,
            ListenerConfig(
                endpoint="ssl:8443",
                tls=TLSConfig(certificate=server.certificate, key=server.key),
                max_connections=5,
            ),
            Site(_Hello()),
            "listeners[0]",
            endpoint=adopted_endpoint(reactor, fd, socket.AF_INET),
        )
        self.assertIsInstance(listener.factory, ConnectionLimit)
        self.assertIsInstance(cast(Any, listener.factory).wrappedFactory, TLSMemoryBIOFactory)
        port = await listener.endpoint.listen(listener.factory)
        self.addCleanup(port.stopListening)
        self.assertRaises(OSError, os.fstat, fd)  # adopted, and closed
        answer = await deferToThread(_https_get, ca.certificate, sock.getsockname()[1])
        self.assertTrue(answer.startswith(b"HTTP/1.0 200"), answer[:40])
        self.assertTrue(answer.endswith(b"hello"))

    async def test_one_accept_per_wakeup(self) -> None:
        """
        Each time the socket is ready, one connection is taken, however
        many wait: the others are left to the other workers.
        """
        sock, fd = _bound()
        self.addCleanup(sock.close)
        built: list[Any] = []

        class Counting(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                built.append(addr)
                return Protocol()

        port: Any = await adopted_endpoint(reactor, fd, socket.AF_INET).listen(Counting())
        self.addCleanup(port.stopListening)
        clients = [socket.create_connection(sock.getsockname()) for _ in range(4)]
        for client in clients:
            self.addCleanup(client.close)
        port.doRead()
        self.assertEqual(len(built), 1)
        port.doRead()
        self.assertEqual(len(built), 2)
