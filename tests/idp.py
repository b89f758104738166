"""
Test doubles for sealgw.auth: a fake OpenID Connect identity provider served
by a real Twisted web server on 127.0.0.1, and small request fakes.

The identity provider issues real JWTs signed with freshly generated RS256
and ES256 keys, answers discovery, JWKS and userinfo (opaque tokens mapped to
claims), and can be taken down, brought back and made to rotate its keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from typing import Any, Optional

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.protocols.policies import WrappingFactory
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.test.requesthelper import DummyRequest

AUDIENCE = "sealgw"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        # No access log: it would only clutter the test log.
        pass


class _Endpoint(Resource):
    isLeaf = True

    def __init__(self, idp: FakeIdentityProvider, name: str) -> None:
        super().__init__()
        self.idp = idp
        self.name = name

    def render_GET(self, request: Any) -> Any:
        self.idp.requests[self.name] += 1
        return self.idp.answer(self.name, request)


class FakeIdentityProvider:
    """
    @ivar requests: how many times each endpoint (C{"discovery"}, C{"jwks"},
        C{"userinfo"}) was asked.
    @ivar opaque: opaque tokens the userinfo endpoint knows, with their claims.
    @ivar userinfo_hold: when set, userinfo answers wait until it fires.
    @ivar failing: endpoints that answer 500 instead.
    @ivar overrides: endpoints that answer a given status and body instead.
    """

    def __init__(self, reactor: Any = global_reactor) -> None:
        self.reactor = reactor
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"})
        self.published: list[Key] = [self.rsa, self.ec]
        self.opaque: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.userinfo_hold: Optional[Deferred[None]] = None
        self.failing: set[str] = set()
        self.overrides: dict[str, tuple[int, bytes]] = {}
        self.port: Any = None
        self.port_number = 0
        self._rotations = 0
        root = Resource()
        well_known = Resource()
        well_known.putChild(b"openid-configuration", _Endpoint(self, "discovery"))
        root.putChild(b".well-known", well_known)
        root.putChild(b"jwks", _Endpoint(self, "jwks"))
        root.putChild(b"userinfo", _Endpoint(self, "userinfo"))
        self.site = _QuietSite(root)
        self.site.noisy = False
        # Remembers its connections, so going down can drop the ones a
        # client keeps alive in its pool, as a crashed server would.
        self.factory = WrappingFactory(self.site)
        self.factory.noisy = False

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        self.port = self.reactor.listenTCP(
            self.port_number, self.factory, interface="127.0.0.1"
        )
        self.port_number = self.port.getHost().port

    async def go_down(self) -> None:
        """
        Stop listening and drop every open connection.
        """
        if self.port is not None:
            port, self.port = self.port, None
            await port.stopListening()
        for protocol in list(self.factory.protocols):
            protocol.transport.abortConnection()

    def come_up(self) -> None:
        self.start()

    async def stop(self) -> None:
        await self.go_down()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port_number}"

    # -- keys and tokens ---------------------------------------------------------

    def rotate(self) -> RSAKey:
        """
        Publish a new RSA key (and withdraw the old one); return it.
        """
        self._rotations += 1
        new = RSAKey.generate_key(
            2048, parameters={"kid": f"rsa-{self._rotations + 1}", "use": "sig"}
        )
        self.published = [k for k in self.published if k is not self.rsa] + [new]
        self.rsa = new
        return new

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "user-1",
            "email": "alice@example.com",
            "groups": ["team-a"],
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def issue(
        self,
        key: Optional[Key] = None,
        alg: Optional[str] = None,
        header: Optional[dict[str, Any]] = None,
        **claims: Any,
    ) -> str:
        """
        A signed JWT; by default RS256 with the current RSA key and good
        claims, any of which C{claims} may override (C{None} drops one).
        """
        key = key if key is not None else self.rsa
        if alg is None:
            alg = "ES256" if isinstance(key, ECKey) else "RS256"
        jose_header = {"alg": alg, "kid": key.kid}
        jose_header.update(header or {})
        jose_header = {k: v for k, v in jose_header.items() if v is not None}
        return jwt.encode(jose_header, self.claims(**claims), key, algorithms=[alg])

    def forge_none(self, **claims: Any) -> str:
        """
        An unsigned token (C{alg: none}) with good claims.
        """
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        payload = b64url(json.dumps(self.claims(**claims)).encode())
        return f"{header}.{payload}."

    def forge_hs256_with_public_key(self, **claims: Any) -> str:
        """
        The classic key-confusion forgery: HS256 with the issuer's public
        RSA key (as PEM) used as the HMAC secret.
        """
        header = b64url(
            json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.rsa.kid}).encode()
        )
        payload = b64url(json.dumps(self.claims(**claims)).encode())
        secret = self.rsa.as_pem(private=False)
        signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{b64url(signature)}"

    # -- answers --------------------------------------------------------------

    def answer(self, name: str, request: Any) -> Any:
        if name in self.failing:
            request.setResponseCode(500)
            return b"down for maintenance"
        if name in self.overrides:
            status, body = self.overrides[name]
            request.setResponseCode(status)
            return body
        if name == "discovery":
            return self._json(
                request,
                {
                    "issuer": self.issuer,
                    "jwks_uri": self.issuer + "/jwks",
                    "userinfo_endpoint": self.issuer + "/userinfo",
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                },
            )
        if name == "jwks":
            return self._json(
                request, {"keys": [k.as_dict(private=False) for k in self.published]}
            )
        if self.userinfo_hold is not None:
            gone: list[bool] = []
            request.notifyFinish().addErrback(lambda _: gone.append(True))
            self.userinfo_hold.addCallback(lambda _: self._finish_userinfo(request, gone))
            return NOT_DONE_YET
        return self._userinfo(request)

    def _finish_userinfo(self, request: Any, gone: list[bool]) -> None:
        if gone:
            # The client gave up (a timeout): nothing to answer.
            return
        request.write(self._userinfo(request))
        request.finish()

    def _userinfo(self, request: Any) -> bytes:
        values = request.requestHeaders.getRawHeaders(b"authorization") or [b""]
        scheme, _, token = values[0].decode("ascii").partition(" ")
        claims = self.opaque.get(token) if scheme.lower() == "bearer" else None
        if claims is None:
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", b'Bearer error="invalid_token"')
            return b'{"error": "invalid_token"}'
        return self._json(request, claims)

    def _json(self, request: Any, value: Any) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(value).encode()


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
