"""
The two WebSockets of a Loki tail, on autobahn: the upstream's (a client
the gateway opens to Loki) and the client's (a server protocol the web
layer hands the upgraded connection to), each an L{ITailEnd} of its
L{TailSession}.
"""

from __future__ import annotations

from typing import Any, Optional

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.util import encode_truncate
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from sealgw.http import USER_AGENT
from sealgw.query._tail import ITailEnd, TailLimits, TailSession

#: Autobahn's own timers run on the global reactor; the tail's limits are
#: the session's, on the clock it is given.  Its closing handshake bound
#: is kept: a peer that never answers a close frame is dropped after it.
_CLOSE_HANDSHAKE_TIMEOUT = 5.0


class TailHandshakeFailed(Exception):
    """
    The upstream did not switch to a WebSocket.

    @ivar status: the HTTP status it answered, when it answered one.
    """

    def __init__(self, status: Optional[int], detail: str) -> None:
        super().__init__(detail)
        self.status = status


@implementer(ITailEnd)
class _End:
    """
    An autobahn protocol as one side of a session.
    """

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def send(self, payload: bytes, binary: bool) -> None:
        self._protocol.sendMessage(payload, isBinary=binary)

    def close(self, code: int, reason: str) -> None:
        protocol = self._protocol
        if protocol.state != WebSocketProtocol.STATE_OPEN:
            return
        # sendClose refuses the codes below 3000 but 1000, and a proxy must
        # pass 1001 or 1011 on as it came: the session only hands over
        # codes a close frame may carry.
        protocol.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123))

    def pause(self) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.pauseProducing()

    def resume(self) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.resumeProducing()

    def throttles(self, other: ITailEnd) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.registerProducer(_Reading(other), True)


@implementer(IPushProducer)
class _Reading:
    """
    The reading of one side, as the producer of the other side's
    transport.  Not the transport itself: a transport that closes stops
    its producer, and the session, not Twisted, decides how the other
    side is closed (with the close code that came).
    """

    def __init__(self, end: ITailEnd) -> None:
        self._end = end

    def pauseProducing(self) -> None:
        self._end.pause()

    def resumeProducing(self) -> None:
        self._end.resume()

    def stopProducing(self) -> None:
        pass


def _closed_code(was_clean: bool, code: Optional[int]) -> Optional[int]:
    # Autobahn reports 1006 for a connection lost without a close frame.
    return code if was_clean else 1006


class UpstreamTailProtocol(WebSocketClientProtocol):
    """
    The gateway's WebSocket to Loki.  C{opened} fires once the handshake
    is done, or fails with L{TailHandshakeFailed} or C{ConnectionClosed}.
    """

    factory: UpstreamTailFactory

    def connectionMade(self) -> None:
        self.opened: Deferred[UpstreamTailProtocol] = Deferred(lambda _: self._abort())
        self._status: Optional[int] = None
        self._is_open = False
        super().connectionMade()

    def _abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def failHandshake(self, reason: str) -> None:
        line = getattr(self, "http_status_line", None)
        if isinstance(line, str):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                self._status = int(parts[1])
        super().failHandshake(reason)

    def onOpen(self) -> None:
        if self.opened.called:
            # Given up on (timed out, or the client left) in the same
            # moment the handshake came: nobody will read this tail.
            self.dropConnection(abort=True)
            return
        self._is_open = True
        session = self.factory.session
        session.upstream_opened(_End(self))
        if not self.opened.called:
            self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.session.from_upstream(payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if not self._is_open:
            if not self.opened.called:
                if self._status is not None or getattr(self, "http_status_line", None):
                    self.opened.errback(TailHandshakeFailed(self._status, reason or ""))
                else:
                    self.opened.errback(ConnectionClosed(reason or "closed before the handshake"))
            return
        self.factory.session.upstream_closed(_closed_code(wasClean, code), reason)


class UpstreamTailFactory(WebSocketClientFactory):
    """
    One tail's connection to Loki: its URL, the headers the upstream
    needs (tenant, credentials, the operator's), and the session its
    messages go to.
    """

    protocol = UpstreamTailProtocol  # type: ignore[assignment]

    def __init__(
        self, url: str, headers: dict[str, str], session: TailSession, limits: TailLimits,
        reactor: Any,
    ) -> None:
        super().__init__(url, headers=headers, useragent=USER_AGENT.decode("ascii"),
                         reactor=reactor)
        self.session = session
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_bytes,
            maxFramePayloadSize=limits.max_message_bytes,
            # The gateway bounds the handshake with its own clock.
            openHandshakeTimeout=0,
            closeHandshakeTimeout=_CLOSE_HANDSHAKE_TIMEOUT,
            echoCloseCodeReason=True,
            # Frames pass whole; permessage-deflate is not offered, so a
            # client's message costs what it weighs.
            perMessageCompressionOffers=[],
        )


class ClientTailProtocol(WebSocketServerProtocol):
    """
    The client's WebSocket, once the web layer has handed it the
    connection and the request head (see L{sealgw.web.query}).
    """

    factory: ClientTailFactory

    def onOpen(self) -> None:
        self.factory.session.client_opened(_End(self))

    def onMessageFrameBegin(self, length: int) -> None:
        # The protocol's own message limit bounds what the gateway sends
        # (Loki's batches of lines); what a client sends has a smaller one.
        super().onMessageFrameBegin(length)
        limit = self.factory.max_client_message_bytes
        if not self.failedByMe and self.message_data_total_length > limit:
            self._max_message_size_exceeded(
                self.message_data_total_length,
                limit,
                f"a client message on a tail may be at most {limit} bytes",
            )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.session.from_client(payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.factory.session.client_closed(_closed_code(wasClean, code), reason)


class ClientTailFactory(WebSocketServerFactory):
    """
    Builds the one server protocol of one tail.
    """

    protocol = ClientTailProtocol  # type: ignore[assignment]

    def __init__(self, session: TailSession, limits: TailLimits, reactor: Any) -> None:
        super().__init__(server="sealgw", reactor=reactor)
        self.session = session
        self.max_client_message_bytes = limits.max_client_message_bytes
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_bytes,
            maxFramePayloadSize=limits.max_client_message_bytes,
            openHandshakeTimeout=0,
            closeHandshakeTimeout=_CLOSE_HANDSHAKE_TIMEOUT,
            echoCloseCodeReason=True,
        )
