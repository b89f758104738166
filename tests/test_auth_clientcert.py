"""
Client certificates: the identity from the subject CN or a SAN, tenants
from configuration, and what happens around them.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet.interfaces import ISSLTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sealgw.auth import (
    ClientCertificate,
    ClientCertificateChecker,
    Forbidden,
    Unauthorized,
    peer_certificate,
)
from sealgw.config import AuthConfig, ClientCertConfig, ClientCertIdentity, Secret
from tests.idp import FakeTLSTransport, admit, fake_request, make_gate

_CA_KEY = ec.generate_private_key(ec.SECP256R1())
_CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])


def make_certificate(
    cn: Optional[str] = None, dns: tuple[str, ...] = (), emails: tuple[str, ...] = ()
) -> x509.Certificate:
    """
    A client certificate signed by a test CA.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no common name")]
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(_CA_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.RFC822Name(e) for e in emails]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(_CA_KEY, hashes.SHA256())


def cert_config(name_from: str = "cn") -> ClientCertConfig:
    return ClientCertConfig(
        name_from=name_from,
        identities={
            "agent-1": ClientCertIdentity(tenants=("team-a",)),
            "agent-2.example.com": ClientCertIdentity(tenants=("team-b", "team-c")),
            "ops@example.com": ClientCertIdentity(),
        },
    )


class CheckerTests(SynchronousTestCase):
    def check(self, config: ClientCertConfig, cert: x509.Certificate) -> Any:
        return ClientCertificateChecker(config).requestAvatarId(ClientCertificate(cert))

    def test_cn(self) -> None:
        principal = self.successResultOf(self.check(cert_config(), make_certificate("agent-1")))
        self.assertEqual(
            (principal.checker, principal.name, principal.tenants),
            ("client_certificate", "agent-1", ("team-a",)),
        )

    def test_san_dns(self) -> None:
        cert = make_certificate("ignored", dns=("agent-2.example.com", "other.example.com"))
        principal = self.successResultOf(self.check(cert_config("san"), cert))
        self.assertEqual(principal.name, "agent-2.example.com")
        self.assertEqual(principal.tenants, ("team-b", "team-c"))

    def test_san_email(self) -> None:
        cert = make_certificate(emails=("ops@example.com",))
        principal = self.successResultOf(self.check(cert_config("san"), cert))
        self.assertEqual(principal.name, "ops@example.com")

    def test_cn_mode_ignores_san(self) -> None:
        cert = make_certificate("stranger", dns=("agent-2.example.com",))
        failure = self.failureResultOf(self.check(cert_config(), cert), Forbidden)
        self.assertEqual(failure.value.status, 403)
        self.assertEqual(failure.value.reason, "unknown_certificate")
        self.assertEqual(failure.value.identity_name, "stranger")

    def test_unlisted_is_403(self) -> None:
        failure = self.failureResultOf(
            self.check(cert_config(), make_certificate("agent-9")), Forbidden
        )
        self.assertIn("'agent-9'", failure.value.message)

    def test_no_name(self) -> None:
        self.failureResultOf(self.check(cert_config(), make_certificate()), Forbidden)
        self.failureResultOf(
            self.check(cert_config("san"), make_certificate("agent-1")), Forbidden
        )


class _PlainTransport:
    def getPeer(self) -> None:
        return None


@implementer(ISSLTransport)
class _DeclaredTLSTransport(FakeTLSTransport):
    pass


class _Handle:
    def __init__(self, result: int) -> None:
        self.result = result

    def get_verify_result(self) -> int:
        return self.result


class _UnverifiedTransport(FakeTLSTransport):
    def getHandle(self) -> _Handle:
        return _Handle(20)  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY


class _Channel:
    def __init__(self, transport: Any) -> None:
        self.transport = transport


class _Request:
    def __init__(self, transport: Any) -> None:
        self.channel = _Channel(transport)


class PeerCertificateTests(SynchronousTestCase):
    def test_pyopenssl_certificate(self) -> None:
        cert = make_certificate("agent-1")
        found = peer_certificate(_Request(FakeTLSTransport(crypto.X509.from_cryptography(cert))))
        self.assertEqual(found, cert)

    def test_declared_ssl_transport(self) -> None:
        cert = make_certificate("agent-1")
        self.assertEqual(peer_certificate(_Request(_DeclaredTLSTransport(cert))), cert)

    def test_plain_tcp(self) -> None:
        self.assertIsNone(peer_certificate(_Request(_PlainTransport())))
        self.assertIsNone(peer_certificate(_Request(None)))
        self.assertIsNone(peer_certificate(object()))
        self.assertIsNone(peer_certificate(fake_request()))

    def test_no_certificate(self) -> None:
        self.assertIsNone(peer_certificate(_Request(FakeTLSTransport(None))))

    def test_handshake_not_done(self) -> None:
        class Early(FakeTLSTransport):
            def getPeerCertificate(self) -> Any:
                raise crypto.Error("not yet")

        self.assertIsNone(peer_certificate(_Request(Early(None))))

    def test_failed_verification_ignored(self) -> None:
        cert = make_certificate("agent-1")
        self.assertIsNone(peer_certificate(_Request(_UnverifiedTransport(cert))))


class GateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.gate = make_gate(
            auth=AuthConfig(client_certificates=cert_config()),
            development_token=Secret("dev-token", "test"),
        )

    def test_admitted(self) -> None:
        request = fake_request(certificate=make_certificate("agent-1"))
        admission = self.successResultOf(admit(self.gate, request))
        self.assertEqual(admission.identity.name, "agent-1")
        self.assertEqual(admission.identity.checker, "client_certificate")
        self.assertEqual(admission.tenant, "team-a")

    def test_no_tenants_configured(self) -> None:
        request = fake_request(certificate=make_certificate(emails=("x@y",), cn="ops@example.com"))
        admission = self.successResultOf(admit(self.gate, request))
        self.assertEqual(admission.tenant, "anonymous")

    def test_unlisted_403(self) -> None:
        request = fake_request(certificate=make_certificate("agent-9"))
        failure = self.failureResultOf(admit(self.gate, request), Forbidden)
        self.assertEqual(failure.value.status, 403)

    def test_no_certificate_401(self) -> None:
        failure = self.failureResultOf(admit(self.gate, fake_request()), Unauthorized)
        self.assertEqual(failure.value.reason, "missing")
        self.assertIn("client certificate", failure.value.message)

    def test_bearer_token_decides(self) -> None:
        """
        With both a verified certificate and a bearer token, the token
        decides, whether it is good or not.
        """
        cert = make_certificate("agent-1")
        admission = self.successResultOf(
            admit(self.gate, fake_request("dev-token", certificate=cert))
        )
        self.assertEqual(admission.identity.name, "development")
        self.failureResultOf(
            admit(self.gate, fake_request("bad-token", certificate=cert)), Unauthorized
        )

    def test_certificate_ignored_when_not_configured(self) -> None:
        gate = make_gate(development_token=Secret("dev-token", "test"))
        request = fake_request(certificate=make_certificate("agent-1"))
        failure = self.failureResultOf(admit(gate, request), Unauthorized)
        self.assertEqual(failure.value.reason, "missing")

    def test_health(self) -> None:
        self.assertEqual(
            self.gate.health()["client_certificates"], {"status": "ok", "identities": 3}
        )
