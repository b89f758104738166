"""
Fakes of Azure's side for the Entra ID tests, as Twisted web resources to
serve on loopback (L{tests.e2e_support.serve}): the v2 token endpoint
(numbers in its answers), the instance metadata service and App Service's
identity endpoint (strings in theirs), and an Azure Monitor workspace that
accepts only the token the fake Entra ID issued last.

They answer in the exact formats of PROTOCOLS.md section 7; no test here.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import attr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from twisted.web.resource import Resource
from twisted.web.server import Request

from sealgw.credentials.azure._assertion import CLIENT_ASSERTION_TYPE, b64url

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "5e1a9b4c-0000-4000-8000-00000000c11e"
SECRET = "s3cret-value-never-logged"
WRONG_SECRET = "not-the-secret"

INVALID_SECRET = (
    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
    "request is the client secret value, not the client secret ID, for a secret added to "
    f"app '{CLIENT}'.\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2025-09-07 "
    "15:00:15Z"
)


def _json(request: Request, status: int, document: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(document).encode("utf-8")


def _aad_error(request: Request, status: int, error: str, description: str) -> bytes:
    return _json(request, status, {
        "error": error,
        "error_description": description,
        "error_codes": [int(description[6:description.index(":")])],
        "trace_id": "0000",
        "correlation_id": "1111",
    })


@attr.define
class IssuedToken:
    value: str
    scope: str
    client_id: str


_counter = itertools.count(1)


def new_token(prefix: str) -> str:
    # Shaped like a JWT: three base64url parts.
    return f"{prefix}{next(_counter)}.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


class FakeEntraID(Resource):
    """
    The v2 token endpoint, C{POST /<tenant>/oauth2/v2.0/token}, for the
    client credentials grant with a secret, a certificate's client
    assertion (signature, C{x5t}, C{aud}, C{iss}, C{sub} and C{exp}
    checked) or a federated token.

    @ivar url: the base URL it is served at, set by the test (the
        assertion's audience is checked against it).
    @ivar forms: every token request's form, in order.
    @ivar failing: when set, every request is answered with this status.
    """

    isLeaf = True

    def __init__(self, tenant: str = TENANT, lifetime: int = 3599) -> None:
        super().__init__()
        self.tenant = tenant
        self.lifetime = lifetime
        self.url = ""
        self.secrets: dict[str, str] = {}
        self.certificates: dict[str, tuple[RSAKey, str]] = {}
        self.federated: dict[str, str] = {}
        self.forms: list[dict[str, str]] = []
        self.issued: list[IssuedToken] = []
        self.failing: Optional[int] = None
        self.refresh_in: Optional[int] = None

    @property
    def current(self) -> Optional[str]:
        return self.issued[-1].value if self.issued else None

    def render_POST(self, request: Request) -> bytes:
        path = request.path.decode()
        if path != f"/{self.tenant}/oauth2/v2.0/token":
            return _aad_error(
                request, 400, "invalid_request",
                f"AADSTS90002: Tenant '{path.split('/')[1]}' not found.",
            )
        assert request.content is not None
        if request.getHeader(b"content-type") != b"application/x-www-form-urlencoded":
            return _aad_error(request, 400, "invalid_request", "AADSTS900144: no form body.")
        form = {k: v[0] for k, v in parse_qs(request.content.read().decode()).items()}
        self.forms.append(form)
        if self.failing is not None:
            return _aad_error(
                request, self.failing, "temporarily_unavailable",
                "AADSTS50196: The server terminated an operation.",
            )
        if form.get("grant_type") != "client_credentials" or not form.get(
            "scope", ""
        ).endswith("/.default"):
            return _aad_error(request, 400, "invalid_request", "AADSTS90014: bad grant.")
        client = form.get("client_id", "")
        refusal = self._check_client(client, form, self.url + path)
        if refusal is not None:
            return _aad_error(request, 401, "invalid_client", refusal)
        token = IssuedToken(new_token("entra-"), form["scope"], client)
        self.issued.append(token)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime,
            "access_token": token.value,
        }
        if self.refresh_in is not None:
            answer["refresh_in"] = self.refresh_in
        return _json(request, 200, answer)

    def _check_client(self, client: str, form: dict[str, str], audience: str) -> Optional[str]:
        if "client_secret" in form:
            if self.secrets.get(client) != form["client_secret"]:
                return INVALID_SECRET
            return None
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            return "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required."
        assertion = form.get("client_assertion", "")
        if client in self.certificates:
            key, x5t = self.certificates[client]
            try:
                token = jwt.decode(assertion, key, algorithms=["RS256"])
            except JoseError:
                return "AADSTS700027: Client assertion contains an invalid signature."
            claims, header = token.claims, token.header
            if header.get("x5t") != x5t:
                return "AADSTS700027: The certificate with identifier used to sign the client "\
                    "assertion is not registered on application."
            if claims.get("aud") != audience:
                return f"AADSTS700016: wrong audience {claims.get('aud')!r}."
            if claims.get("iss") != client or claims.get("sub") != client:
                return "AADSTS700023: wrong issuer or subject."
            if not claims.get("exp", 0) > time.time() >= claims.get("nbf", 0) - 300:
                return "AADSTS700024: Client assertion is not within its valid time range."
            return None
        if client in self.federated:
            if assertion != self.federated[client]:
                return "AADSTS700024: Client assertion is not within its valid time range."
            return None
        return f"AADSTS700016: Application with identifier '{client}' was not found."


class FakeIMDS(Resource):
    """
    The instance metadata service's token endpoint: C{GET
    /metadata/identity/oauth2/token} with C{Metadata: true}; every value in
    its answer is a string.

    @ivar identities: the client ids of the user-assigned identities it
        has, and L{None} for a system-assigned one.
    """

    isLeaf = True

    def __init__(self, identities: tuple[Optional[str], ...] = (None,)) -> None:
        super().__init__()
        self.identities = set(identities)
        self.queries: list[dict[str, str]] = []
        self.issued: list[IssuedToken] = []

    @property
    def current(self) -> Optional[str]:
        return self.issued[-1].value if self.issued else None

    def render_GET(self, request: Request) -> bytes:
        if request.path != b"/metadata/identity/oauth2/token":
            return _json(request, 404, {"error": "not_found"})
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.uri.decode()).query).items()}
        self.queries.append(query)
        if request.getHeader(b"metadata") != b"true":
            return _json(request, 400, {
                "error": "invalid_request",
                "error_description": "Required metadata header not specified",
            })
        if query.get("api-version") != "2018-02-01" or "resource" not in query:
            return _json(request, 400, {"error": "invalid_request",
                                        "error_description": "bad query"})
        client = query.get("client_id")
        if client not in self.identities:
            return _json(request, 400, {"error": "invalid_request",
                                        "error_description": "Identity not found"})
        token = IssuedToken(new_token("imds-"), query["resource"], client or "system")
        self.issued.append(token)
        now = int(time.time())
        return _json(request, 200, {
            "access_token": token.value,
            "client_id": client or "00000000-0000-0000-0000-000000000000",
            "expires_in": "3599",
            "expires_on": str(now + 3599),
            "ext_expires_in": "3599",
            "not_before": str(now),
            "resource": query["resource"],
            "token_type": "Bearer",
        })


class FakeAppService(Resource):
    """
    App Service's identity endpoint (C{IDENTITY_ENDPOINT}): C{GET} with
    C{X-IDENTITY-HEADER}; answers with C{expires_on} only, a string.
    """

    isLeaf = True

    def __init__(self, header: str) -> None:
        super().__init__()
        self.header = header
        self.issued: list[IssuedToken] = []

    def render_GET(self, request: Request) -> bytes:
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.uri.decode()).query).items()}
        if request.getHeader(b"x-identity-header") != self.header.encode():
            return _json(request, 401, {"statusCode": 401, "message": "Unauthorized"})
        if query.get("api-version") != "2019-08-01":
            return _json(request, 400, {"statusCode": 400, "message": "bad api-version"})
        token = IssuedToken(new_token("appservice-"), query["resource"], query.get("client_id", ""))
        self.issued.append(token)
        return _json(request, 200, {
            "access_token": token.value,
            "expires_on": str(int(time.time()) + 3600),
            "resource": query["resource"],
            "token_type": "Bearer",
            "client_id": query.get("client_id", "system"),
        })


@attr.define
class WorkspaceRequest:
    method: str
    uri: str
    authorization: Optional[str]
    content_type: Optional[str]
    body: bytes


class FakeWorkspace(Resource):
    """
    An Azure Monitor workspace: its Prometheus query API and its
    ingestion endpoint (remote write), accepting only a token
    C{accepts} says is current; anything else is 401.
    """

    isLeaf = True

    def __init__(self, accepts: Callable[[str], bool]) -> None:
        super().__init__()
        self.accepts = accepts
        self.received: list[WorkspaceRequest] = []

    def render(self, request: Request) -> bytes:
        assert request.content is not None
        authorization = request.getHeader(b"authorization")
        content_type = request.getHeader(b"content-type")
        self.received.append(WorkspaceRequest(
            request.method.decode(),
            request.uri.decode(),
            authorization.decode() if authorization else None,
            content_type.decode() if content_type else None,
            request.content.read(),
        ))
        token = authorization.decode()[len("Bearer "):] if authorization else ""
        if not authorization or not authorization.startswith(b"Bearer ") or not self.accepts(
            token
        ):
            request.setHeader(b"www-authenticate", b'Bearer error="invalid_token"')
            return _json(request, 401, {"error": {"code": "InvalidAuthenticationToken"}})
        if request.path.endswith(b"/api/v1/write"):
            request.setResponseCode(200)
            return b""
        return _json(request, 200, {
            "status": "success",
            "data": {"resultType": "vector",
                     "result": [{"metric": {"__name__": "up"}, "value": [1757257215, "1"]}]},
        })


def rsa_certificate(common_name: str = "sealgw-test") -> tuple[bytes, RSAKey, str]:
    """
    A self-signed RSA certificate and its key, as one PEM file's content,
    with the public key (for the fake to verify with) and the
    certificate's x5t.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    x5t = b64url(hashlib.sha1(der, usedforsecurity=False).digest())
    return pem, RSAKey.import_key(key.public_key()), x5t


def ec_certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
