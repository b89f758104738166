"""
Reading an upstream's response body without ever holding more of it than
a set limit.
"""

from __future__ import annotations

from typing import Optional

import attr
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse


@attr.frozen
class Body:
    """
    A response body, or the part of it that fitted under the limit.
    """

    data: bytes
    truncated: bool


class _CappedBody(Protocol):
    """
    Collects at most C{limit} bytes.  Past the limit the connection is
    dropped rather than drained: the rest is not wanted, and a connection
    with unread body cannot go back to the pool anyway.
    """

    def __init__(self, limit: int) -> None:
        self.finished: Deferred[Body] = Deferred(self._cancel)
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        room = self._limit - self._size
        if len(data) <= room:
            self._chunks.append(data)
            self._size += len(data)
            return
        self._chunks.append(data[:room])
        self._size += room
        self._stop()
        self.finished.callback(Body(b"".join(self._chunks), truncated=True))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            # PotentialDataLoss: a body without a length, ended by closing
            # the connection; that is how HTTP/1.0 servers end every body.
            self.finished.callback(Body(b"".join(self._chunks), truncated=False))
        else:
            self.finished.errback(reason)

    def partial(self) -> bytes:
        """
        What has arrived so far.
        """
        return b"".join(self._chunks)

    def _cancel(self, _: Deferred[Body]) -> None:
        self._stop()

    def _stop(self) -> None:
        transport: Optional[object] = self.transport
        if transport is not None:
            # The body's transport is Twisted's TransportProxyProducer;
            # loseConnection closes the underlying connection.
            transport.loseConnection()  # type: ignore[attr-defined]


def read_body(response: IResponse, limit: int) -> tuple[Deferred[Body], _CappedBody]:
    """
    Start reading C{response}'s body, up to C{limit} bytes.

    @return: a Deferred firing with the L{Body} (cancelling it drops the
        connection), and the reader, whose C{partial()} tells what arrived
        when the read fails or times out.
    """
    reader = _CappedBody(limit)
    response.deliverBody(reader)
    return reader.finished, reader
