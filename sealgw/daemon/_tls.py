"""
Server-side TLS for listeners: certificate chains, TLS 1.2 as the floor,
and client-certificate verification (mTLS) when a listener asks for it.
"""

from __future__ import annotations

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator

from sealgw.config import ConfigError, TLSConfig


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read {what}: {e.strerror}"]) from None


def _certificates(path: str, what: str) -> list[ssl.Certificate]:
    """
    Every certificate in a PEM file, in order: a chain file holds the leaf
    first, then its intermediates.
    """
    data = _read(path, what)
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    if not blocks:
        raise ConfigError([f"{path}: no PEM certificate found in {what}"])
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except crypto.Error:
        raise ConfigError([f"{path}: {what} is not a valid PEM certificate"]) from None


def server_tls_options(tls: TLSConfig) -> IOpenSSLServerConnectionCreator:
    """
    Build the OpenSSL context factory for one listener.

    Reads the files once, here: certificates are loaded at start-up, never
    on a request path.

    @raise ConfigError: when a file is missing, unreadable or does not match.
    """
    chain = _certificates(tls.certificate, "the certificate chain")
    try:
        key = ssl.KeyPair.load(_read(tls.key, "the private key"), crypto.FILETYPE_PEM)
    except crypto.Error:
        raise ConfigError([f"{tls.key}: not a valid PEM private key"]) from None
    leaf, intermediates = chain[0], chain[1:]
    try:
        options_kwargs: dict = dict(
            privateKey=key.original,
            certificate=leaf.original,
            extraCertChain=[c.original for c in intermediates],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
        if tls.client_certificates != "none" and tls.client_ca is not None:
            cas = _certificates(tls.client_ca, "the client CA")
            options_kwargs.update(
                verify=True,
                caCerts=[c.original for c in cas],
                requireCertificate=tls.client_certificates == "required",
            )
        options = ssl.CertificateOptions(**options_kwargs)
        # Build the context now so a key that does not match its
        # certificate is found at start-up, not on the first handshake.
        options.getContext()
    except (crypto.Error, SSL.Error) as e:
        raise ConfigError(
            [f"{tls.certificate}: the certificate and {tls.key} do not fit together ({e})"]
        ) from None
    return options
