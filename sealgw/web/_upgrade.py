"""
Handing a request's connection to another protocol (a WebSocket): the
upgrade headers judged before anything is opened for it, and the
connection taken from Twisted's HTTP channel once the route has decided.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Optional

from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

#: The one WebSocket version there is (RFC 6455).
WEBSOCKET_VERSION = b"13"

#: The request headers the protocol taking the connection over is given:
#: those of a WebSocket handshake.  The route has judged the rest (the
#: client's credentials above all), and a library that logs the head it
#: reads must not find them there.
HANDSHAKE_HEADERS = frozenset(
    {
        b"host",
        b"upgrade",
        b"connection",
        b"origin",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    }
)


def _tokens(request: Any, name: bytes) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in request.requestHeaders.getRawHeaders(name, []):
        tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def websocket_problem(request: IRequest) -> Optional[tuple[int, str, dict[str, str]]]:
    """
    What is wrong with C{request} as a WebSocket opening handshake
    (RFC 6455 section 4.2.1), as the status, message and headers to answer
    with, or L{None}.
    """
    req: Any = request
    if req.method != b"GET":
        return 400, "a WebSocket is opened with GET", {}
    if req.clientproto != b"HTTP/1.1":
        return 400, "a WebSocket is opened with an HTTP/1.1 request", {}
    if b"websocket" not in _tokens(req, b"upgrade"):
        return (
            426,
            "this path is a WebSocket: send Upgrade: websocket and Connection: Upgrade",
            {"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    if b"upgrade" not in _tokens(req, b"connection"):
        return 400, "a WebSocket upgrade needs Connection: Upgrade", {}
    versions = req.requestHeaders.getRawHeaders(b"sec-websocket-version", [])
    if versions != [WEBSOCKET_VERSION]:
        return (
            426,
            "only WebSocket version 13 is spoken here",
            {"Sec-WebSocket-Version": WEBSOCKET_VERSION.decode("ascii")},
        )
    keys = req.requestHeaders.getRawHeaders(b"sec-websocket-key", [])
    try:
        valid = len(keys) == 1 and len(base64.b64decode(keys[0].strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        return 400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value", {}
    return None


class Upgrade(Resource):
    """
    What a route returns to hand its request's connection to
    C{protocol}: Klein renders it, and it takes the connection over.

    Twisted's channel is left without a transport, so it writes nothing
    more; the request head is given to C{protocol} as if it had just
    arrived, for the protocol to answer (a WebSocket's 101).  The request
    stays in flight, for the access line and a drain, until the protocol's
    owner calls the request's C{upgrade_ended}.

    @param on_gone: called instead when the client went away before the
        connection could be handed over.
    @param on_upgraded: called with the connection's transport once it is
        the protocol's.
    """

    isLeaf = True

    def __init__(
        self,
        protocol: Protocol,
        on_gone: Callable[[], None],
        on_upgraded: Callable[[Any], None],
    ) -> None:
        super().__init__()
        self._protocol = protocol
        self._on_gone = on_gone
        self._on_upgraded = on_upgraded

    def render(self, request: Any) -> Any:
        channel = request.channel
        if channel is None or channel.transport is None:
            self._on_gone()
            return NOT_DONE_YET
        request.code = 101
        self._on_upgraded(take_over(request, self._protocol))
        return NOT_DONE_YET


def take_over(request: Any, protocol: Protocol) -> Any:
    """
    Give C{request}'s connection to C{protocol}, and replay the head.

    @return: the connection's transport.
    """
    channel = request.channel
    transport = channel.transport
    channel.transport = None
    # The channel was its producer, and paused its reading while the
    # request was routed.
    transport.unregisterProducer()
    if isinstance(transport, ProtocolWrapper):
        # TLS, or the listener's connection limit.
        transport.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    transport.resumeProducing()
    head = [b"%s %s HTTP/1.1\r\n" % (request.method, request.uri)]
    for name, values in request.requestHeaders.getAllRawHeaders():
        if name.lower() in HANDSHAKE_HEADERS:
            head.append(name + b": " + b", ".join(values) + b"\r\n")
    head.append(b"\r\n")
    protocol.dataReceived(b"".join(head))
    return transport
