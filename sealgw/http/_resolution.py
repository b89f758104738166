"""
Resolving the names of an upstream's backends to all their addresses,
on a timer and with the reactor's resolver, so that no request waits for
DNS and a name's new addresses get traffic within an interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

if TYPE_CHECKING:
    from sealgw.http._backends import Backend

#: How often names are resolved again.  A Kubernetes Service's endpoints
#: change as pods come and go; half a minute bounds how long new pods wait
#: for traffic, and costs one lookup per name.
RESOLVE_INTERVAL = 30.0

#: The most addresses kept for one name: each is a connection pool and a
#: metrics series, so their number is bounded whatever DNS answers.
MAX_ADDRESSES = 64


@implementer(IResolutionReceiver)
class _Addresses:
    """
    Collects one resolution's addresses.
    """

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: Deferred[list[str]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        host = getattr(address, "host", None)
        if isinstance(host, str) and host not in self.addresses:
            self.addresses.append(host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


def usable(addresses: Sequence[str]) -> list[str]:
    """
    The addresses of a name that are backends: its IPv4 ones, or its IPv6
    ones if it has none, sorted, at most L{MAX_ADDRESSES}.

    A dual-stack name (C{localhost}) often serves on one family only;
    connecting by name tries both, but an address of each would be a
    backend of its own, one of them failing every request it is given.
    """
    ipv4 = [a for a in addresses if ":" not in a]
    return sorted(ipv4 or addresses)[:MAX_ADDRESSES]


class NameResolution:
    """
    Resolves C{names} now and every C{interval}, and tells C{found} of
    each name's usable addresses.  A lookup that finds nothing (Twisted's
    resolvers report a failure so) is logged and not told: a DNS outage
    must not take an upstream's backends away.  Never stops on an error.
    """

    _log = Logger()

    def __init__(
        self,
        upstream: str,
        names: Sequence[Backend],
        resolver: IHostnameResolver,
        clock: IReactorTime,
        interval: float,
        found: Callable[[Backend, list[str]], None],
    ) -> None:
        self._upstream = upstream
        self._names = list(names)
        self._resolver = resolver
        self._clock = clock
        self._interval = interval
        self._found = found
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        if self._loop is not None or not self._names:
            return
        self._loop = LoopingCall(self.resolve)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def resolve(self) -> Deferred[None]:
        """
        Resolve every name once; never fails.
        """
        if not self._names:
            return succeed(None)
        resolving = DeferredList([self._one(name) for name in self._names], consumeErrors=True)
        return resolving.addCallback(lambda _: None)

    def _one(self, name: Backend) -> Deferred[None]:
        receiver = _Addresses()
        try:
            self._resolver.resolveHostName(receiver, name.host, name.port)
        except Exception as e:
            self._log.warn(
                "{upstream}: resolving {host} failed: {error}", upstream=self._upstream,
                host=name.host, error=e,
            )
            return succeed(None)
        return receiver.done.addCallback(lambda addresses: self._resolved(name, addresses))

    def _resolved(self, name: Backend, addresses: list[str]) -> None:
        if not addresses:
            self._log.warn(
                "{upstream}: {host} resolved to no address; its backends are kept",
                upstream=self._upstream, host=name.host,
            )
            return
        try:
            self._found(name, usable(addresses))
        except Exception:
            self._log.failure(
                "{upstream}: the addresses of {host} could not be taken",
                upstream=self._upstream, host=name.host,
            )
