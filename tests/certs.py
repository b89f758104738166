"""
Certificates made on the spot for tests: a CA, server certificates for
loopback, and client certificates, written as PEM files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from typing import Optional

import attr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@attr.frozen
class Issued:
    certificate: str
    key: str
    cert_obj: x509.Certificate
    key_obj: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _write(
    directory: str,
    name: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> Issued:
    cert_path = os.path.join(directory, f"{name}.crt")
    key_path = os.path.join(directory, f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return Issued(cert_path, key_path, cert, key)


class CertificateAuthority:
    """
    A throwaway CA that writes what it issues into C{directory}.
    """

    def __init__(self, directory: str, name: str = "sealgw test CA") -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.issued = _write(directory, name.replace(" ", "-"), self.cert, self.key)
        self.certificate = self.issued.certificate

    def issue(
        self,
        name: str,
        *,
        server: bool = True,
        dns: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = ("127.0.0.1",),
        emails: tuple[str, ...] = (),
        common_name: Optional[str] = None,
        rsa_key: bool = False,
    ) -> Issued:
        """
        @param rsa_key: an RSA key rather than an EC one, for what only RSA
            certificates can negotiate (static RSA key exchange).
        """
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if rsa_key:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += [x509.RFC822Name(e) for e in emails]
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or name)])
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _write(self.directory, name, cert, key)


def install(issued: Issued, certificate: str, key: str) -> None:
    """
    Put a certificate and its key at the paths a server reads, the way
    cert-manager and ACME clients rotate them: each written aside, then
    renamed over the old file (the key first).
    """
    for source, target in ((issued.key, key), (issued.certificate, certificate)):
        shutil.copyfile(source, target + ".new")
        os.replace(target + ".new", target)
