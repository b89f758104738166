"""
The factory of an C{otlp-grpc} listener: its limits, its connections for
a drain, and one access line and one set of request metrics per call,
alike to those of an HTTP listener's L{sealgw.web.GatewaySite}.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from sealgw.config import ListenerConfig
from sealgw.web._client_ip import ClientAddress
from sealgw.web._metrics import GatewayMetrics
from sealgw.web._site import CLIENT_CLOSED
from sealgw.web.grpc._connection import GrpcConnection
from sealgw.web.grpc._services import OTLPServices
from sealgw.web.push import PushRoutes

if TYPE_CHECKING:
    from sealgw.web.grpc._call import Call


class GrpcSite(Factory):
    """
    Builds a L{GrpcConnection} per client, and keeps count of the calls
    in flight so that a drain can wait for them.

    @ivar listener: the listener's endpoint, the C{listener} label of its
        metrics.
    @ivar listener_identity: on an C{auth: none} listener, the identity
        every call has; else L{None}.
    """

    _access = Logger(namespace="sealgw.access")
    noisy = False

    def __init__(
        self,
        push: PushRoutes,
        reactor: Any,
        metrics: GatewayMetrics,
        max_body: int,
        access_log: bool = True,
        listener: Optional[ListenerConfig] = None,
    ) -> None:
        self.services = OTLPServices(push)
        self.client_address: ClientAddress = push.client_address
        self.reactor = reactor
        self.metrics = metrics
        self.max_body = max_body
        self.access_log = access_log
        limits = listener if listener is not None else ListenerConfig(endpoint="-")
        self.listener = limits.endpoint
        self.max_header_size = limits.max_header_size
        self.header_timeout = limits.header_timeout
        self.idle_timeout = limits.idle_timeout
        self.listener_identity = limits.identity if limits.auth == "none" else None
        self.draining = False
        self.in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._connections: weakref.WeakSet[GrpcConnection] = weakref.WeakSet()

    def buildProtocol(self, addr: Any) -> GrpcConnection:
        return GrpcConnection(self)

    # -- the connections' reports ----------------------------------------

    def connection_opened(self, connection: GrpcConnection) -> None:
        self._connections.add(connection)
        if self.draining:
            connection.go_away()

    def connection_closed(self, connection: GrpcConnection) -> None:
        self._connections.discard(connection)

    def call_started(self) -> None:
        self.in_flight += 1
        self.metrics.in_flight.inc()

    def call_finished(self, call: Call, status: Optional[int], peer: str) -> None:
        """
        One call over: answered with C{status} (its HTTP equivalent), or
        unanswered (L{None}: the client reset it or went away).
        """
        self.in_flight -= 1
        self.metrics.in_flight.dec()
        status = CLIENT_CLOSED if status is None else status
        elapsed = max(0.0, self.reactor.seconds() - call.started)
        record = call.record
        route = record.route if call.signal is None else f"otlp_{call.signal}"
        self.metrics.observe(
            route, "POST", status, record.tenant or "", elapsed, call.received, call.bytes_out
        )
        if self.access_log:
            self._access.info(
                "{method} {path} {status} {route} {bytes_in}B in {bytes_out}B out "
                "{latency_ms:.1f}ms identity={identity} tenant={tenant} peer={peer}",
                access=True,
                method=call.method.decode("ascii", "replace") or "-",
                path=call.path.decode("utf-8", "replace") or "-",
                status=status,
                route=route,
                bytes_in=call.received,
                bytes_out=call.bytes_out,
                latency_ms=elapsed * 1000,
                identity=record.identity or "-",
                tenant=record.tenant or "-",
                peer=peer,
                protocol="grpc",
            )
        if self.in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    # -- a drain, as L{sealgw.daemon.GatewayService} runs it ---------------

    def begin_drain(self) -> None:
        """
        Send every client a GOAWAY: calls open are answered, no new one
        is taken, and each connection closes once it has none.
        """
        self.draining = True
        for connection in list(self._connections):
            connection.go_away()

    def wait_idle(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.in_flight == 0:
            d.callback(None)
        else:
            self._idle_waiters.append(d)
        return d

    def abort_all(self) -> None:
        for connection in list(self._connections):
            connection.abort()
