"""
Reading a response body: whole but never past a limit, or streamed to a
consumer that can push back.
"""

from __future__ import annotations

from typing import Any, Optional

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from sealgw.http._errors import BodyReadFailed
from sealgw.http._timeout import OperationTimedOut


@attr.frozen
class Body:
    """
    A response body, or the part of it that fitted under the limit.
    """

    data: bytes
    truncated: bool


def _drop(transport: Optional[Any]) -> None:
    if transport is not None:
        # The body's transport is Twisted's TransportProxyProducer;
        # loseConnection closes the underlying connection, and is a no-op
        # once the body has ended.
        transport.loseConnection()


def _ended(reason: Failure) -> bool:
    # PotentialDataLoss: a body without a length, ended by closing the
    # connection; that is how HTTP/1.0 servers end every body.
    return reason.check(ResponseDone, PotentialDataLoss) is not None


class CappedBody(Protocol):
    """
    Collects at most C{limit} bytes.  Past the limit the connection is
    dropped rather than drained: the rest is not wanted, and a connection
    with unread body cannot go back to the pool anyway.
    """

    def __init__(self, limit: int) -> None:
        self.finished: Deferred[Body] = Deferred(lambda _: self._stop())
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._stopped = False

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called or self._stopped:
            return
        room = self._limit - self._size
        if len(data) <= room:
            self._chunks.append(data)
            self._size += len(data)
            return
        self._chunks.append(data[:room])
        self._size += room
        self._stop()
        self.finished.callback(Body(self.partial(), truncated=True))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # After _stop the connection's end is our own doing, and whoever
        # stopped it decides how the read ends.
        if self.finished.called or self._stopped:
            return
        if _ended(reason):
            self.finished.callback(Body(self.partial(), truncated=False))
        else:
            self.finished.errback(reason)

    def _stop(self) -> None:
        self._stopped = True
        _drop(self.transport)

    def partial(self) -> bytes:
        """
        What has arrived so far.
        """
        return b"".join(self._chunks)


class StreamStopped(Exception):
    """
    The consumer of a streamed body asked for no more of it.
    """


#: A streamed body's bytes that arrived in one turn of the reactor are
#: handed on together, up to this many at once (the size of one read from
#: a socket): every hand-on costs the consumer a write, its framing and a
#: system call, whatever its size.
COALESCE_BYTES = 64 * 1024


@implementer(IPushProducer)
class StreamingBody(Protocol):
    """
    Hands a body to a consumer as it arrives, and is that consumer's
    producer: when the consumer pauses (its own reader is slow) the
    upstream connection is paused, so TCP pushes back on the upstream
    instead of the body piling up in memory here.

    What arrives in one turn of the reactor is handed on in one write (at
    most L{COALESCE_BYTES} at a time), at the end of that turn: an
    upstream that sends its body in many small chunks (a gzip writer
    flushing every 4 KiB) would otherwise cost the consumer a write, its
    framing and a system call for each.  Nothing waits longer than the
    turn: the consumer's transport would not send before the next one
    anyway.

    The read fails when no data arrives for C{idle} seconds while the
    consumer wants more; time spent paused by the consumer does not count,
    as the upstream is not the one being slow.

    C{finished} fires with the number of bytes delivered.
    """

    def __init__(self, consumer: IConsumer, clock: IReactorTime, idle: float) -> None:
        self.finished: Deferred[int] = Deferred(lambda _: self._stop())
        self.received = 0
        self._consumer = consumer
        self._clock = clock
        self._idle = idle
        self._paused = False
        self._stopped = False
        self._timer: Optional[IDelayedCall] = None
        self._last = 0.0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush: Optional[IDelayedCall] = None

    def connectionMade(self) -> None:
        self._consumer.registerProducer(self, True)
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called or self._stopped:
            return
        self.received += len(data)
        # The idle timer is not moved for every chunk: it looks at when
        # the last one came when it fires.
        self._last = self._clock.seconds()
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= COALESCE_BYTES:
            self._hand_on()
        elif self._flush is None:
            self._flush = self._clock.callLater(0, self._hand_on)

    def _hand_on(self) -> None:
        """
        Write what is pending to the consumer, in one piece.
        """
        if self._flush is not None:
            if self._flush.active():
                self._flush.cancel()
            self._flush = None
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending = []
        self._pending_size = 0
        self._consumer.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called or self._stopped:
            return
        self._disarm()
        self._hand_on()
        if self._stopped:
            # The consumer stopped the stream on that last write.
            return
        self._consumer.unregisterProducer()
        if _ended(reason):
            self.finished.callback(self.received)
        else:
            assert reason.value is not None
            self.finished.errback(BodyReadFailed(reason.value))

    # -- IPushProducer, for the consumer --------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._disarm()
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        self._arm()

    def stopProducing(self) -> None:
        if self.finished.called or self._stopped:
            return
        self._stop()
        self.finished.errback(BodyReadFailed(StreamStopped("the consumer stopped the stream")))

    # -- ending -------------------------------------------------------------

    def _arm(self) -> None:
        """
        Start the idle timer afresh: the silence counts from now.
        """
        self._disarm()
        if not self._paused and not self.finished.called:
            self._last = self._clock.seconds()
            self._timer = self._clock.callLater(self._idle, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expire(self) -> None:
        silent = self._clock.seconds() - self._last
        if silent < self._idle:
            # Data came since the timer was set: wait out the rest.
            self._timer = self._clock.callLater(self._idle - silent, self._expire)
            return
        self._timer = None
        self._stop()
        what = "waiting for more of the response body"
        self.finished.errback(BodyReadFailed(OperationTimedOut(what, self._idle)))

    def _stop(self) -> None:
        self._stopped = True
        self._disarm()
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self._pending = []
        self._pending_size = 0
        self._consumer.unregisterProducer()
        _drop(self.transport)
