"""
Delivering pushes to an HTTP(S) upstream with treq: one connection pool per
upstream, bounded waits, bounded bodies, and retries that stop at the
client's deadline.

What the client is answered decides whether data survives an outage (see
PROTOCOLS.md, section 2), so every way a request can end is mapped to
exactly one of: L{Delivery} (2xx), L{UpstreamRejected} (the data itself was
refused: the same 4xx) or L{UpstreamUnavailable} (try again later: 429,
502, 503, 504).
"""

from __future__ import annotations

import random as _random
import re
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Optional, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import attr
from hyperlink import EncodedURL
from OpenSSL import SSL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from sealgw._version import __version__
from sealgw.config import HTTPUpstreamConfig
from sealgw.relay._body import Body, read_body
from sealgw.relay._credentials import credentials_for
from sealgw.relay._health import UpstreamHealth
from sealgw.relay._interfaces import (
    Delivery,
    ICredentials,
    IRelayMetrics,
    IUpstream,
    Push,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sealgw.relay._metrics import NoMetrics
from sealgw.relay._outcome import Outcome, describe, failure_outcome, response_outcome
from sealgw.relay._retry import RandomSource, next_retry
from sealgw.relay._timeout import bounded

USER_AGENT = f"sealgw/{__version__}".encode("ascii")

#: Idle pooled connections are dropped after this long.  Load balancers
#: and ingresses commonly close idle keep-alive connections after 60 s; a
#: POST sent on a connection the server is closing fails without a
#: response and costs a retry, so let ours go first.
CACHED_CONNECTION_TIMEOUT = 50.0

#: Headers that describe the connection or the body's framing: Twisted
#: writes them, nobody else may.
_FRAMING = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"te",
     b"upgrade", b"keep-alive", b"expect", b"proxy-connection"}
)

#: Besides the framing headers and the tenant header, a push's
#: C{extra_headers} (which may echo what a client sent) can never set these.
_NOT_FROM_PUSH = _FRAMING | {
    b"authorization", b"proxy-authorization", b"cookie", b"content-type",
    b"content-encoding", b"user-agent",
}

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class HTTPClientLike(Protocol):
    """
    The part of C{treq.client.HTTPClient} (and C{treq.testing.StubTreq})
    used here; tests pass fakes.
    """

    def request(self, method: str, url: str | EncodedURL, **kwargs: Any) -> Deferred[Any]: ...


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


def load_trust_root(ca_file: str) -> Any:
    """
    A Twisted trust root made of every certificate in the PEM file
    C{ca_file}, read now (at start-up), not per connection.

    @raise ValueError: naming the file when it holds no certificate.
    """
    with open(ca_file, "rb") as f:
        data = f.read()
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ValueError(f"{ca_file}: no PEM certificate found")
    try:
        certificates = [Certificate.loadPEM(block) for block in blocks]
    except SSL.Error as e:
        raise ValueError(f"{ca_file}: not a valid PEM certificate ({e})") from e
    return trustRootFromCertificates(certificates)


def join_url(base: str, path: str) -> str:
    """
    C{base} with C{path} appended to its path, keeping C{base}'s query
    (Azure Monitor's C{?api-version=}) after it.
    """
    if not path:
        return base
    parts = urlsplit(base)
    path, _, query = path.partition("?")
    joined = parts.path.rstrip("/") + "/" + path.lstrip("/")
    queries = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, joined, queries, parts.fragment))


@implementer(IUpstream)
class HTTPUpstream:
    """
    An HTTP(S) upstream (Mimir, Loki, Tempo, Prometheus, an OpenTelemetry
    Collector, Azure Monitor).

    @param client: a treq-like client; by default one over an owned
        C{HTTPConnectionPool}.  Tests pass fakes or C{StubTreq}.
    @param credentials: overrides the static ones the configuration names
        (how Azure AD tokens come in).
    @param random: the jitter source, C{[0, 1)}.
    """

    _log = Logger()

    def __init__(
        self,
        config: HTTPUpstreamConfig,
        reactor: Any,
        tenant_header: str = "X-Scope-OrgID",
        credentials: Optional[ICredentials] = None,
        metrics: Optional[IRelayMetrics] = None,
        client: Optional[HTTPClientLike] = None,
        random: RandomSource = _random.random,
    ) -> None:
        self.name = config.name
        self.config = config
        self._reactor: IReactorTime = reactor
        self._tenant_header = tenant_header.encode("ascii")
        self._credentials = credentials if credentials is not None else credentials_for(config)
        self._metrics: IRelayMetrics = metrics if metrics is not None else NoMetrics()
        self._random = random
        self._health = UpstreamHealth(reactor)
        # Parsed once per path: parsing a URL on every push is measurable.
        self._urls: dict[str, EncodedURL] = {}
        self._static_headers = [
            (name.encode("utf-8"), value.encode("utf-8"))
            for name, value in config.headers.items()
            if name.lower().encode("utf-8") not in _FRAMING
        ]
        self._pool: Optional[HTTPConnectionPool] = None
        if client is None:
            client = self._build_client(reactor)
        self._client = client

    def _build_client(self, reactor: Any) -> HTTPClientLike:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = self.config.max_connections
        pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT  # type: ignore[assignment]
        self._pool = pool
        trust_root = None
        if self.config.ca_file is not None:
            trust_root = load_trust_root(self.config.ca_file)
        agent = Agent(
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust_root),
            connectTimeout=self.config.timeouts.connect,
            pool=pool,
        )
        # Cookies an upstream's load balancer sets must not be replayed on
        # every later request, whichever tenant it carries.
        no_cookies = IndexableCookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        client = HTTPClient(agent, cookiejar=no_cookies, data_to_body_producer=_BytesProducer)
        return cast(HTTPClientLike, client)

    def __repr__(self) -> str:
        return f"<HTTPUpstream {self.name!r} {self.config.url!r}>"

    def close(self) -> Deferred[None]:
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    def deliver(self, push: Push) -> Deferred[Delivery]:
        return self._health.watch(Deferred.fromCoroutine(self._deliver(push)))

    def health(self) -> dict[str, Any]:
        """
        How recent deliveries went, for C{/health}.
        """
        return self._health.report()

    async def _deliver(self, push: Push) -> Delivery:
        started = push.received_at or self._reactor.seconds()
        url = self._urls.get(push.path)
        if url is None:
            url = self._urls[push.path] = EncodedURL.from_text(join_url(self.config.url, push.path))
        attempts = 0
        while True:
            attempts += 1
            authorization = await self._authorization()
            headers = self._headers(push, authorization)
            outcome = await self._attempt(url, headers, push.body)
            if outcome.delivery is not None:
                if attempts > 1:
                    self._log.info(
                        "{upstream}: delivered {signal} for {tenant} after {attempts} attempts",
                        upstream=self.name, signal=push.signal, tenant=push.tenant,
                        attempts=attempts,
                    )
                return attr.evolve(outcome.delivery, attempts=attempts)
            error = outcome.error
            assert error is not None
            if outcome.retry_reason is None:
                # A refusal of the data is the client's business (it is
                # told); anything else is the operator's.
                log = self._log.info if isinstance(error, UpstreamRejected) else self._log.warn
                log(
                    "{upstream}: {signal} for {tenant} not delivered: {error}",
                    upstream=self.name, signal=push.signal, tenant=push.tenant, error=error,
                )
                raise error
            decision = next_retry(
                self.config.retry,
                attempts,
                now=self._reactor.seconds(),
                started=started,
                random=self._random,
                retry_after=error.retry_after,
            )
            if decision.delay is None:
                error.reason = f"{error.reason} ({decision.why})"
                self._log.warn(
                    "{upstream}: {signal} for {tenant} not delivered: {error}",
                    upstream=self.name, signal=push.signal, tenant=push.tenant, error=error,
                )
                raise error
            self._metrics.retried(self.name, outcome.retry_reason)
            self._log.info(
                "{upstream}: attempt {attempt} failed ({error}); retrying in {delay:.2f}s",
                upstream=self.name, attempt=attempts, error=error, delay=decision.delay,
            )
            await deferLater(self._reactor, decision.delay, lambda: None)

    async def _authorization(self) -> Optional[bytes]:
        try:
            return await bounded(
                self._credentials.authorization(),
                self.config.timeouts.response,
                self._reactor,
                "getting upstream credentials",
            )
        except CancelledError:
            raise
        except Exception as e:
            # Never log the exception's text blindly: a token endpoint's
            # answer could be in it.  The provider logs its own details.
            self._log.error(
                "{upstream}: no upstream credentials: {kind}",
                upstream=self.name, kind=type(e).__name__,
            )
            raise UpstreamUnavailable(503, "upstream credentials are not available") from e

    def _headers(self, push: Push, authorization: Optional[bytes]) -> Headers:
        """
        The request's headers, in rising precedence: the User-Agent, the
        push's protocol headers, the operator's static headers, then what
        only the gateway decides: the body's type and encoding, the tenant
        and the credentials.
        """
        headers = Headers()
        headers.setRawHeaders(b"user-agent", [USER_AGENT])
        for name, value in push.extra_headers.items():
            raw = name.encode("utf-8")
            if raw.lower() in _NOT_FROM_PUSH or raw.lower() == self._tenant_header.lower():
                continue
            headers.setRawHeaders(raw, [value.encode("utf-8")])
        for raw, value_bytes in self._static_headers:
            headers.setRawHeaders(raw, [value_bytes])
        headers.setRawHeaders(b"content-type", [push.content_type.encode("utf-8")])
        if push.content_encoding:
            headers.setRawHeaders(b"content-encoding", [push.content_encoding.encode("utf-8")])
        else:
            headers.removeHeader(b"content-encoding")
        if push.tenant is not None:
            headers.setRawHeaders(self._tenant_header, [push.tenant.encode("utf-8")])
        if authorization is not None:
            headers.setRawHeaders(b"authorization", [authorization])
        return headers

    async def _attempt(self, url: EncodedURL, headers: Headers, body: bytes) -> Outcome:
        began = self._reactor.seconds()
        label = "error"
        try:
            outcome = await self._exchange(url, headers, body)
            label = outcome.label
            return outcome
        except CancelledError:
            label = "cancelled"
            raise
        finally:
            self._metrics.observe(self.name, label, self._reactor.seconds() - began)

    async def _exchange(self, url: EncodedURL, headers: Headers, body: bytes) -> Outcome:
        timeouts = self.config.timeouts
        try:
            request = self._client.request(
                "POST", url, headers=headers, data=body,
                allow_redirects=False, unbuffered=True,
            )
            response: IResponse = await bounded(
                request, timeouts.response, self._reactor, "waiting for the response"
            )
        except CancelledError:
            raise
        except Exception as e:
            return failure_outcome(e)

        status = response.code
        response_body: Body
        if response.length == 0:
            response_body = Body(b"", truncated=False)
        else:
            finished, reader = read_body(response, self.config.max_response_body)
            try:
                response_body = await bounded(
                    finished, timeouts.body, self._reactor, "reading the response body"
                )
            except CancelledError:
                raise
            except Exception as e:
                # The status has arrived and decides the outcome; only the
                # text is lost.
                self._log.warn(
                    "{upstream}: answered {status} but its body could not be read: {why}",
                    upstream=self.name, status=status, why=describe(e),
                )
                response_body = Body(reader.partial(), truncated=True)
        return response_outcome(
            status, response.headers, response_body, self._reactor.seconds()
        )

