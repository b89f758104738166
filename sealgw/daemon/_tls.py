"""
Server-side TLS for listeners: certificate chains, the protocol versions
and cipher suites allowed, client-certificate verification (mTLS) when a
listener asks for it, and re-reading the files while the listener serves.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from sealgw.config import ConfigError, TLSConfig

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

FileSignature = Optional[tuple[int, int, int, int]]
"""(device, inode, size, mtime in ns), or L{None} for a file that is not there."""


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


def server_tls_options(tls: TLSConfig, alpn: tuple[bytes, ...] = ()) -> ssl.CertificateOptions:
    """
    Build the OpenSSL settings for one listener from its files.

    Reads the files once, here: certificates are loaded at start-up or on a
    reload, never on a request path.

    @raise ConfigError: when a file is missing, unreadable or does not match.
    """
    chain = _certificates(tls.certificate, "the certificate chain")
    try:
        key = ssl.KeyPair.load(_read(tls.key, "the private key"), crypto.FILETYPE_PEM)
    except crypto.Error:
        raise ConfigError([f"{tls.key}: not a valid PEM private key"]) from None
    leaf, intermediates = chain[0], chain[1:]
    try:
        ciphers = ssl.AcceptableCiphers.fromOpenSSLCipherString(tls.ciphers)
        options_kwargs: dict[str, Any] = dict(
            privateKey=key.original,
            certificate=leaf.original,
            extraCertChain=[c.original for c in intermediates],
            raiseMinimumTo=_VERSIONS[tls.min_version],
            acceptableCiphers=ciphers,
        )
        if alpn:
            options_kwargs["acceptableProtocols"] = list(alpn)
        if tls.client_certificates != "none" and tls.client_ca is not None:
            cas = _certificates(tls.client_ca, "the client CA")
            options_kwargs.update(
                verify=True,
                caCerts=[c.original for c in cas],
                requireCertificate=tls.client_certificates == "required",
            )
        options = ssl.CertificateOptions(**options_kwargs)
    except ValueError as e:
        # Twisted's "no usable ciphers": the config check should have caught it.
        raise ConfigError([f"ciphers {tls.ciphers!r}: {e}"]) from None
    try:
        # Build the context now so a key that does not match its
        # certificate is found at start-up, not on the first handshake.
        options.getContext()
    except (crypto.Error, SSL.Error) as e:
        raise ConfigError(
            [f"{tls.certificate}: the certificate and {tls.key} do not fit together ({e})"]
        ) from None
    return options


def _signature(path: str) -> FileSignature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _leaf(options: ssl.CertificateOptions) -> crypto.X509:
    cert = options.certificate
    assert cert is not None, "server_tls_options always sets a certificate"
    return cert


def _describe(cert: crypto.X509) -> str:
    """
    A certificate in a few words, for the log: which one is served.
    """
    subject = cert.get_subject().CN or "no common name"
    not_after = cert.to_cryptography().not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{subject!r}, valid until {not_after}"


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The TLS side of one listener: each new connection is set up from the
    settings in force when it arrives, and L{reload} swaps in settings read
    afresh from the files.

    Connections already open keep the settings they started with (OpenSSL
    counts the references to the old context), so rotating a certificate
    drops nothing; only new handshakes see the new certificate.

    @ivar last_error: why the latest reload failed, or L{None}.
    """

    log = Logger()

    def __init__(self, config: TLSConfig, alpn: tuple[bytes, ...] = ()) -> None:
        """
        @param alpn: the application protocols offered, C{h2} on a gRPC
            listener.
        @raise ConfigError: when the files cannot be used at start-up.
        """
        self.config = config
        self.alpn = alpn
        self._paths = tuple(p for p in (config.certificate, config.key, config.client_ca) if p)
        # Taken before reading: a file replaced while being read then looks
        # changed at the next check, and is read again.
        self._last_seen = self._signatures()
        self._options = server_tls_options(config, alpn)
        self.certificate = _leaf(self._options)
        """The leaf certificate new connections are offered."""
        self.last_error: Optional[str] = None
        self.reloads = 0
        self.failed_reloads = 0

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return self._options.serverConnectionForTLS(tlsProtocol)

    def _signatures(self) -> tuple[FileSignature, ...]:
        return tuple(_signature(p) for p in self._paths)

    def reload(self) -> bool:
        """
        Read the files again; on success new connections use them, otherwise
        the settings in force stay and the reason is logged.

        @return: whether the files just read are now in force.
        """
        seen = self._signatures()
        try:
            options = server_tls_options(self.config, self.alpn)
        except ConfigError as e:
            self._last_seen = seen
            self.failed_reloads += 1
            self.last_error = "; ".join(e.problems)
            self.log.error(
                "TLS certificate {certificate} not reloaded, the one loaded before "
                "({current}) stays in use: {problems}",
                certificate=self.config.certificate,
                current=_describe(self.certificate),
                problems=self.last_error,
            )
            return False
        self._last_seen = seen
        self._options = options
        self.certificate = _leaf(options)
        self.last_error = None
        self.reloads += 1
        self.log.info(
            "TLS certificate {certificate} loaded: {described}",
            certificate=self.config.certificate,
            described=_describe(self.certificate),
        )
        return True

    def check(self) -> None:
        """
        Reload when any of the files changed on disk (replaced, as
        cert-manager and ACME clients do, or rewritten).  Called by a timer,
        so it never raises: a raising call would stop the timer for good.
        """
        try:
            if self._signatures() != self._last_seen:
                self.reload()
        except Exception:
            self.log.failure(
                "checking TLS files {paths} failed", paths=", ".join(self._paths)
            )

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.last_error is None else "degraded",
            "certificate": self.config.certificate,
            "serving": _describe(self.certificate),
            "error": self.last_error,
        }
