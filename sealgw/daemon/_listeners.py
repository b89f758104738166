"""
Listeners from Twisted endpoint strings: plain TCP, TLS, Unix sockets and
sockets handed over by systemd (or, in a worker, by the main process),
each wrapped in TLS when configured so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import attr
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from sealgw.config import ConfigError, ListenerConfig
from sealgw.daemon._limits import ConnectionLimit
from sealgw.daemon._tls import ServerTLS

if TYPE_CHECKING:
    from sealgw.web import GatewayMetrics


def endpoint_string(listener: ListenerConfig) -> str:
    """
    The endpoint string Twisted is asked to listen on: an C{ssl:} endpoint
    becomes plain C{tcp:}, because TLS is added around the factory so that
    every kind of endpoint (systemd sockets included) carries it with the
    same settings.
    """
    endpoint = listener.endpoint
    if endpoint.startswith("ssl:"):
        return "tcp:" + endpoint[len("ssl:"):]
    return endpoint


def parse_endpoint(reactor: Any, listener: ListenerConfig, where: str) -> IStreamServerEndpoint:
    """
    @raise ConfigError: naming the listener when the string does not parse.
    """
    try:
        return serverFromString(reactor, endpoint_string(listener))
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ConfigError(
            [f"{where}.endpoint: {listener.endpoint!r} is not a usable endpoint ({e})"]
        ) from None


@attr.define
class Listener:
    """
    One configured listener, ready to listen: its endpoint and the factory
    (TLS-wrapped where configured) that will serve it.

    @ivar tls: the TLS settings new connections get, reloadable; L{None}
        on a listener without TLS.
    """

    where: str
    config: ListenerConfig
    endpoint: IStreamServerEndpoint
    factory: IProtocolFactory
    port: Any = None
    tls: Optional[ServerTLS] = None


def prepare_listener(
    reactor: Any,
    listener: ListenerConfig,
    factory: IProtocolFactory,
    where: str,
    check_only: bool = False,
    metrics: Optional[GatewayMetrics] = None,
    endpoint: Optional[IStreamServerEndpoint] = None,
) -> Listener:
    """
    Parse the endpoint and load TLS material now, at start-up, so that
    every mistake is found before anything listens.

    @param check_only: when set, a C{systemd:} endpoint is not resolved,
        since its sockets exist only when systemd starts the gateway.
    @param metrics: where the listener's open and refused connections
        are counted.
    @param endpoint: where to listen instead of the configured endpoint:
        in a worker, the socket the main process bound for it
        (L{adopted_endpoint}).  TLS and the connection limit wrap it all
        the same.
    """
    where_to: Any = endpoint
    if where_to is None and not (check_only and listener.endpoint.startswith("systemd:")):
        where_to = parse_endpoint(reactor, listener, where)
    tls = None
    if listener.tls is not None:
        # gRPC clients insist on HTTP/2 chosen by ALPN; HTTP listeners
        # speak HTTP/1.1 only and offer nothing.
        alpn = (b"h2",) if listener.protocol == "otlp-grpc" else ()
        tls = ServerTLS(listener.tls, alpn=alpn)
    if tls is not None:
        factory = TLSMemoryBIOFactory(tls, False, factory)
    factory = ConnectionLimit(
        factory,
        listener.max_connections,
        listener.endpoint,
        metrics.connections_open if metrics is not None else None,
        metrics.connections_refused if metrics is not None else None,
    )
    return Listener(where=where, config=listener, endpoint=where_to, factory=factory, tls=tls)


@implementer(IStreamServerEndpoint)
class _AdoptedEndpoint:
    """
    A listening socket another process bound, taken over in a worker.
    """

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self._adopted = AdoptedStreamServerEndpoint(reactor, fd, family)

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        d: Deferred[IListeningPort] = self._adopted.listen(factory)
        return d.addCallback(_one_accept_per_wakeup)


def adopted_endpoint(reactor: Any, fd: int, family: int) -> IStreamServerEndpoint:
    """
    An endpoint listening on the socket at C{fd} (bound by the main
    process, inherited by this worker; closed here once adopted), that
    accepts one connection each time the socket is ready.

    Every worker waits on the same socket and the kernel wakes them all;
    Twisted would then accept up to a hundred queued connections at once
    in whichever worker ran first, and a burst of new connections (a load
    balancer opening its pool) would all land in one worker.  Taking one
    at a time leaves the others to the other workers, as nginx does with
    C{multi_accept off}.
    """
    return _AdoptedEndpoint(reactor, fd, family)


def _one_accept_per_wakeup(port: Any) -> Any:
    accept = port.doRead

    def doRead() -> Any:
        # Twisted grows its accept batch after a full one; keep it at one.
        port.numberAccepts = 1
        return accept()

    port.doRead = doRead
    return port
