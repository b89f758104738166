"""
The one outbound HTTP client, on treq and Twisted's Agent: a connection
pool per client, TLS against the configured trust roots, a connect, a
response and a body timeout, the outbound credentials hook and the
header policy.  Answers come as the upstream encoded them (see
L{sealgw.http._undecoded}).
Retries and what an answer means belong to the callers (L{sealgw.relay}
for pushes, L{sealgw.query} for reads, L{sealgw.auth} for identity
providers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, Optional, Protocol, cast

from treq.client import HTTPClient as TreqClient
from treq.cookies import IndexableCookieJar
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer

from sealgw.config import HTTPUpstreamConfig, TimeoutsConfig
from sealgw.credentials._interfaces import ICredentials
from sealgw.credentials._static import NoCredentials, credentials_for
from sealgw.http._backend_agent import BackendAgent
from sealgw.http._backend_metrics import backend_metrics
from sealgw.http._backends import Backend, Backends
from sealgw.http._body import Body, CappedBody, StreamingBody
from sealgw.http._errors import BodyReadFailed, CredentialsUnavailable
from sealgw.http._headers import HeaderPolicy
from sealgw.http._interfaces import URL, IHTTPClient, IHTTPResponse, RequestBody
from sealgw.http._timeout import bounded
from sealgw.http._tls import https_policy, load_trust_root
from sealgw.http._undecoded import UndecodedAgent, hide_accepted, restore
from sealgw.http._url import sendable

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from twisted.internet._sslverify import IOpenSSLTrustRoot

#: Idle pooled connections are dropped after this long.  Load balancers
#: and ingresses commonly close idle keep-alive connections after 60 s; a
#: POST sent on a connection the server is closing fails without a
#: response and costs a retry, so let ours go first.
CACHED_CONNECTION_TIMEOUT = 50.0

#: Answers that say a backend cannot serve now, as a proxy in front of it
#: or the backend itself gives them: its other backends may.  (A 429 is
#: about a tenant's limits, a 500 about the request as often as the
#: backend: neither is held against it.)
_BACKEND_UNAVAILABLE = frozenset({502, 503, 504})


def _treq_over(agent: Any) -> TreqLike:
    """
    treq on C{agent}, below its gzip decoder an agent that hides encodings
    from it (L{UndecodedAgent}).
    """
    # Cookies an upstream's load balancer sets must not be replayed on
    # every later request, whichever tenant it carries.
    no_cookies = IndexableCookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    client = TreqClient(
        UndecodedAgent(agent), cookiejar=no_cookies, data_to_body_producer=_body_producer
    )
    return cast(TreqLike, client)


class TreqLike(Protocol):
    """
    The part of C{treq.client.HTTPClient} (and C{treq.testing.StubTreq})
    the client uses; tests pass scripted fakes.
    """

    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]: ...


@implementer(IBodyProducer)
class _BytesProducer:
    """
    Writes a body that is already in memory in one go.

    treq would wrap bytes in a C{FileBodyProducer}, which feeds them
    through the global reactor's cooperator in 64 KiB steps; a push body is
    at most a few MiB that we hold anyway, and this keeps the injected
    reactor the only clock involved.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


def _body_producer(data: RequestBody) -> IBodyProducer:
    if IBodyProducer.providedBy(data):
        return cast(IBodyProducer, data)
    return _BytesProducer(cast(bytes, data))


@implementer(IHTTPResponse)
class HTTPResponse:
    """
    A response from L{HTTPClient}, its body not yet read.
    """

    def __init__(self, response: IResponse, clock: IReactorTime, body_timeout: float) -> None:
        self.status: int = response.code
        self.headers = restore(response.headers)
        self.length: Optional[int] = (
            None if response.length is UNKNOWN_LENGTH else cast(int, response.length)
        )
        self._response = response
        self._clock = clock
        self._body_timeout = body_timeout
        self._taken = False

    def _take(self) -> None:
        if self._taken:
            raise RuntimeError("a response body can only be read once")
        self._taken = True

    def read(self, limit: int) -> Deferred[Body]:
        self._take()
        if self.length == 0:
            return succeed(Body(b"", truncated=False))
        reader = CappedBody(limit)
        self._response.deliverBody(reader)

        def failed(failure: Failure) -> Failure:
            if failure.check(CancelledError):
                return failure
            assert failure.value is not None
            return Failure(BodyReadFailed(failure.value, reader.partial()))

        return bounded(
            reader.finished, self._body_timeout, self._clock, "reading the response body"
        ).addErrback(failed)

    def stream(self, consumer: IConsumer) -> Deferred[int]:
        self._take()
        reader = StreamingBody(consumer, self._clock, self._body_timeout)
        self._response.deliverBody(reader)
        return reader.finished


@implementer(IHTTPClient)
class HTTPClient:
    """
    Requests to one upstream over an owned C{HTTPConnectionPool}.

    @param reactor: connects, and is the clock for every timeout.
    @param name: what the client talks to, for logs.
    @param timeouts: C{connect} bounds establishing a connection (TLS
        included), C{response} the wait for the status and headers (and for
        the credentials), C{body} reading a capped body whole, or the
        silence between chunks of a streamed one.
    @param max_connections: idle pooled connections kept per host.  Give
        at least the requests the client may have in flight at once (see
        L{for_upstream}): Twisted's pool opens a connection for every
        request it has none idle for, and closes what it cannot keep, so
        a smaller pool churns connections (and TLS handshakes) under load.
    @param trust_root: the CAs to trust for https; the system's when
        C{None}.
    @param headers: the operator's static headers.
    @param credentials: asked before every request; none by default.
    @param treq: a treq-like client to send through instead of the owned
        pool (tests pass fakes or C{StubTreq}, which decodes gzip as treq
        does; the owned pool never does).
    @param backends: where each request goes (L{Backends}); by default
        where its URL says.  Every backend's connections are kept in the
        one pool, apart from the others'.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        name: str,
        timeouts: TimeoutsConfig = TimeoutsConfig(),
        max_connections: int = 10,
        trust_root: Optional[IOpenSSLTrustRoot] = None,
        headers: Optional[Mapping[str, str]] = None,
        tenant_header: str = "X-Scope-OrgID",
        credentials: Optional[ICredentials] = None,
        treq: Optional[TreqLike] = None,
        backends: Optional[Backends] = None,
    ) -> None:
        self.name = name
        self.timeouts = timeouts
        self.backends = backends
        self._reactor = reactor
        self._senders: dict[Backend, TreqLike] = {}
        self._injected = treq is not None
        self._clock: IReactorTime = reactor
        self._policy = HeaderPolicy.build(headers or {}, tenant_header)
        self._credentials: ICredentials = (
            credentials if credentials is not None else NoCredentials()
        )
        self.pool: Optional[HTTPConnectionPool] = None
        if treq is None:
            treq = self._own_pool(reactor, max_connections, trust_root)
        self._treq = treq
        if backends is not None:
            backends.when_removed(self._forget)

    @classmethod
    def for_upstream(
        cls,
        config: HTTPUpstreamConfig,
        reactor: Any,
        *,
        tenant_header: str = "X-Scope-OrgID",
        credentials: Optional[ICredentials] = None,
        in_flight: int = 0,
        kind: str = "pushes",
        registry: Optional[CollectorRegistry] = None,
    ) -> HTTPClient:
        """
        The client a configured upstream describes, with the static
        credentials it names unless C{credentials} replaces them, and its
        backends (C{urls}), their names resolved now and every
        L{sealgw.http._resolution.RESOLVE_INTERVAL} by the reactor's
        resolver.  Reads its C{ca_file} now.

        @param in_flight: the most requests the caller sends through it at
            once (its L{sealgw.http.UpstreamSlots}); the pool keeps that
            many idle connections if C{max_connections} is fewer, so every
            slot finds its connection again.
        @param kind: what the client is for (C{pushes}, C{reads}), in its
            backends' metrics.
        @param registry: where its backends' series go; none by default.

        @raise OSError: when C{ca_file} cannot be read.
        @raise ValueError: when C{ca_file} holds no usable certificate.
        """
        trust_root = load_trust_root(config.ca_file) if config.ca_file is not None else None
        backends = Backends(
            config.name,
            config.urls,
            reactor,
            resolver=getattr(reactor, "nameResolver", None),
            metrics=(
                backend_metrics(registry).for_upstream(config.name, kind)
                if registry is not None
                else None
            ),
        )
        client = cls(
            reactor,
            name=config.name,
            timeouts=config.timeouts,
            max_connections=max(config.max_connections, in_flight),
            trust_root=trust_root,
            headers=config.headers,
            tenant_header=tenant_header,
            credentials=credentials if credentials is not None else credentials_for(config),
            backends=backends,
        )
        # Names are resolved from the first request on (Backends.start),
        # not here: a gateway built only to check a configuration, or
        # thrown away by a reload, leaves no resolution running.
        return client

    def _own_pool(
        self, reactor: Any, max_connections: int, trust_root: Optional[IOpenSSLTrustRoot]
    ) -> TreqLike:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = max_connections
        pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT  # type: ignore[assignment]
        self.pool = pool
        self._tls = https_policy(trust_root)
        agent = Agent(
            reactor,
            contextFactory=self._tls,
            connectTimeout=self.timeouts.connect,
            pool=pool,
        )
        return _treq_over(agent)

    def _forget(self, backend: Backend) -> None:
        # Its idle connections close on their own within
        # CACHED_CONNECTION_TIMEOUT; those in use finish their request.
        self._senders.pop(backend, None)

    def _sender(self, backend: Backend) -> TreqLike:
        """
        The treq client that sends to C{backend}, made on its first
        request.
        """
        sender = self._senders.get(backend)
        if sender is None:
            if self._injected or self.pool is None:
                return self._treq
            agent = BackendAgent(
                self._reactor, backend, self.pool, self._tls, self.timeouts.connect
            )
            sender = self._senders[backend] = _treq_over(agent)
        return sender

    def __repr__(self) -> str:
        return f"<HTTPClient {self.name!r}>"

    def close(self) -> Deferred[None]:
        if self.backends is not None:
            self.backends.stop()
        if self.pool is None:
            return succeed(None)
        return self.pool.closeCachedConnections()

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
        authorization = await self._authorization()
        kwargs: dict[str, Any] = {
            "headers": self._policy.compose(
                headers, content_type, content_encoding, tenant, authorization
            ),
            "allow_redirects": False,
            "unbuffered": True,
        }
        if self.pool is not None:
            # Through treq's decoder to the UndecodedAgent below it.
            hide_accepted(kwargs["headers"])
        if query:
            kwargs["params"] = list(query)
        else:
            url = sendable(url)
        if body is not None:
            kwargs["data"] = body
        backends = self.backends
        if backends is not None:
            backends.start()  # once; later calls do nothing
        if backends is None:
            response: IResponse = await bounded(
                self._treq.request(method, url, **kwargs),
                self.timeouts.response,
                self._clock,
                "waiting for the response",
            )
            return HTTPResponse(response, self._clock, self.timeouts.body)
        backend = backends.pick()
        # Counted as in flight there until its status and headers are in:
        # the answers of pushes are small, and a read's body streams at
        # the client's pace, which says nothing of the backend's load.
        ok: Optional[bool] = False
        try:
            response = await bounded(
                self._sender(backend).request(method, url, **kwargs),
                self.timeouts.response,
                self._clock,
                "waiting for the response",
            )
            ok = response.code not in _BACKEND_UNAVAILABLE
        except CancelledError:
            ok = None
            raise
        finally:
            backends.finished(backend, ok)
        return HTTPResponse(response, self._clock, self.timeouts.body)

    async def _authorization(self) -> Optional[bytes]:
        asked = self._credentials.authorization()
        try:
            if asked.called:
                # No credentials, static ones, or a token in hand: nothing
                # to wait for, so no timer to set and cancel.
                return await asked
            return await bounded(
                asked,
                self.timeouts.response,
                self._clock,
                "getting outbound credentials",
            )
        except CancelledError:
            raise
        except Exception as e:
            # Never the exception's text: a token endpoint's answer could
            # be in it.  The provider logs its own details.
            self._log.error(
                "{client}: no outbound credentials: {kind}", client=self.name,
                kind=type(e).__name__,
            )
            unavailable = CredentialsUnavailable("outbound credentials are not available")
            # A provider that knows when it will try again says so.
            retry_after = getattr(e, "retry_after", None)
            if isinstance(retry_after, (int, float)):
                unavailable.retry_after = float(retry_after)
            raise unavailable from None
