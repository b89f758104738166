"""
Trust roots for outbound TLS: the CA certificates an operator names, read
once at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.web.client import BrowserLikePolicyForHTTPS

if TYPE_CHECKING:
    # Twisted does not export the interface, only its implementations.
    from twisted.internet._sslverify import IOpenSSLTrustRoot


def load_trust_root(ca_file: str) -> IOpenSSLTrustRoot:
    """
    A trust root made of I{every} certificate in the PEM file C{ca_file}:
    a bundle may hold a root and its intermediates, and a server that
    sends only its own certificate verifies only when the store has the
    whole chain.  Read now (at start-up), never per connection.

    @raise OSError: when the file cannot be read.
    @raise ValueError: naming the file when it holds no certificate or a
        broken one.
    """
    with open(ca_file, "rb") as f:
        data = f.read()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"{ca_file}: no PEM certificate found")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{ca_file}: not a valid PEM certificate") from None
    return trustRootFromCertificates(
        [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
    )


def https_policy(trust_root: Optional[IOpenSSLTrustRoot] = None) -> BrowserLikePolicyForHTTPS:
    """
    Verify servers as a browser does (the name in the URL must be in the
    certificate), against C{trust_root} or the system's CAs.
    """
    return BrowserLikePolicyForHTTPS(trustRoot=trust_root)
