"""
An HTTP client that answers in memory: it records every request as the
real client would send it (header policy, tenant header, credentials
applied) and answers from a handler, so code built on
L{sealgw.http.IHTTPClient} is tested on a C{Clock} without sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union, cast
from urllib.parse import urlencode

import attr
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from sealgw.credentials import ICredentials, NoCredentials
from sealgw.http import (
    URL,
    Body,
    BodyReadFailed,
    CredentialsUnavailable,
    HeaderPolicy,
    IHTTPClient,
    IHTTPResponse,
    RequestBody,
    StreamStopped,
)


@attr.define
class SentRequest:
    """
    One request the client was asked to send.

    @ivar url: with the query string added.
    @ivar headers: as the header policy composed them.
    @ivar cancelled: the caller cancelled it before it was answered.
    """

    method: str
    url: str
    headers: Headers
    body: bytes
    cancelled: bool = False

    def header(self, name: str) -> Optional[str]:
        """
        The last value of header C{name}, or C{None}.
        """
        values = self.headers.getRawHeaders(name.encode("ascii"))
        return values[-1].decode("utf-8") if values else None


@attr.frozen
class MemoryResponse:
    """
    An answer to play.

    @ivar chunks: the body is delivered in pieces of this size (streaming
        tests), or whole when C{None}.
    @ivar hold: the body never ends after what is given: reads wait until
        they are cancelled (drives body timeouts).
    """

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = attr.field(factory=dict)
    chunks: Optional[int] = None
    hold: bool = False


#: What a handler gives for a request: a response, an exception to fail
#: with, or a Deferred of either (cancelled when the caller cancels).
Answer = Union[MemoryResponse, BaseException, "Deferred[Any]"]
Handler = Callable[[SentRequest], Answer]


def script(*answers: Answer) -> Handler:
    """
    A handler giving C{answers} in order, one per request.
    """
    remaining = list(answers)

    def handler(request: SentRequest) -> Answer:
        if not remaining:
            raise AssertionError(f"no answer left for {request.method} {request.url}")
        return remaining.pop(0)

    return handler


class _Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


@implementer(IHTTPResponse)
class MemoryHTTPResponse:
    """
    A L{MemoryResponse} being read.
    """

    def __init__(self, answer: MemoryResponse) -> None:
        self.status = answer.status
        self.headers = Headers({k.encode(): [v.encode()] for k, v in answer.headers.items()})
        self.length: Optional[int] = None if answer.hold else len(answer.body)
        self._answer = answer
        self._taken = False

    def _pieces(self) -> list[bytes]:
        body, size = self._answer.body, self._answer.chunks or len(self._answer.body) or 1
        return [body[i:i + size] for i in range(0, len(body), size)]

    def _take(self) -> None:
        if self._taken:
            raise RuntimeError("a response body can only be read once")
        self._taken = True

    def read(self, limit: int) -> Deferred[Body]:
        self._take()
        data = self._answer.body
        if len(data) > limit:
            return succeed(Body(data[:limit], truncated=True))
        if self._answer.hold:
            return Deferred()
        return succeed(Body(data, truncated=False))

    def stream(self, consumer: IConsumer) -> Deferred[int]:
        self._take()
        return _Stream(consumer, self._pieces(), self._answer.hold).finished


@implementer(IPushProducer)
class _Stream:
    """
    Writes the pieces while the consumer is not paused.
    """

    def __init__(self, consumer: IConsumer, pieces: list[bytes], hold: bool) -> None:
        self.finished: Deferred[int] = Deferred(lambda _: self._end())
        self._consumer = consumer
        self._pieces = pieces
        self._hold = hold
        self._paused = False
        self._sent = 0
        consumer.registerProducer(self, True)
        self._pump()

    def _pump(self) -> None:
        while self._pieces and not self._paused and not self.finished.called:
            piece = self._pieces.pop(0)
            self._sent += len(piece)
            self._consumer.write(piece)
        if not self._pieces and not self._hold and not self.finished.called:
            self._end()
            self.finished.callback(self._sent)

    def _end(self) -> None:
        self._consumer.unregisterProducer()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        if not self.finished.called:
            self._end()
            self.finished.errback(BodyReadFailed(StreamStopped("the consumer stopped the stream")))


@implementer(IHTTPClient)
class MemoryHTTPClient:
    """
    An L{IHTTPClient} whose upstream is C{handler}.

    @ivar requests: every request, in order.
    @ivar closed: whether L{close} was called.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "memory",
        headers: Optional[Mapping[str, str]] = None,
        tenant_header: str = "X-Scope-OrgID",
        credentials: Optional[ICredentials] = None,
    ) -> None:
        self.name = name
        self.requests: list[SentRequest] = []
        self.closed = False
        self._handler = handler
        self._policy = HeaderPolicy.build(headers or {}, tenant_header)
        self._credentials = credentials if credentials is not None else NoCredentials()

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)

    def request(
        self,
        method: str,
        url: URL,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[RequestBody] = None,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> Deferred[IHTTPResponse]:
        return Deferred.fromCoroutine(
            self._request(method, url, query, headers or {}, body, content_type,
                          content_encoding, tenant)
        )

    async def _request(
        self,
        method: str,
        url: URL,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        body: Optional[RequestBody],
        content_type: Optional[str],
        content_encoding: Optional[str],
        tenant: Optional[str],
    ) -> IHTTPResponse:
        try:
            authorization = await self._credentials.authorization()
        except CancelledError:
            raise
        except Exception:
            raise CredentialsUnavailable("outbound credentials are not available") from None
        text = url if isinstance(url, str) else url.to_text()
        if query:
            text += ("&" if "?" in text else "?") + urlencode(list(query))
        data = b""
        if body is not None and IBodyProducer.providedBy(body):
            collect = _Collect()
            await cast(IBodyProducer, body).startProducing(collect)  # type: ignore[arg-type]
            data = b"".join(collect.parts)
        elif body is not None:
            data = cast(bytes, body)
        sent = SentRequest(
            method=method,
            url=text,
            headers=self._policy.compose(
                headers, content_type, content_encoding, tenant, authorization
            ),
            body=data,
        )
        self.requests.append(sent)
        answer = await self._answer(sent)
        return MemoryHTTPResponse(answer)

    def _answer(self, sent: SentRequest) -> Deferred[MemoryResponse]:
        try:
            answer = self._handler(sent)
        except Exception as e:
            return fail(e)
        if isinstance(answer, BaseException):
            return fail(answer)
        if isinstance(answer, MemoryResponse):
            return succeed(answer)
        pending: Deferred[Any] = answer

        def cancel(_: Deferred[MemoryResponse]) -> None:
            sent.cancelled = True
            pending.cancel()

        waiter: Deferred[MemoryResponse] = Deferred(cancel)

        def relay(result: Any) -> None:
            if waiter.called:
                return None
            if isinstance(result, Failure):
                waiter.errback(result)
            elif isinstance(result, BaseException):
                waiter.errback(Failure(result))
            else:
                waiter.callback(result)
            return None

        pending.addBoth(relay)
        return waiter
