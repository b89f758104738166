"""
The gateway's HTTP request: a body capped in size and kept in memory, and
the facts the access log and metrics need once it is answered.
"""

from __future__ import annotations

import io
from http import HTTPStatus
from typing import Any, Optional

import attr
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from sealgw.web._errors import early_answer


class _Discard(io.BytesIO):
    """
    Where an oversized body goes: nowhere.
    """

    def write(self, data: Any) -> int:
        return len(data)


#: The route of a request no route matched.
UNMATCHED = "unmatched"

#: Reason phrases for the statuses Twisted has none for (429, 431, 421,
#: 422, ...), which it would send as "Unknown Status"; clients log the
#: phrase beside the code.
REASON_PHRASES: dict[int, bytes] = {
    status.value: status.phrase.encode("ascii")
    for status in HTTPStatus
    if status.value not in RESPONSES
}


@attr.define
class RequestRecord:
    """
    What the access line and the metrics say of one request, filled in as
    it is handled: the route once one matched, who and which tenant once
    the gate admitted it.

    @ivar route: the route's name for logs and metrics.
    @ivar identity: who the request was authenticated as, if anyone.
    @ivar tenant: the tenant it was given, if any.
    """

    route: str = UNMATCHED
    identity: Optional[str] = None
    tenant: Optional[str] = None


def record_of(request: IRequest) -> RequestRecord:
    """
    The L{RequestRecord} of C{request}; a request served by another site
    (a test's in-memory one) gets one on first use.
    """
    record = getattr(request, "record", None)
    if record is None:
        record = RequestRecord()
        request.record = record  # type: ignore[attr-defined]
    return record


def header_text(request: IRequest, name: bytes) -> Optional[str]:
    """
    A request header's value as text (Latin-1, as HTTP defines it), or
    L{None} when it was not sent.
    """
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def body_of(request: IRequest) -> Optional[bytes]:
    """
    The whole body of C{request}, or L{None} when it was over the size
    limit and not kept.
    """
    if isinstance(request, GatewayRequest):
        return None if request.body_too_large else request.body()
    content: Any = request.content
    content.seek(0)
    return bytes(content.read())


def body_size(request: IRequest) -> int:
    """
    How many body bytes C{request} brought, kept or not.
    """
    if isinstance(request, GatewayRequest):
        return request.body_received
    content: Any = request.content
    return len(content.getvalue()) if hasattr(content, "getvalue") else 0


class GatewayRequest(Request):
    """
    A request whose body is read into memory up to the site's C{max_body};
    past that the body is discarded as it arrives and C{body_too_large} is
    set, so the route can answer 413 without having stored it.

    Bodies are never spooled to temporary files: a body within the limit
    is small enough for memory, and disk writes would block the reactor.

    @ivar record: what the access line and metrics say of it.
    """

    body_too_large: bool = False
    answered_early: bool = False
    upgraded: bool = False
    body_received: int = 0
    started: float = 0.0

    # A client that goes on sending after we have said its body is too
    # large is cut off past this many times the limit.
    _ABORT_FACTOR = 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = RequestRecord()

    def gotLength(self, length: Optional[int]) -> None:
        site: Any = self.channel.site  # type: ignore[attr-defined]
        self.started = site.reactor.seconds()
        self._max_body = site.max_body
        if length is not None and length > self._max_body:
            self.body_too_large = True
            self.content = _Discard()
            self._refuse_early(length)
        else:
            self.content = io.BytesIO()
        site.request_started(self)

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:
        if message is None:
            message = REASON_PHRASES.get(code)
        Request.setResponseCode(self, code, message)

    def setHeader(self, name: Any, value: Any) -> None:
        # Twisted names itself and its version in Server, on every answer
        # including those no resource renders (OPTIONS *); say only what
        # answers, and nothing an attacker could match against advisories.
        if (name.encode("ascii") if isinstance(name, str) else name).lower() == b"server":
            value = b"sealgw"
        super().setHeader(name, value)

    def _refuse_early(self, length: int) -> None:
        """
        Answer 413 as soon as the headers declare a body over the limit,
        and close the connection without reading the body.

        Waiting for the whole body would mean reading all of it first; and
        cutting the connection without an answer would make a sender such
        as Prometheus retry the same batch for ever.
        """
        self.answer_early(
            413,
            f"body is larger than the limit of {self._max_body} bytes ({length} bytes declared)",
        )

    def answer_early(self, status: int, message: str) -> None:
        """
        Answer before the body is all in, and close the connection.

        The answer is written straight to the connection because Twisted
        routes a request only once its body is in; the access line still
        comes, with this status, when the connection closes.  The channel
        closes it: over TLS, closing the transport while the channel is
        still registered as its producer would never send the close alert,
        and the client would wait for the end of an answer it already has.
        """
        if self.answered_early:
            # A broken body may go on failing as more of it arrives.
            return
        answer = early_answer(status, message)
        self.code = status
        self.answered_early = True
        transport: Any = self.channel.transport
        transport.write(answer)
        # Like Twisted's own count: body bytes, not the status line and headers.
        self.sentLength = len(answer.partition(b"\r\n\r\n")[2])
        self.loseConnection()

    def upgrade_ended(self, bytes_in: int, bytes_out: int) -> None:
        """
        The connection this request upgraded (a WebSocket, see
        L{sealgw.web._upgrade}) is closed: the request ends now, with its
        101 and the bytes that passed each way, in its access line.
        """
        self.upgraded = True
        self.body_received += bytes_in
        self.sentLength = bytes_out
        self.connectionLost(Failure(ConnectionDone("the upgraded connection is closed")))

    def handleContentChunk(self, data: bytes) -> None:
        self.body_received += len(data)
        if not self.body_too_large and self.body_received > self._max_body:
            self.body_too_large = True
            self.content = _Discard()
        if self.body_received > self._max_body * self._ABORT_FACTOR + 65536:
            transport: Any = self.channel.transport
            transport.abortConnection()
            return
        content: Any = self.content
        content.write(data)

    def body(self) -> bytes:
        """
        The whole request body (empty when it was too large).
        """
        if self.body_too_large:
            return b""
        assert isinstance(self.content, io.BytesIO)
        return self.content.getvalue()
