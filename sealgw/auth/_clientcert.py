"""
Client certificates from an mTLS listener: the certificate's name becomes
the identity, its tenants come from the configuration.
"""

from __future__ import annotations

from typing import Any, Optional

import attr
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import ISSLTransport
from zope.interface import Attribute, implementer

from sealgw.auth._identity import Forbidden, Principal
from sealgw.config import ClientCertConfig


class IClientCertificate(ICredentials):
    """
    A certificate the TLS layer verified against the listener's client CA.
    """

    certificate = Attribute("A L{cryptography.x509.Certificate}.")


@implementer(IClientCertificate)
@attr.frozen
class ClientCertificate:
    certificate: x509.Certificate


def peer_certificate(request: Any) -> Optional[x509.Certificate]:
    """
    The verified client certificate of C{request}'s connection, if any.

    Plain TCP, HTTP/2 streams and test doubles differ in what they carry, so
    everything is looked up defensively.  The listener asks for certificates
    only when configured, and OpenSSL ends the handshake when one fails
    verification; a certificate that is present was therefore verified.
    Where the TLS connection can tell us its verification result, a
    non-zero result is treated as no certificate at all.
    """
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    if transport is None:
        return None
    get_peer: Any
    if ISSLTransport.providedBy(transport):
        get_peer = transport.getPeerCertificate
    else:
        # TLSMemoryBIOProtocol has the method without declaring ISSLTransport;
        # plain TCP has neither.
        get_peer = getattr(transport, "getPeerCertificate", None)
    if not callable(get_peer):
        return None
    try:
        cert = get_peer()
    except Exception:
        # Before the handshake finishes, pyOpenSSL raises.
        return None
    if cert is None:
        return None
    handle = _tls_handle(transport)
    verify_result = getattr(handle, "get_verify_result", None)
    if verify_result is not None:
        try:
            if verify_result() != 0:
                return None
        except Exception:
            return None
    if isinstance(cert, x509.Certificate):
        return cert
    to_cryptography = getattr(cert, "to_cryptography", None)
    if to_cryptography is None:
        return None
    result: x509.Certificate = to_cryptography()
    return result


def _tls_handle(transport: Any) -> Any:
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    try:
        return get_handle()
    except Exception:
        return None


def certificate_name(cert: x509.Certificate, name_from: str) -> Optional[str]:
    """
    The identity name a certificate carries: its subject common name
    (C{"cn"}) or its first DNS or e-mail subject alternative name
    (C{"san"}).
    """
    if name_from == "cn":
        values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not values:
            return None
        value = values[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return None
    san = ext.value
    assert isinstance(san, x509.SubjectAlternativeName)
    for general_name in san:
        if isinstance(general_name, (x509.DNSName, x509.RFC822Name)):
            return str(general_name.value)
    return None


@implementer(ICredentialsChecker)
class ClientCertificateChecker:
    """
    Lets in the certificates named in C{client_certificates.identities}.

    A certificate that passed the CA check but is not listed is refused
    with 403, not 401: it is known who is asking; they are not allowed.
    """

    credentialInterfaces = (IClientCertificate,)
    name = "client_certificate"

    def __init__(self, config: ClientCertConfig) -> None:
        self.config = config

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        # The avatar id is a Principal: richer than the bytes twisted.cred
        # suggests, and only ever handed to sealgw's own realm.
        name = certificate_name(credentials.certificate, self.config.name_from)
        if name is None:
            what = "common name" if self.config.name_from == "cn" else "DNS or e-mail name"
            error = Forbidden(f"the client certificate has no {what}", "unknown_certificate")
            error.checker = self.name
            return fail(error)
        identity = self.config.identities.get(name)
        if identity is None:
            error = Forbidden(
                f"the client certificate {name!r} is not allowed here", "unknown_certificate"
            )
            error.identity_name = name
            error.checker = self.name
            return fail(error)
        return succeed(Principal(self.name, name, tuple(identity.tenants), identity.limits))
