"""
An OpenID Connect identity provider in memory: discovery, JWKS and
userinfo answered through a L{MemoryHTTPClient}, tokens signed with real
keys, every time taken from the clock it is given.  Lets OIDC be tested
on a C{Clock}: cache expiry, key refresh and an issuer going down, with
no sockets and no waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable
from typing import Any, Optional
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorTime

from sealgw.testing._http import Answer, MemoryHTTPClient, MemoryResponse, SentRequest

#: The audience tokens are issued for unless told otherwise.
AUDIENCE = "sealgw"

DISCOVERY_PATH = "/.well-known/openid-configuration"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_keys() -> tuple[RSAKey, ECKey]:
    """
    A fresh RS256 and ES256 signing key (C{rsa-1}, C{ec-1}).  RSA key
    generation takes tens of milliseconds: tests can make one pair and
    share it.
    """
    return (
        RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"}),
        ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"}),
    )


class MemoryIdentityProvider:
    """
    @ivar requests: how many times each endpoint (C{"discovery"}, C{"jwks"},
        C{"userinfo"}) was asked.
    @ivar opaque: opaque tokens the userinfo endpoint knows, with their claims.
    @ivar down: every request fails as if the issuer refused connections.
    @ivar failing: endpoints that answer 500 instead.
    @ivar overrides: endpoints that answer a given status and body instead.
    @ivar userinfo_hold: when set, userinfo answers wait until it fires.
    @ivar jwks_hold: when set, JWKS answers wait until it fires: a slow
        issuer, or one that rotates its keys while a fetch is on its way
        (the answer is the JWKS as it was when asked).
    """

    def __init__(
        self,
        clock: IReactorTime,
        issuer: str = "https://idp.example.com",
        keys: Optional[tuple[RSAKey, ECKey]] = None,
    ) -> None:
        self.clock = clock
        self.issuer = issuer
        self.rsa, self.ec = keys if keys is not None else generate_keys()
        self.published: list[Key] = [self.rsa, self.ec]
        self.opaque: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.down = False
        self.failing: set[str] = set()
        self.overrides: dict[str, tuple[int, bytes]] = {}
        self.userinfo_hold: Optional[Deferred[None]] = None
        self.jwks_hold: Optional[Deferred[None]] = None
        self._rotations = 0

    def client(self) -> MemoryHTTPClient:
        """
        An HTTP client whose every request this provider answers.
        """
        return MemoryHTTPClient(self._handle, name=f"identity provider {self.issuer}")

    # -- keys and tokens -------------------------------------------------

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
        """
        Good claims for C{alice@example.com} in C{team-a}, valid for five
        minutes from the clock's now; C{overrides} replace them (C{None}
        drops one).
        """
        now = int(self.clock.seconds())
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
        A signed JWT; by default RS256 with the current RSA key (ES256 with
        an EC key, EdDSA with an OKP one) and good claims, any of which
        C{claims} may override (C{None} drops one).
        """
        key = key if key is not None else self.rsa
        if alg is None:
            alg = (
                "ES256" if isinstance(key, ECKey) else "EdDSA" if isinstance(key, OKPKey)
                else "RS256"
            )
        jose_header: dict[str, Any] = {"alg": alg, "kid": key.kid}
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

    # -- answers -----------------------------------------------------------

    def endpoint(self, path: str) -> Optional[str]:
        """
        Which endpoint C{path} is, if any.
        """
        base = urlsplit(self.issuer).path.rstrip("/")
        return {
            base + DISCOVERY_PATH: "discovery",
            base + "/jwks": "jwks",
            base + "/userinfo": "userinfo",
        }.get(path)

    def respond(
        self, endpoint: str, authorization: Optional[str]
    ) -> tuple[int, dict[str, str], bytes]:
        """
        The status, headers and body C{endpoint} answers.
        """
        if endpoint in self.failing:
            return 500, {}, b"down for maintenance"
        if endpoint in self.overrides:
            status, body = self.overrides[endpoint]
            return status, {}, body
        if endpoint == "discovery":
            return _json({
                "issuer": self.issuer,
                "jwks_uri": self.issuer + "/jwks",
                "userinfo_endpoint": self.issuer + "/userinfo",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            })
        if endpoint == "jwks":
            return _json({"keys": [k.as_dict(private=False) for k in self.published]})
        scheme, _, token = (authorization or "").partition(" ")
        claims = self.opaque.get(token) if scheme.lower() == "bearer" else None
        if claims is None:
            return 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, (
                b'{"error": "invalid_token"}'
            )
        return _json(claims)

    def _handle(self, request: SentRequest) -> Answer:
        if self.down:
            return ConnectionRefusedError("the identity provider is down")
        endpoint = self.endpoint(urlsplit(request.url).path)
        if endpoint is None:
            return MemoryResponse(404, b"not found")
        self.requests[endpoint] += 1
        authorization = request.header("Authorization")
        if endpoint == "userinfo" and self.userinfo_hold is not None:
            return self._held(self.userinfo_hold, lambda: self._answer(endpoint, authorization))
        if endpoint == "jwks" and self.jwks_hold is not None:
            answer = self._answer(endpoint, authorization)
            return self._held(self.jwks_hold, lambda: answer)
        return self._answer(endpoint, authorization)

    def _held(
        self, hold: Deferred[None], answer: Callable[[], MemoryResponse]
    ) -> Deferred[MemoryResponse]:
        # One Deferred per request, so a caller giving up on one does not
        # cancel the hold for the others.
        held: Deferred[MemoryResponse] = Deferred()

        def release(result: Any) -> Any:
            if not held.called:
                held.callback(answer())
            return result

        hold.addCallback(release)
        return held

    def _answer(self, endpoint: str, authorization: Optional[str]) -> MemoryResponse:
        status, headers, body = self.respond(endpoint, authorization)
        return MemoryResponse(status, body, headers)


def _json(value: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()

