"""
Opening a tail's WebSocket to Loki: the same URL, TLS trust, static
headers, tenant header and outbound credentials as the upstream's HTTP
reads, with its connect timeout, and its answer mapped as any read's is
(L{sealgw.query._outcome}) when it does not switch protocols.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import attr
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from sealgw.credentials import ICredentials
from sealgw.http import CredentialsUnavailable, HeaderPolicy, bounded, describe, https_policy
from sealgw.query._outcome import ReadRefused, failure_refusal, read_verdict, refusal
from sealgw.query._tail import OpenTails, TailLimits, TailSession

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

    from sealgw.query._tail_websocket import UpstreamTailFactory, UpstreamTailProtocol

_log = Logger()


def websocket_url(http_url: str) -> str:
    """
    The C{ws://} or C{wss://} URL of an C{http(s)://} one.
    """
    scheme, sep, rest = http_url.partition("://")
    return {"http": "ws", "https": "wss"}[scheme.lower()] + sep + rest


@attr.frozen
class TailUpstream:
    """
    Where the Loki tails of the gateway go, and what they are held to.

    @ivar policy: the upstream's static headers and tenant header, as its
        HTTP client sends them.
    @ivar credentials: asked for an C{Authorization} before every tail.
    @ivar connect_timeout: bounds the TCP and TLS connection.
    @ivar handshake_timeout: bounds the upstream's answer to the upgrade
        (and the credentials): the read route's C{timeout}.
    @ivar open_tails: the tails open per identity, in this process.
    """

    reactor: Any = attr.field(eq=False)
    limits: TailLimits
    policy: HeaderPolicy = attr.field(eq=False)
    credentials: ICredentials = attr.field(eq=False)
    connect_timeout: float = 10.0
    handshake_timeout: float = 120.0
    trust_root: Optional[IOpenSSLTrustRoot] = attr.field(default=None, eq=False)
    open_tails: OpenTails = attr.field(eq=False, default=attr.Factory(
        lambda self: OpenTails(self.limits.max_per_identity), takes_self=True))

    def _endpoint(self, factory: UpstreamTailFactory) -> IStreamClientEndpoint:
        host: str = factory.host
        port: int = factory.port
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, host.encode("idna"), port, timeout=self.connect_timeout
        )
        if factory.isSecure:
            creator = https_policy(self.trust_root).creatorForNetloc(host.encode("idna"), port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint

    async def connect(
        self,
        url: str,
        tenant: Optional[str],
        headers: Mapping[str, str],
        session: TailSession,
    ) -> UpstreamTailProtocol:
        """
        Open the tail at C{url} (the upstream's C{http(s)} URL of the tail
        with the client's query string) as C{tenant}.

        @param headers: the client's headers that pass (see
            L{sealgw.query.forwarded_headers}).
        @raise ReadRefused: the status to answer the client with instead
            of upgrading: the upstream's 4xx as it came, 502 for a 5xx or
            an answer that is not a WebSocket, 503 when it cannot be
            reached or the credentials are not there, 504 when it is slow.
        """
        # Loaded at start-up by build_tail, where Loki reads are on: a
        # gateway that serves none never loads autobahn.
        from sealgw.query._tail_websocket import (
            TailHandshakeFailed,
            UpstreamTailFactory,
            UpstreamTailProtocol,
        )

        try:
            authorization = await self._authorization()
            composed = self.policy.compose(headers, None, None, tenant, authorization)
            factory = UpstreamTailFactory(
                websocket_url(url), _header_dict(composed), session, self.limits, self.reactor
            )
            protocol = await self._endpoint(factory).connect(factory)
            assert isinstance(protocol, UpstreamTailProtocol)
            opened: UpstreamTailProtocol = await bounded(
                protocol.opened,
                self.handshake_timeout,
                self.reactor,
                "waiting for the upstream's WebSocket handshake",
            )
            return opened
        except CancelledError:
            raise
        except TailHandshakeFailed as e:
            raise _handshake_refusal(e) from None
        except ReadRefused:
            raise
        except Exception as e:
            refused = failure_refusal(e, "loki")
            _log.warn(
                "read_loki_tail: loki upstream failed ({status}): {why}",
                status=refused.status, why=describe(e),
            )
            raise refused from None

    async def _authorization(self) -> Optional[bytes]:
        asked: Deferred[Optional[bytes]] = self.credentials.authorization()
        try:
            if asked.called:
                return await asked
            return await bounded(
                asked, self.handshake_timeout, self.reactor, "getting outbound credentials"
            )
        except CancelledError:
            raise
        except Exception as e:
            # Never the exception's text: a token endpoint's answer could
            # be in it.
            _log.error("read_loki_tail: no outbound credentials: {kind}",
                       kind=type(e).__name__)
            unavailable = CredentialsUnavailable("outbound credentials are not available")
            retry_after = getattr(e, "retry_after", None)
            if isinstance(retry_after, (int, float)):
                unavailable.retry_after = float(retry_after)
            raise unavailable from None


def _header_dict(headers: Headers) -> dict[str, str]:
    """
    Headers for autobahn's handshake, which writes the user agent itself.
    """
    out: dict[str, str] = {}
    for name, values in headers.getAllRawHeaders():
        if name.lower() == b"user-agent":
            continue
        out[name.decode("latin-1")] = b", ".join(values).decode("latin-1")
    return out


def _handshake_refusal(error: Any) -> ReadRefused:
    """
    What the client hears for a L{sealgw.query._tail_websocket.TailHandshakeFailed}.
    """
    status = error.status
    if status is None:
        _log.warn("read_loki_tail: the loki upstream's handshake failed: {why}", why=str(error))
        return ReadRefused(502, "bad answer from the loki upstream")
    verdict = read_verdict(status, Headers(), "loki")
    _log.warn(
        "read_loki_tail: loki upstream answered {upstream_status} to the upgrade; "
        "answering {status}",
        upstream_status=status, status=verdict.status if status >= 400 else 502,
    )
    if status < 400:
        return ReadRefused(502, f"the loki upstream answered {status} and did not open a WebSocket")
    # Its 4xx as it came, 429 and 503 with a Retry-After, other 5xx as 502.
    return refusal(verdict)
