"""
Listeners from Twisted endpoint strings: plain TCP, TLS, Unix sockets and
sockets handed over by systemd, each wrapped in TLS when configured so.
"""

from __future__ import annotations

from typing import Any

import attr
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory

from sealgw.config import ConfigError, ListenerConfig
from sealgw.daemon._tls import server_tls_options


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
    """

    where: str
    config: ListenerConfig
    endpoint: IStreamServerEndpoint
    factory: IProtocolFactory
    port: Any = None


def prepare_listener(
    reactor: Any,
    listener: ListenerConfig,
    factory: IProtocolFactory,
    where: str,
    check_only: bool = False,
) -> Listener:
    """
    Parse the endpoint and load TLS material now, at start-up, so that
    every mistake is found before anything listens.

    @param check_only: when set, a C{systemd:} endpoint is not resolved,
        since its sockets exist only when systemd starts the gateway.
    """
    if check_only and listener.endpoint.startswith("systemd:"):
        endpoint: Any = None
    else:
        endpoint = parse_endpoint(reactor, listener, where)
    if listener.tls is not None:
        factory = TLSMemoryBIOFactory(server_tls_options(listener.tls), False, factory)
    return Listener(where=where, config=listener, endpoint=endpoint, factory=factory)
