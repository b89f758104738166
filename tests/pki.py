"""
Certificates made on the spot for outbound TLS tests: a root CA, an
intermediate CA below it, and server certificates for loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(
    common_name: str, parent: Optional[tuple[Key, x509.Certificate]] = None
) -> tuple[Key, x509.Certificate]:
    """
    A self-signed root CA, or an intermediate CA signed by C{parent}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key, issuer = (key, _name(common_name)) if parent is None else (
        parent[0], parent[1].subject
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent[0].public_key()), False
        )
    return key, builder.sign(signer_key, hashes.SHA256())


def make_server_cert(
    ca_key: Key,
    ca_cert: x509.Certificate,
    names: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1",),
) -> tuple[Key, x509.Certificate]:
    """
    A server certificate for C{names} and C{addresses} (by default
    C{localhost} and C{127.0.0.1}).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sealgw test upstream"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]
                + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert: x509.Certificate, key: Optional[Key] = None) -> bytes:
    """
    C{cert} as PEM, followed by C{key} when given.
    """
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return data


class Chain:
    """
    A root, an intermediate signed by it, and a server certificate signed
    by the intermediate: what a private PKI usually looks like.  The
    server sends only its own certificate, so a client verifies it only
    when it trusts the intermediate I{and} the root.
    """

    def __init__(self) -> None:
        self.root = make_ca("sealgw test root CA")
        self.intermediate = make_ca("sealgw test intermediate CA", parent=self.root)
        self.server = make_server_cert(*self.intermediate)

    def server_pem(self) -> bytes:
        """
        The server's certificate and key, for C{PrivateCertificate.loadPEM}.
        """
        return pem(self.server[1], self.server[0])

    def bundle(self) -> bytes:
        """
        The CA bundle an operator would configure: intermediate first, then
        the root.
        """
        return pem(self.intermediate[1]) + pem(self.root[1])
