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

from sealgw.config import ListenerConfig
from sealgw.web._channel import GatewayChannel
from sealgw.web._metrics import GatewayMetrics
from sealgw.web._request import UNMATCHED, GatewayRequest

# Status recorded for a request whose client went away before the answer.
CLIENT_CLOSED = 499


class GatewaySite(Site):
    """
    The site of one listener.

    @ivar max_body: the largest request body kept, in bytes.
    @ivar listener: the listener's endpoint, the C{listener} label of its
        metrics.
    @ivar max_header_size: the largest request head, in bytes.
    @ivar header_timeout: seconds a request head may take to arrive.
    @ivar draining: set once a drain has begun; new requests are answered
        and their connections then closed.
    @ivar listener_identity: on an C{auth: none} listener, the identity
        every request has (L{sealgw.auth.listener_identity}); else L{None}.
    """

    # HTTP/1.1 only, with the head's limits.  (Twisted's default wraps
    # its channel in one that can switch to HTTP/2, which this gateway
    # neither offers in TLS nor bounds.)
    protocol = GatewayChannel  # type: ignore[assignment]
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
        listener: Optional[ListenerConfig] = None,
    ) -> None:
        # Twisted would parse every POST's Content-Type (with the email
        # package, a tenth of a push's CPU) to fill request.args from form
        # bodies; no route reads request.args, and reads relay forms as
        # they came.
        super().__init__(resource, parsePOSTFormSubmission=False)
        self.reactor = reactor
        self.metrics = metrics
        self.max_body = max_body
        self.access_log = access_log
        limits = listener if listener is not None else ListenerConfig(endpoint="-")
        self.listener = limits.endpoint
        self.max_header_size = limits.max_header_size
        self.header_timeout = limits.header_timeout
        self.listener_identity = limits.identity if limits.auth == "none" else None
        # Twisted's idle timeout: how long a connection may be silent
        # between requests or within a body.
        self.timeOut = limits.idle_timeout
        self.draining = False
        self.in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._channels: weakref.WeakSet[HTTPChannel] = weakref.WeakSet()
        # Connections a route took from their channel (WebSockets): a
        # drain must end them itself.
        self._upgraded: set[Any] = set()

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
        aborted = isinstance(result, Failure) and not (
            request.answered_early or request.upgraded
        )
        status = CLIENT_CLOSED if aborted else int(request.code)
        self._record(
            # A connection lost before the request line's body was complete
            # leaves the request without a method or path.
            method=request.method,
            path=request.path,
            status=status,
            route=request.record.route,
            bytes_in=request.body_received,
            bytes_out=int(request.sentLength),
            seconds=self.reactor.seconds() - request.started,
            identity=request.record.identity,
            tenant=request.record.tenant,
            peer=_peer(request.getClientAddress()),
        )
        if self.in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def head_refused(
        self,
        *,
        peer: Any,
        status: int,
        method: Optional[bytes],
        uri: Optional[bytes],
        bytes_out: int,
        seconds: float,
    ) -> None:
        """
        A request answered by its channel before it could be routed: its
        head was too large, too slow or malformed.  It gets the same access
        line and metrics as any other, with what is known of it.
        """
        self._record(
            method=method,
            path=uri.split(b"?", 1)[0] if uri is not None else None,
            status=status,
            route=UNMATCHED,
            bytes_in=0,
            bytes_out=bytes_out,
            seconds=seconds,
            identity=None,
            tenant=None,
            peer=_peer(peer),
        )

    def header_timed_out(self) -> None:
        self.metrics.header_timeouts.labels(self.listener).inc()

    def _record(
        self,
        *,
        method: Optional[bytes],
        path: Optional[bytes],
        status: int,
        route: str,
        bytes_in: int,
        bytes_out: int,
        seconds: float,
        identity: Optional[str],
        tenant: Optional[str],
        peer: str,
    ) -> None:
        """
        One access line and one set of metrics for one answered request.
        """
        method_text = (method or b"-").decode("ascii", "replace")
        elapsed = max(0.0, seconds)
        self.metrics.observe(
            route, method_text, status, tenant or "", elapsed, bytes_in, bytes_out
        )
        if self.access_log:
            self._access.info(
                "{method} {path} {status} {route} {bytes_in}B in {bytes_out}B out "
                "{latency_ms:.1f}ms identity={identity} tenant={tenant} peer={peer}",
                access=True,
                method=method_text,
                path=(path or b"-").decode("utf-8", "replace"),
                status=status,
                route=route,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                latency_ms=elapsed * 1000,
                identity=identity or "-",
                tenant=tenant or "-",
                peer=peer,
            )

    def upgraded(self, connection: Any) -> None:
        """
        Hold C{connection}, taken from its channel by a route, until
        L{upgrade_done}: a drain asks it to go (its C{going_away}), and
        cuts it (its C{abort}) when the grace is over.
        """
        self._upgraded.add(connection)

    def upgrade_done(self, connection: Any) -> None:
        self._upgraded.discard(connection)

    def begin_drain(self) -> None:
        """
        Stop keeping connections alive: idle ones are closed now, busy ones
        after their current answer, upgraded ones are asked to go.
        """
        self.draining = True
        for connection in list(self._upgraded):
            connection.going_away()
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
        for connection in list(self._upgraded):
            connection.abort()


def _peer(address: Any) -> str:
    host = getattr(address, "host", None)
    return str(host) if host is not None else "-"
