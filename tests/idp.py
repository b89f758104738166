"""
Test doubles for sealgw.auth: L{sealgw.testing.MemoryIdentityProvider}
served by a real Twisted web server on 127.0.0.1 (plain or TLS), for the
few tests that must cross a real socket, and small request fakes.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import PrivateCertificate
from twisted.protocols.policies import WrappingFactory
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from sealgw.testing import AUDIENCE, MemoryIdentityProvider, b64url

__all__ = ["AUDIENCE", "FakeIdentityProvider", "admit", "b64url", "fake_request", "make_gate"]


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        # No access log: it would only clutter the test log.
        pass


class _Endpoints(Resource):
    isLeaf = True

    def __init__(self, idp: FakeIdentityProvider) -> None:
        super().__init__()
        self.idp = idp

    def render_GET(self, request: Any) -> bytes:
        endpoint = self.idp.endpoint(request.path.decode("ascii"))
        if endpoint is None:
            request.setResponseCode(404)
            return b"not found"
        self.idp.requests[endpoint] += 1
        authorization = request.getHeader(b"authorization")
        status, headers, body = self.idp.respond(
            endpoint, authorization.decode("ascii") if authorization else None
        )
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        return body


class FakeIdentityProvider(MemoryIdentityProvider):
    """
    The in-memory identity provider, listening on 127.0.0.1.

    @param tls: the server's PEM certificate and key, to serve https.
    """

    def __init__(self, reactor: Any = global_reactor, tls: Optional[bytes] = None) -> None:
        super().__init__(reactor, issuer="")
        self.reactor = reactor
        self.port: Any = None
        self._tls = tls
        # Remembers its connections, so stopping drops the ones a client
        # keeps alive in its pool.
        site = _QuietSite(_Endpoints(self))
        site.noisy = False
        self.factory = WrappingFactory(site)
        self.factory.noisy = False

    def start(self) -> None:
        if self._tls is None:
            self.port = self.reactor.listenTCP(0, self.factory, interface="127.0.0.1")
            scheme = "http"
        else:
            options = PrivateCertificate.loadPEM(self._tls).options()
            self.port = self.reactor.listenSSL(0, self.factory, options, interface="127.0.0.1")
            scheme = "https"
        self.issuer = f"{scheme}://127.0.0.1:{self.port.getHost().port}"

    async def stop(self) -> None:
        """
        Stop listening and drop every open connection.
        """
        if self.port is not None:
            port, self.port = self.port, None
            await port.stopListening()
        for protocol in list(self.factory.protocols):
            protocol.transport.abortConnection()


# -- request doubles ----------------------------------------------------------


class FakeTLSTransport:
    """
    Stands in for a TLS transport: it hands out a peer certificate the way
    TLSMemoryBIOProtocol does.
    """

    def __init__(self, certificate: Any) -> None:
        self.certificate = certificate

    def getPeerCertificate(self) -> Any:
        return self.certificate


class _Channel:
    def __init__(self, transport: Any) -> None:
        self.transport = transport


def fake_request(
    token: Optional[str] = None,
    tenant: Optional[str] = None,
    headers: Optional[dict[bytes, list[bytes]]] = None,
    certificate: Any = None,
    tenant_header: bytes = b"X-Scope-OrgID",
) -> DummyRequest:
    """
    A request with a bearer token, a tenant header and, optionally, a TLS
    peer certificate.
    """
    request = DummyRequest([b"api", b"v1", b"push"])
    request.method = b"POST"
    request.requestHeaders = Headers()
    if token is not None:
        request.requestHeaders.setRawHeaders(b"Authorization", [f"Bearer {token}".encode()])
    if tenant is not None:
        request.requestHeaders.setRawHeaders(tenant_header, [tenant.encode()])
    for name, values in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, values)
    if certificate is not None:
        request.channel = _Channel(FakeTLSTransport(certificate))
    return request


def make_gate(clock: Any = None, registry: Any = None, **config: Any) -> Any:
    """
    A gate over a configuration with no listeners; keyword arguments are
    L{sealgw.config.Config} fields (C{auth}, C{tenancy}, C{development_token}).
    """
    from prometheus_client import CollectorRegistry
    from twisted.internet.task import Clock

    from sealgw.auth import build_gate
    from sealgw.config import Config

    return build_gate(
        Config(source="test.yaml", listeners=(), **config),
        clock if clock is not None else Clock(),
        registry if registry is not None else CollectorRegistry(),
    )


def admit(
    gate: Any,
    request: Any,
    route: str = "remote_write",
    body_size: int = 0,
    federation: bool = False,
) -> Deferred[Any]:
    return Deferred.fromCoroutine(
        gate.admit(request, route=route, body_size=body_size, federation=federation)
    )
