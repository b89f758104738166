"""
Relaying one read: ask the upstream, then stream its answer to the client
with backpressure and under a byte cap, never holding the body.

Each read holds one of its upstream's read slots
(L{sealgw.http.UpstreamSlots}) from before it is sent until its answer has
been streamed, cut off, or its client has gone away: one tenant's slow
queries fill at most its share of them.

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

from sealgw.http import (
    BodyReadFailed,
    IHTTPResponse,
    SlotRefused,
    StreamStopped,
    describe,
    retry_after_header,
)
from sealgw.query._headers import answer_headers
from sealgw.query._outcome import ReadRefused, failure_refusal, read_verdict, refusal
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


async def proxy_read(
    upstream: ReadUpstream,
    read: ReadRequest,
    downstream: IDownstream,
    tenant: Optional[str] = None,
) -> int:
    """
    Send C{read} to C{upstream} and stream the answer to C{downstream}.

    The upstream's status (see L{sealgw.http.status_verdict}) and the
    headers L{answer_headers} lets through pass.  The body is written as
    it arrives, encoded as the upstream encoded it for the client's own
    C{Accept-Encoding} (the gateway never inflates an answer: that would
    cost it CPU and memory per read that the client did not ask it to
    spend), and the upstream is paused while the client is slow.  An
    answer that declares a length past C{upstream.max_response_bytes} is
    refused before any of it is sent; one that grows past it, or breaks or
    stalls after its first bytes, is cut off with L{IDownstream.abort}.
    The cap counts the bytes as relayed, compressed or not.

    The read waits for a slot of C{upstream.slots} first, as C{tenant}'s
    (the tenant the gate decided; C{read.tenant} is L{None} for an
    upstream that keeps tenants apart by label).  A federated read
    (C{a|b}) counts as the first of its tenants in sort order: one the
    identity may use, so that naming ever new combinations of its tenants
    never gets an identity more than their shares.

    Cancelling (the client went away) leaves the slot queue, or cancels
    the upstream request or drops its connection, whichever is under way;
    the slot is given back either way.

    @return: the body bytes relayed.
    @raise ReadRefused: the gateway answers instead; nothing was written.
    """
    slots = upstream.slots
    if slots is None:
        return await _relay(upstream, read, downstream)
    try:
        slot = await slots.acquire(share_key(tenant if tenant is not None else read.tenant))
    except SlotRefused as e:
        # The tenant's overload, or the upstream's: counted in the slots'
        # metrics, and each one in the access log.
        _log.info(
            "{route}: {api} read of {tenant} refused a slot ({status}): {why}",
            route=read.route.label, api=read.route.api, tenant=tenant,
            status=e.status, why=e.message,
        )
        raise failure_refusal(e, read.route.api) from None
    try:
        return await _relay(upstream, read, downstream)
    finally:
        slot.release()


def share_key(tenant: Optional[str]) -> Optional[str]:
    """
    The tenant whose share a read with tenant header C{tenant} counts
    against.
    """
    if tenant is None or "|" not in tenant:
        return tenant
    return min(tenant.split("|"))


async def _relay(upstream: ReadUpstream, read: ReadRequest, downstream: IDownstream) -> int:
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
        refused = failure_refusal(e, api)
        _log.warn(
            "{route}: {api} upstream failed ({status}): {why}",
            route=read.route.label, api=api, status=refused.status, why=describe(e),
        )
        raise refused from None
    verdict = read_verdict(response.status, response.headers, api)
    if not verdict.passes:
        _log.warn(
            "{route}: {api} upstream answered {upstream_status}; answering {status}",
            route=read.route.label, api=api, upstream_status=response.status,
            status=verdict.status,
        )
        _discard(response)
        raise refusal(verdict)
    limit = upstream.max_response_bytes
    if response.length is not None and response.length > limit:
        _discard(response)
        raise ReadRefused(
            502,
            f"the {api} upstream's answer ({response.length} bytes) is larger than "
            f"the gateway's limit of {limit} bytes",
        )
    headers = answer_headers(response.headers)
    retry_after = verdict.client_retry_after()
    if retry_after is not None and not any(name == b"retry-after" for name, _ in headers):
        # Every 429 and 503 says when to come back.
        headers.append((b"retry-after", retry_after_header(retry_after).encode("ascii")))
    downstream.begin(verdict.status, headers)
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
