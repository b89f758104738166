"""
The gateway as one twistd service: it binds the listeners, reloads on
SIGHUP (and TLS files when they change), and on SIGTERM drains before
anything it depends on is stopped.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Optional

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from sealgw.daemon._listeners import Listener
from sealgw.web._site import GatewaySite

if TYPE_CHECKING:
    from sealgw.web.grpc import GrpcSite


class CannotListen(SystemExit):
    """
    A listener's address could not be bound.  It ends twistd with status 1
    and nothing more printed: the reason, one line, has been reported
    already (L{GatewayService.report_cannot_listen}).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(1)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class GatewayService(MultiService):
    """
    Children (the auth gate, the upstreams) start first and stop last; the
    listeners are bound after them and closed first.

    Stopping is a drain: C{/ready} turns 503, listening stops, idle
    keep-alive connections are closed, requests in flight get up to
    C{drain_grace} seconds to finish, and only then are the children
    stopped, so no in-flight relay loses its connection pool under it.

    @ivar report_cannot_listen: told, in one line, why an address could
        not be bound, before start-up ends; by default the line is logged
        as critical.  twistd's C{sealgw} writes it to standard error
        instead (L{sealgw.tap}), where an operator starting the gateway
        looks, whatever the log's format and destination.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        listeners: Iterable[Listener],
        sites: Iterable[GatewaySite | GrpcSite],
        drain_grace: float,
        reload: Callable[[], None] = lambda: None,
        log_observer: Optional[ILogObserver] = None,
        install_signal_handlers: bool = True,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.listeners = list(listeners)
        self.sites = list(sites)
        self.drain_grace = drain_grace
        self._reload = reload
        self._log_observer = log_observer
        self._install_signals = install_signal_handlers
        self.listening = False
        self.draining = False
        self._previous_sighup: Any = None
        self._previous_sigterm: Any = None
        self._stopping: Optional[Deferred[None]] = None
        self._binding: Optional[list[Deferred[Any]]] = None
        self._listening_waiters: list[Deferred[None]] = []
        self.report_cannot_listen: Callable[[str], None] = self._log_cannot_listen
        for li in self.listeners:
            if li.tls is not None and li.tls.config.watch_interval > 0:
                watch = TimerService(li.tls.config.watch_interval, li.tls.check)
                watch.clock = reactor
                watch.setName(f"{li.where}.tls watch")
                watch.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        # twistd asks the application for a log observer after makeService
        # and before starting; this is how the config's log format reaches it.
        if self._log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self._log_observer)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._bind()

    def _bind(self) -> None:
        """
        Bind every listener: while still privileged (ports below 1024), and
        failing start-up right here when a port cannot be had.

        @raise CannotListen: after reporting, in one line, the address and
            why it could not be had: a busy port is an operator's problem,
            not a traceback.
        """
        self._binding = []
        for listener in self.listeners:
            failed: list[Failure] = []
            d = listener.endpoint.listen(listener.factory)
            d.addCallback(_keep_port, listener).addErrback(_note, failed)
            if failed:
                d.addErrback(lambda _: None)
                for bound in self.listeners:
                    if bound.port is not None:
                        bound.port.stopListening()
                        bound.port = None
                reason = cannot_listen(listener, failed[0])
                self.report_cannot_listen(reason)
                raise CannotListen(reason)
            self._binding.append(d)

    def _log_cannot_listen(self, reason: str) -> None:
        self.log.critical("{reason}", reason=reason)

    def when_listening(self) -> Deferred[None]:
        """
        A L{Deferred} that fires once every listener is bound, and never if
        one cannot be.
        """
        d: Deferred[None] = Deferred()
        if self.listening:
            d.callback(None)
        else:
            self._listening_waiters.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        if self._binding is None:
            self._bind()
        assert self._binding is not None
        # Most endpoints have bound by now; a few listen asynchronously.
        gatherResults(self._binding, consumeErrors=True).addCallbacks(
            lambda _: self._listening(), self._bind_failed
        )
        if self._install_signals and hasattr(signal, "SIGHUP"):
            self._previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)
        if self._install_signals:
            # The reactor's own SIGTERM handler records the signal, and
            # twistd then re-raises it once the reactor is done, so the
            # exit status would say "killed by SIGTERM" even after a drain
            # that ran its course.  A drain is a clean stop: ask the
            # reactor to stop as any other caller would, and exit 0.  The
            # reactor installs its handlers as it starts running, so this
            # one goes in once it runs.
            self.reactor.callWhenRunning(self._take_sigterm)

    def _take_sigterm(self) -> None:
        if self.running and self._stopping is None:
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._stop_reactor)

    def _stop_reactor(self) -> None:
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            # A second SIGTERM during the drain: with workers, systemd
            # signals every process of the unit and the main process
            # forwards its own.
            pass

    def _bind_failed(self, failure: Failure) -> None:
        self.log.failure("a listener could not be bound; not ready", failure)

    def _listening(self) -> None:
        self.listening = True
        for li in self.listeners:
            self.log.info(
                "listening on {address} ({endpoint})",
                address=_address(li.port),
                endpoint=li.config.endpoint,
            )
        waiters, self._listening_waiters = self._listening_waiters, []
        for d in waiters:
            d.callback(None)

    def _on_sighup(self, signum: int, frame: Any) -> None:
        # Signal handlers run between bytecodes of whatever the reactor was
        # doing; hand the work to the reactor thread.
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """
        Re-read what can change without a restart: the token file (through
        the C{reload} given), and each TLS listener's certificate, key and
        client CA.  Each keeps its previous settings when its files are bad.
        """
        self.log.info("SIGHUP: reloading what can be reloaded")
        try:
            self._reload()
        except Exception:
            self.log.failure("reload failed; the previous settings stay in force")
        for li in self.listeners:
            if li.tls is not None:
                try:
                    li.tls.reload()
                except Exception:
                    self.log.failure(
                        "reloading TLS for {where} failed; its certificate stays in use",
                        where=li.where,
                    )

    def stopService(self) -> Deferred[None]:
        if self._stopping is None:
            if self._install_signals and self._previous_sighup is not None:
                signal.signal(signal.SIGHUP, self._previous_sighup)
            self._stopping = Deferred.fromCoroutine(self._drain())
            # Ours stays until the drain is over: a second SIGTERM meanwhile
            # (with workers, systemd's and the main process's) is a no-op,
            # where the reactor's own handler would stop it a second time.
            self._stopping.addBoth(self._restore_sigterm)
        # Everyone asking to stop waits for the one drain.
        d: Deferred[None] = Deferred()

        def settled(result: object) -> object:
            d.callback(None)
            return result

        self._stopping.addBoth(settled)
        return d

    def _restore_sigterm(self, result: object) -> object:
        if self._install_signals and self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        return result

    async def _stop_listening(self) -> None:
        """
        Close every listening port (the first step of a drain).
        """
        # stopListening may answer a Deferred or nothing (IListeningPort).
        stops = [
            maybeDeferred(li.port.stopListening)
            for li in self.listeners
            if li.port is not None
        ]
        await DeferredList(stops, consumeErrors=True)
        self.listening = False

    async def _drain(self) -> None:
        self.draining = True
        in_flight = sum(site.in_flight for site in self.sites)
        self.log.info(
            "draining: {in_flight} requests in flight, up to {grace}s grace",
            in_flight=in_flight,
            grace=self.drain_grace,
        )
        await self._stop_listening()
        for site in self.sites:
            site.begin_drain()
        done: Deferred[bool] = Deferred()

        def settle(drained: bool) -> None:
            if not done.called:
                done.callback(drained)

        gatherResults([site.wait_idle() for site in self.sites]).addCallback(
            lambda _: settle(True)
        )
        timer = self.reactor.callLater(self.drain_grace, settle, False)
        if await done:
            self.log.info("drained: every request in flight was answered")
        else:
            left = sum(site.in_flight for site in self.sites)
            self.log.warn(
                "drain grace over with {left} requests unanswered; closing them", left=left
            )
            for site in self.sites:
                site.abort_all()
        if timer.active():
            timer.cancel()
        await super().stopService()


def _note(failure: Failure, failed: list[Failure]) -> Failure:
    failed.append(failure)
    return failure


def _keep_port(port: Any, listener: Listener) -> None:
    listener.port = port


def cannot_listen(listener: Listener, failure: Failure) -> str:
    """
    One line saying which address could not be bound and why.
    """
    where = f"{listener.where}: {listener.config.endpoint}"
    error = failure.value
    if isinstance(error, CannotListenError):
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        if error.interface is None:  # a Unix socket: the port is its path
            address = str(error.port)
        else:
            host = error.interface or "0.0.0.0"
            address = f"[{host}]:{error.port}" if ":" in host else f"{host}:{error.port}"
        return f"cannot listen on {address} ({where}): {reason}"
    return f"cannot listen on {listener.config.endpoint} ({listener.where}): {error}"


def _address(port: Any) -> str:
    try:
        host = port.getHost()
    except AttributeError:
        return "?"
    if hasattr(host, "port"):
        return f"{host.host}:{host.port}"
    return str(getattr(host, "name", host))
