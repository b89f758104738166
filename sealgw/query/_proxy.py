"""
Relaying one read: ask the upstream, then stream its answer to the client
with backpressure and under a byte cap, never holding the body.

Reads are not retried here.  An answer cannot be taken back once any of
it was sent, and before that the only failure worth a second try is a
kept-alive connection the upstream had already closed: Twisted's
connection pool retries exactly that, once, for a GET (no body) that got
no answer at all.  Anything else is answered, and Grafana asks again.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sealgw.http import BodyReadFailed, IHTTPResponse, StreamStopped, describe
from sealgw.query._headers import answer_headers
from sealgw.query._outcome import ReadRefused, answer_status, failure_refusal
from sealgw.query._request import ReadRequest
from sealgw.query._settings import ReadUpstream

_log = Logger()


class IDownstream(IConsumer):
    """
    The client of a read, as the proxy writes to it: the web layer's
    request.  As an C{IConsumer} it pauses the upstream's body when the
    client reads slowly.
    """

    def begin(status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """
        Set the answer's status and headers; the body follows with
        C{write}.
        """

    def abort() -> Deferred[None]:
        """
        Cut the answer off by dropping the connection (its status and part
        of its body may be gone already, so nothing else tells the client
        the body is incomplete).  Fires once the connection is gone.
        """


@implementer(IConsumer)
class CappedConsumer:
    """
    Passes a body on to C{downstream} until C{limit} bytes; the chunk that
    would go past it is not written and the producer is stopped, which
    ends the upstream read.

    @ivar written: bytes passed on.
    @ivar over: whether the body went past the limit.
    """

    def __init__(self, downstream: IDownstream, limit: int) -> None:
        self.written = 0
        self.over = False
        self._downstream = downstream
        self._limit = limit
        self._producer: Optional[IPushProducer] = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer
        self._downstream.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._producer = None
        self._downstream.unregisterProducer()

    def write(self, data: bytes) -> None:
        if self.over:
            return
        if self.written + len(data) > self._limit:
            self.over = True
            producer = self._producer
            if producer is not None:
                producer.stopProducing()
            return
        self.written += len(data)
        self._downstream.write(data)


async def proxy_read(upstream: ReadUpstream, read: ReadRequest, downstream: IDownstream) -> int:
    """
    Send C{read} to C{upstream} and stream the answer to C{downstream}.

    The upstream's status (see L{sealgw.query._outcome}), content type and
    content encoding pass; the body is written as it arrives and the
    upstream is paused while the client is slow.  An answer that declares
    a length past C{upstream.max_response_bytes} is refused before any of
    it is sent; one that grows past it, or breaks or stalls after its
    first bytes, is cut off with L{IDownstream.abort}.

    Cancelling (the client went away) cancels the upstream request or
    drops its connection, whichever is under way.

    @return: the body bytes relayed.
    @raise ReadRefused: the gateway answers instead; nothing was written.
    """
    api = read.route.api
    url = upstream.url_for(read.path, read.query)
    try:
        response: IHTTPResponse = await upstream.client.request(
            read.method,
            url,
            headers=read.headers,
            body=read.body,
            content_type=read.content_type,
            tenant=read.tenant,
        )
    except CancelledError:
        raise
    except Exception as e:
        refusal = failure_refusal(e, api)
        _log.warn(
            "{route}: {api} upstream failed ({status}): {why}",
            route=read.route.label, api=api, status=refusal.status, why=describe(e),
        )
        raise refusal from None
    try:
        status = answer_status(response.status, api)
    except ReadRefused as refusal:
        _log.warn(
            "{route}: {api} upstream answered {upstream_status}; answering {status}",
            route=read.route.label, api=api, upstream_status=response.status,
            status=refusal.status,
        )
        _discard(response)
        raise
    limit = upstream.max_response_bytes
    if response.length is not None and response.length > limit:
        _discard(response)
        raise ReadRefused(
            502,
            f"the {api} upstream's answer ({response.length} bytes) is larger than "
            f"the gateway's limit of {limit} bytes",
        )
    downstream.begin(status, answer_headers(response.headers))
    capped = CappedConsumer(downstream, limit)
    try:
        await response.stream(capped)
    except CancelledError:
        raise
    except Exception as e:
        if capped.over:
            why = f"the answer grew past the limit of {limit} bytes"
        elif isinstance(e, BodyReadFailed) and isinstance(e.cause, StreamStopped):
            why = "the client stopped reading"
        else:
            why = describe(e)
        _log.warn(
            "{route}: cut off the {api} answer after {written} bytes: {why}",
            route=read.route.label, api=api, written=capped.written, why=why,
        )
        await downstream.abort()
    return capped.written


def _discard(response: IHTTPResponse) -> None:
    """
    Drop a response whose body nobody will read: its connection goes now,
    unless the body was empty (a few bytes of a refused answer are not
    worth waiting for, and a declared-huge one must not be read).
    """

    def ignore(failure: Failure) -> None:
        return None

    reading = response.read(0)
    reading.addErrback(ignore)
    reading.cancel()
