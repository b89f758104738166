"""
The backends of one upstream: where each request goes, and what recent
requests say about each backend.

An upstream may name several base URLs (C{urls}), and a name may resolve
to several addresses (a headless Kubernetes Service, a fleet behind
round-robin DNS).  Connecting by name and keeping connections alive pins
the gateway to the few addresses it happened to connect to first; so each
address is a backend of its own, with its own connections, and every
request goes to the least loaded one.  A backend that fails several times
in a row is set aside for a while, then given one trial request; one
that has just failed is used only when all the others have too, so a
retry goes elsewhere.

Names are resolved off the request path, on a timer, with the reactor's
resolver; until a name has resolved (or while it resolves to nothing), it
is one backend connected to by name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, Optional
from urllib.parse import urlsplit

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHostnameResolver, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from sealgw.http._resolution import RESOLVE_INTERVAL, NameResolution

#: Failures in a row that set a backend aside.
FAILURES_TO_SET_ASIDE = 3

#: How long a backend is first set aside; each failed trial doubles it, up
#: to L{MAX_SET_ASIDE}.  A backend that failed less than this long ago
#: is picked only when every other one has too.
SET_ASIDE = 5.0

#: The longest a backend is set aside between trials.
MAX_SET_ASIDE = 60.0



@attr.frozen
class Backend:
    """
    One place an upstream's requests can go.

    @ivar scheme: C{http} or C{https}.
    @ivar host: the configured name: the C{Host} header, and the name a
        TLS certificate is verified against, whatever the address.
    @ivar port: the port connected to.
    @ivar address: the IP address connected to; L{None} connects by
        C{host} (before the name has resolved).
    """

    scheme: str
    host: str
    port: int
    address: Optional[str] = None

    @property
    def label(self) -> str:
        """
        The backend as C{/health} and metrics name it: its address and
        port (its name while it has no address).
        """
        where = self.address if self.address is not None else self.host
        if ":" in where:
            where = f"[{where}]"
        return f"{where}:{self.port}"

    @property
    def host_header(self) -> bytes:
        """
        The C{Host} header for this backend: its name, with the port
        unless it is the scheme's default.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        text = host if self.port == default else f"{host}:{self.port}"
        return text.encode("idna" if not text.isascii() else "ascii")


def configured(url: str) -> Backend:
    """
    The backend a configured base URL names, connected to by name; by
    address when its host is an IP address.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Backend(parts.scheme, host, port, host if _is_address(host) else None)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class IBackendMetrics(Interface):
    """
    Where a L{Backends} reports each backend's state;
    L{sealgw.http.BackendMetrics} puts it in a Prometheus registry.
    """

    def state(backend: Backend, usable: bool, in_flight: int) -> None:
        """
        C{backend} may take requests (C{usable}) or is set aside, and has
        C{in_flight} requests in flight.
        """

    def failed(backend: Backend) -> None:
        """
        A request to C{backend} failed.
        """

    def removed(backend: Backend) -> None:
        """
        C{backend} is no longer one (its name no longer resolves to it).
        """


@implementer(IBackendMetrics)
class NoBackendMetrics:
    def state(self, backend: Backend, usable: bool, in_flight: int) -> None:
        pass

    def failed(self, backend: Backend) -> None:
        pass

    def removed(self, backend: Backend) -> None:
        pass


class _State:
    """
    What L{Backends} knows of one backend.
    """

    __slots__ = ("in_flight", "failures", "last_failure", "set_aside_until", "period", "trial")

    def __init__(self) -> None:
        self.in_flight = 0
        self.failures = 0
        self.last_failure: Optional[float] = None
        self.set_aside_until: Optional[float] = None
        self.period = SET_ASIDE
        self.trial = False


class Backends:
    """
    The one owner of an upstream's backends and their state: the client
    asks it where each request goes (L{pick}) and tells it how the
    request went (L{finished}).

    @param name: the upstream's name, for logs.
    @param urls: its configured base URLs.
    @param clock: for set-aside times and the resolution timer.
    @param resolver: resolves the names among C{urls}; L{None} leaves
        every name connected to by name.
    @param metrics: told of every change of a backend's state.
    @param removed: called with a backend a new resolution no longer
        lists (its owner closes its idle connections).
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        clock: IReactorTime,
        resolver: Optional[IHostnameResolver] = None,
        metrics: Optional[IBackendMetrics] = None,
        removed: Optional[Callable[[Backend], object]] = None,
        failures_to_set_aside: int = FAILURES_TO_SET_ASIDE,
        set_aside: float = SET_ASIDE,
        max_set_aside: float = MAX_SET_ASIDE,
        resolve_interval: float = RESOLVE_INTERVAL,
    ) -> None:
        if not urls:
            raise ValueError("an upstream needs at least one URL")
        self.name = name
        self._clock = clock
        self._resolver = resolver
        self._metrics: IBackendMetrics = metrics if metrics is not None else NoBackendMetrics()
        self._removed = removed
        self._failures_to_set_aside = failures_to_set_aside
        self._set_aside = set_aside
        self._max_set_aside = max_set_aside
        self._resolve_interval = resolve_interval
        self._configured = [configured(url) for url in urls]
        # Each configured backend's current backends: itself until its
        # name resolves.
        self._by_name: dict[Backend, list[Backend]] = {b: [b] for b in self._configured}
        self._states: dict[Backend, _State] = {}
        self._order: list[Backend] = []
        self._turn = 0
        self._resolution: Optional[NameResolution] = None
        self._rebuild()

    # -- asked per request ------------------------------------------------

    @property
    def backends(self) -> list[Backend]:
        """
        The backends requests may go to now, in configured order.
        """
        return list(self._order)

    def pick(self) -> Backend:
        """
        Where the next request goes, counted as in flight there until
        L{finished}: a backend whose time set aside is over, for one
        trial request; otherwise the least loaded of those not set aside
        (a recent failure counting as load), in turn among equals; when
        every backend is set aside, the one that comes back first.

        A backend that failed less than C{set_aside} seconds ago is picked
        only when every other one has too, so that a request retried after
        a failure goes to another backend, and the failed one rests a
        while even before it is set aside.
        """
        now = self._clock.seconds()
        best: Optional[Backend] = None
        best_key = (True, 0)
        returning: Optional[Backend] = None
        returning_at = 0.0
        count = len(self._order)
        start = self._turn % count
        self._turn += 1
        for i in range(count):
            backend = self._order[(start + i) % count]
            state = self._states[backend]
            if state.set_aside_until is not None:
                if state.set_aside_until <= now and not state.trial:
                    state.trial = True
                    return self._started(backend, state)
                if returning is None or state.set_aside_until < returning_at:
                    returning, returning_at = backend, state.set_aside_until
                continue
            recent = state.last_failure is not None and now - state.last_failure < self._set_aside
            key = (recent, state.in_flight)
            if best is None or key < best_key:
                best, best_key = backend, key
        chosen = best if best is not None else returning
        assert chosen is not None
        return self._started(chosen, self._states[chosen])

    def _started(self, backend: Backend, state: _State) -> Backend:
        state.in_flight += 1
        self._metrics.state(backend, state.set_aside_until is None, state.in_flight)
        return backend

    def finished(self, backend: Backend, ok: Optional[bool]) -> None:
        """
        A request L{pick} sent to C{backend} is over: C{ok} when the
        backend answered, C{False} when it failed (no connection, no
        answer in time, or an answer saying it is unavailable), L{None}
        when the request was given up by its sender (which says nothing
        of the backend).
        """
        state = self._states.get(backend)
        if state is None:
            # Resolved away while the request was in flight.
            return
        state.in_flight = max(0, state.in_flight - 1)
        trial, state.trial = state.trial, False
        if ok:
            if state.set_aside_until is not None:
                self._log.info(
                    "{upstream}: backend {backend} is back", upstream=self.name,
                    backend=backend.label,
                )
            state.failures = 0
            state.last_failure = None
            state.set_aside_until = None
            state.period = self._set_aside
        elif ok is False:
            now = self._clock.seconds()
            state.failures += 1
            state.last_failure = now
            self._metrics.failed(backend)
            if trial and state.set_aside_until is not None:
                state.period = min(state.period * 2, self._max_set_aside)
                state.set_aside_until = now + state.period
            elif state.set_aside_until is None and state.failures >= self._failures_to_set_aside:
                state.set_aside_until = now + state.period
                self._log.warn(
                    "{upstream}: backend {backend} set aside for {seconds:.0f}s after "
                    "{failures} failures in a row",
                    upstream=self.name, backend=backend.label, seconds=state.period,
                    failures=state.failures,
                )
        self._metrics.state(backend, state.set_aside_until is None, state.in_flight)

    # -- for /health ------------------------------------------------------

    def report(self) -> list[dict[str, Any]]:
        """
        Each backend's state, for C{/health}.
        """
        now = self._clock.seconds()
        return [
            {
                "backend": backend.label,
                "host": backend.host,
                "status": "ok" if state.set_aside_until is None else "set_aside",
                "in_flight": state.in_flight,
                "consecutive_failures": state.failures,
                "set_aside_for": (
                    None if state.set_aside_until is None
                    else round(max(0.0, state.set_aside_until - now), 3)
                ),
            }
            for backend in self._order
            for state in (self._states[backend],)
        ]

    def healthy(self) -> bool:
        """
        Whether no backend is set aside.
        """
        return all(s.set_aside_until is None for s in self._states.values())

    # -- resolution -------------------------------------------------------

    def when_removed(self, callback: Callable[[Backend], object]) -> None:
        """
        Call C{callback} with each backend a new resolution no longer
        lists (in place of the one given when made).
        """
        self._removed = callback

    def start(self) -> None:
        """
        Resolve the configured names now and every C{resolve_interval};
        called before every request, it does something only the first
        time (and again after L{stop}).
        """
        names = [b for b in self._configured if b.address is None]
        if self._resolver is None or self._resolution is not None or not names:
            return
        self._resolution = NameResolution(
            self.name, names, self._resolver, self._clock, self._resolve_interval,
            self._resolved,
        )
        self._resolution.start()

    def stop(self) -> None:
        if self._resolution is not None:
            self._resolution.stop()
        self._resolution = None

    def resolve(self) -> Deferred[None]:
        """
        Resolve every configured name once, now.
        """
        names = [b for b in self._configured if b.address is None]
        if self._resolver is None:
            return succeed(None)
        return NameResolution(
            self.name, names, self._resolver, self._clock, self._resolve_interval,
            self._resolved,
        ).resolve()

    def _resolved(self, name: Backend, addresses: list[str]) -> None:
        """
        C{name} now resolves to C{addresses} (never empty): its backends
        are those, the state of any it had before kept.
        """
        found = [attr.evolve(name, address=a) for a in addresses]
        if found == self._by_name[name]:
            return
        self._by_name[name] = found
        self._rebuild()

    def _rebuild(self) -> None:
        order: list[Backend] = []
        for name in self._configured:
            for backend in self._by_name[name]:
                if backend not in order:
                    order.append(backend)
        for backend in order:
            if backend not in self._states:
                self._states[backend] = _State()
                self._metrics.state(backend, True, 0)
        for backend in [b for b in self._states if b not in order]:
            del self._states[backend]
            self._metrics.removed(backend)
            if self._removed is not None:
                self._removed(backend)
        if order != self._order and self._order:
            self._log.info(
                "{upstream}: backends now {backends}", upstream=self.name,
                backends=", ".join(b.label for b in order),
            )
        self._order = order
