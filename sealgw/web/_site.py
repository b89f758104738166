"""
The gateway's L{Site}: counts requests in flight so a drain can wait for
them, and writes one access line and one set of metrics per request.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

from sealgw.web._metrics import GatewayMetrics
from sealgw.web._request import GatewayRequest

# Status recorded for a request whose client went away before the answer.
CLIENT_CLOSED = 499


class GatewaySite(Site):
    """
    @ivar max_body: the largest request body kept, in bytes.
    @ivar draining: set once a drain has begun; new requests are answered
        and their connections then closed.
    """

    requestFactory = GatewayRequest
    _access = Logger(namespace="sealgw.access")
    # The access line is ours; Twisted's own combined-log line would be a
    # second one, without identity or tenant.
    noisy = False

    def __init__(
        self,
        resource: IResource,
        reactor: Any,
        metrics: GatewayMetrics,
        max_body: int,
        access_log: bool = True,
    ) -> None:
        super().__init__(resource)
        self.reactor = reactor
        self.metrics = metrics
        self.max_body = max_body
        self.access_log = access_log
        self.draining = False
        self.in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._channels: weakref.WeakSet[HTTPChannel] = weakref.WeakSet()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        # Twisted hands out a wrapper that picks HTTP/1.1 or HTTP/2; the
        # channel doing the work is inside it.
        self._channels.add(getattr(channel, "_channel", channel))
        return channel

    def log(self, request: Any) -> None:  # type: ignore[override]
        # Called by Twisted at finish(); the access line is written from
        # request_finished instead, which also sees aborted requests.
        pass

    def request_started(self, request: GatewayRequest) -> None:
        self.in_flight += 1
        self.metrics.in_flight.inc()
        if self.draining:
            request.channel.persistent = False
        request.notifyFinish().addBoth(self._request_finished, request)

    def _request_finished(self, result: Optional[Failure], request: GatewayRequest) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.dec()
        aborted = isinstance(result, Failure) and not request.answered_early
        status = CLIENT_CLOSED if aborted else int(request.code)
        elapsed = max(0.0, self.reactor.seconds() - request.started)
        # A connection lost before the request line's body was complete
        # leaves the request without a method or path.
        method = (request.method or b"-").decode("ascii", "replace")
        tenant = request.tenant or ""
        self.metrics.observe(
            request.route,
            method,
            status,
            tenant,
            elapsed,
            request.body_received,
            int(request.sentLength),
        )
        if self.access_log:
            path = (request.path or b"-").decode("utf-8", "replace")
            self._access.info(
                "{method} {path} {status} {route} {bytes_in}B in {bytes_out}B out "
                "{latency_ms:.1f}ms identity={identity} tenant={tenant} peer={peer}",
                access=True,
                method=method,
                path=path,
                status=status,
                route=request.route,
                bytes_in=request.body_received,
                bytes_out=int(request.sentLength),
                latency_ms=elapsed * 1000,
                identity=request.identity_name or "-",
                tenant=tenant or "-",
                peer=_peer(request),
            )
        if self.in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def begin_drain(self) -> None:
        """
        Stop keeping connections alive: idle ones are closed now, busy ones
        after their current answer.
        """
        self.draining = True
        for channel in list(self._channels):
            channel.persistent = False
            if not getattr(channel, "requests", None):
                channel.loseConnection()

    def wait_idle(self) -> Deferred[None]:
        """
        Fire when no request is in flight.
        """
        d: Deferred[None] = Deferred()
        if self.in_flight == 0:
            d.callback(None)
        else:
            self._idle_waiters.append(d)
        return d

    def abort_all(self) -> None:
        """
        Cut every connection still open, once the drain's grace is over.
        """
        for channel in list(self._channels):
            transport: Any = channel.transport
            if transport is not None:
                transport.abortConnection()


def _peer(request: GatewayRequest) -> str:
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    return str(host) if host is not None else "-"
