"""
Certificate credentials: the PEM file with a certificate and its key, and
the client assertion signed with it (a JWT naming the certificate by its
SHA-1 thumbprint, C{x5t}, as Entra ID finds the registered one).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from typing import Optional

import attr
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey

#: How long a client assertion may be used: Entra ID takes up to an hour;
#: it is made afresh for every token request anyway.
ASSERTION_LIFETIME = 600

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@attr.frozen(repr=False)
class ClientCertificate:
    """
    A certificate and its RSA key, read once at start-up.

    @ivar thumbprint: the certificate's SHA-1 thumbprint, in hex, for
        messages (it is what the Azure portal shows).
    @ivar x5t: the same, base64url, for the assertion's header.
    """

    key: RSAKey
    thumbprint: str
    x5t: str
    path: str

    def __repr__(self) -> str:
        return f"<ClientCertificate {self.thumbprint} from {self.path}>"

    def assertion(
        self,
        client_id: str,
        audience: str,
        now: float,
        jti: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> str:
        """
        A client assertion for a token request to C{audience} (the token
        endpoint's URL).
        """
        issued = int(now)
        header = {"alg": "RS256", "typ": "JWT", "x5t": self.x5t}
        claims = {
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": jti(),
            "iat": issued,
            "nbf": issued,
            "exp": issued + ASSERTION_LIFETIME,
        }
        return jwt.encode(header, claims, self.key, algorithms=["RS256"])


def load_certificate(path: str, password: Optional[str] = None) -> ClientCertificate:
    """
    Read a PEM file holding a certificate and its (RSA) private key, as
    C{AZURE_CLIENT_CERTIFICATE_PATH} names one.

    @raise ValueError: saying what is wrong with the file, never quoting it.
    @raise OSError: when it cannot be read.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(
            f"{path}: no PEM certificate in it (PKCS#12 files are not read: convert with "
            "openssl pkcs12 -nodes)"
        ) from None
    try:
        key = serialization.load_pem_private_key(
            data, password.encode("utf-8") if password is not None else None
        )
    except TypeError:
        raise ValueError(
            f"{path}: the private key is encrypted and no password is given, or a "
            "password is given for a key that has none"
        ) from None
    except ValueError:
        raise ValueError(
            f"{path}: no usable PEM private key in it (or a wrong password)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: the private key is not RSA, which Entra ID needs here")
    public = key.public_key().public_numbers()
    for certificate in certificates:
        candidate = certificate.public_key()
        if isinstance(candidate, rsa.RSAPublicKey) and candidate.public_numbers() == public:
            der = certificate.public_bytes(serialization.Encoding.DER)
            sha1 = hashlib.sha1(der, usedforsecurity=False).digest()
            return ClientCertificate(
                key=RSAKey.import_key(key),
                thumbprint=sha1.hex().upper(),
                x5t=b64url(sha1),
                path=path,
            )
    raise ValueError(f"{path}: no certificate in it matches its private key")
