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
from typing import Any, Optional, Protocol
from urllib.parse import urlsplit, urlunsplit

import attr
from OpenSSL import SSL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from sealgw._version import __version__
from sealgw.config import HTTPUpstreamConfig
from sealgw.relay._body import Body, read_body
from sealgw.relay._credentials import credentials_for
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
from sealgw.relay._retry import RandomSource, next_retry, parse_retry_after
from sealgw.relay._timeout import OperationTimedOut, bounded

try:
    from service_identity import VerificationError
except ImportError:  # pragma: no cover - service_identity ships with the venv
    VerificationError = SSL.Error  # type: ignore[misc,assignment]

USER_AGENT = f"sealgw/{__version__}".encode("ascii")

#: The longest upstream text carried into an error's C{reason}.
MAX_REASON = 1024

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

#: Upstream statuses that mean "the upstream refused *our* credentials".
#: The client authenticated fine with the gateway; answering it 401/403
#: would tell it its own token is bad, and senders never retry those, so
#: every push until an operator fixes the gateway would be lost.
_CREDENTIAL_STATUSES = frozenset({401, 403, 407})

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class HTTPClientLike(Protocol):
    """
    The part of C{treq.client.HTTPClient} (and C{treq.testing.StubTreq})
    used here; tests pass fakes.
    """

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...


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


def _reason(body: bytes, fallback: str) -> str:
    text = body[: MAX_REASON * 4].decode("utf-8", errors="replace").strip()
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + "..."
    return text or fallback


def _flat_headers(headers: Headers) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): values[-1].decode("latin-1")
        for name, values in headers.getAllRawHeaders()
        if values
    }


def _inner_failures(exc: BaseException) -> list[Failure]:
    reasons = getattr(exc, "reasons", None)
    return list(reasons) if isinstance(reasons, list) else []


def _describe(exc: BaseException) -> str:
    """
    A one-line description; Twisted's wrapper exceptions otherwise print
    as a list of Failure reprs.
    """
    inner = _inner_failures(exc)
    if inner:
        return "; ".join(f.getErrorMessage() or f.type.__name__ for f in inner)
    return str(exc) or type(exc).__name__


@attr.frozen
class _Outcome:
    """
    How one attempt ended.

    @ivar label: the C{status} label for metrics.
    @ivar retry_reason: why another attempt may help (a metrics label), or
        C{None} when this outcome is final.
    """

    label: str
    delivery: Optional[Delivery] = None
    error: Optional[UpstreamRejected | UpstreamUnavailable] = None
    retry_reason: Optional[str] = None


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
        pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
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
        return HTTPClient(agent, cookiejar=no_cookies, data_to_body_producer=_BytesProducer)

    def __repr__(self) -> str:
        return f"<HTTPUpstream {self.name!r} {self.config.url!r}>"

    def close(self) -> Deferred[None]:
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    def deliver(self, push: Push) -> Deferred[Delivery]:
        return Deferred.fromCoroutine(self._deliver(push))

    async def _deliver(self, push: Push) -> Delivery:
        started = push.received_at or self._reactor.seconds()
        url = join_url(self.config.url, push.path)
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
                self._log.warn(
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

    async def _attempt(self, url: str, headers: Headers, body: bytes) -> _Outcome:
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

    async def _exchange(self, url: str, headers: Headers, body: bytes) -> _Outcome:
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
            return _failure_outcome(e)

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
                    upstream=self.name, status=status, why=_describe(e),
                )
                response_body = Body(reader.partial(), truncated=True)
        return self._response_outcome(status, response.headers, response_body)

    def _response_outcome(self, status: int, headers: Headers, body: Body) -> _Outcome:
        label = str(status)
        if 200 <= status < 300:
            return _Outcome(
                label,
                delivery=Delivery(
                    status=status,
                    headers=_flat_headers(headers),
                    body=body.data,
                    attempts=1,
                    body_truncated=body.truncated,
                ),
            )
        reason = _reason(body.data, f"upstream answered {status}")
        if status == 429 or status == 503:
            retry_after = parse_retry_after(
                (headers.getRawHeaders(b"retry-after") or [None])[-1], self._reactor.seconds()
            )
            reason_label = "429" if status == 429 else "5xx"
            return _Outcome(
                label, error=UpstreamUnavailable(status, reason, retry_after),
                retry_reason=reason_label,
            )
        if status == 408:
            # The upstream gave up waiting for our request: a timeout, not
            # a verdict on the data.  Senders drop pushes answered 408.
            return _Outcome(
                label, error=UpstreamUnavailable(504, f"upstream answered 408: {reason}"),
                retry_reason="timeout",
            )
        if status in _CREDENTIAL_STATUSES:
            return _Outcome(
                label,
                error=UpstreamUnavailable(
                    502, f"upstream refused the gateway's credentials ({status}): {reason}"
                ),
            )
        if 400 <= status < 500:
            return _Outcome(label, error=UpstreamRejected(status, reason))
        if 500 <= status < 600:
            return _Outcome(
                label, error=UpstreamUnavailable(502, f"upstream answered {status}: {reason}"),
                retry_reason="5xx",
            )
        # 1xx leftovers, redirects (not followed: a push must not be
        # re-sent somewhere the configuration does not name), nonsense.
        return _Outcome(
            label, error=UpstreamUnavailable(502, f"unexpected answer {status} from upstream")
        )


def _is_tls_failure(exc: BaseException) -> bool:
    if isinstance(exc, (SSL.Error, VerificationError)):
        return True
    return any(f.check(SSL.Error, VerificationError) for f in _inner_failures(exc))


def _failure_outcome(exc: Exception) -> _Outcome:
    """
    Classify a request that ended without a status.
    """
    if isinstance(
        exc,
        (OperationTimedOut, DeferredTimeoutError, ierror.TimeoutError, ierror.TCPTimedOutError),
    ):
        return _Outcome(
            "timeout",
            error=UpstreamUnavailable(504, f"upstream timed out: {_describe(exc)}"),
            retry_reason="timeout",
        )
    if _is_tls_failure(exc):
        # A certificate that does not verify will not verify next time.
        return _Outcome(
            "tls_error",
            error=UpstreamUnavailable(502, f"TLS with upstream failed: {_describe(exc)}"),
        )
    if isinstance(
        exc,
        (ierror.ConnectError, ierror.DNSLookupError, ierror.ConnectingCancelledError,
         ResponseNeverReceived, RequestTransmissionFailed, ierror.ConnectionClosed),
    ):
        return _Outcome(
            "connection_error",
            error=UpstreamUnavailable(503, f"cannot reach upstream: {_describe(exc)}"),
            retry_reason="connection_error",
        )
    if isinstance(exc, ResponseFailed):
        # The connection broke, or the answer was not HTTP, after the
        # upstream started answering.
        return _Outcome(
            "connection_error",
            error=UpstreamUnavailable(502, f"bad answer from upstream: {_describe(exc)}"),
            retry_reason="connection_error",
        )
    if isinstance(exc, RequestGenerationFailed):
        return _Outcome(
            "error", error=UpstreamUnavailable(502, f"could not send the request: {_describe(exc)}")
        )
    HTTPUpstream._log.failure(
        "unexpected failure talking to an upstream", failure=Failure(exc)
    )
    return _Outcome(
        "error", error=UpstreamUnavailable(502, f"upstream request failed: {_describe(exc)}")
    )
