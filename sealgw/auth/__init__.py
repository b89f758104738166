"""
Inbound identity: every request but health and metrics is authenticated,
and its tenant is decided from the identity, never taken on trust.

Credentials are an C{Authorization: Bearer} token, the token as the
password of C{Authorization: Basic} (unless C{auth.basic} is off), or a
verified client certificate.

The web layer codes against L{Gate}: C{await gate.admit(request, ...)}
before relaying, C{admission.release()} when the request ends, and an
L{AuthError}'s C{status}, C{headers} and C{message} for the answer.
"""

from sealgw.auth._anonymous import listener_identity
from sealgw.auth._basic import BasicToken, BasicTokenCredentialFactory, IBasicToken
from sealgw.auth._bearer import BearerCredentialFactory, BearerToken, IBearerToken
from sealgw.auth._clientcert import (
    ClientCertificate,
    ClientCertificateChecker,
    IClientCertificate,
    peer_certificate,
)
from sealgw.auth._development import DevelopmentTokenChecker
from sealgw.auth._gate import Gate, build_gate
from sealgw.auth._identity import (
    Admission,
    AuthError,
    BadTenant,
    Forbidden,
    Identity,
    IdentityProviderUnavailable,
    IIdentity,
    Principal,
    RateLimited,
    Unauthorized,
)
from sealgw.auth._oidc import OIDCChecker, OIDCProvider
from sealgw.auth._realm import IdentityRealm
from sealgw.auth._tokenfile import TokenFile, TokenFileChecker, hash_token_main
from sealgw.auth._userinfo import UserinfoCache

__all__ = [
    "Admission",
    "AuthError",
    "BadTenant",
    "BasicToken",
    "BasicTokenCredentialFactory",
    "BearerCredentialFactory",
    "BearerToken",
    "ClientCertificate",
    "ClientCertificateChecker",
    "DevelopmentTokenChecker",
    "Forbidden",
    "Gate",
    "IBasicToken",
    "IBearerToken",
    "IClientCertificate",
    "IIdentity",
    "Identity",
    "IdentityProviderUnavailable",
    "IdentityRealm",
    "OIDCChecker",
    "OIDCProvider",
    "Principal",
    "RateLimited",
    "TokenFile",
    "TokenFileChecker",
    "Unauthorized",
    "UserinfoCache",
    "build_gate",
    "hash_token_main",
    "listener_identity",
    "peer_certificate",
]
