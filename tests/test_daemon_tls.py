"""
TLS listeners over real sockets: TLS 1.2 is the floor, only forward-secret
AEAD suites unless configured otherwise, and client certificates are
required, optional or not asked for, per listener.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from sealgw.config import ConfigError, ListenerConfig, TLSConfig
from sealgw.daemon import prepare_listener, server_tls_options
from tests.certs import CertificateAuthority, Issued


class _Peer(Resource):
    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        cert = request.channel.transport.getPeerCertificate()
        name = cert.get_subject().CN if cert is not None else "anonymous"
        return f"hello {name}".encode()


def _client(
    ca: str,
    port: int,
    *,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    cert: Optional[tuple[str, str]] = None,
) -> tuple[int, bytes]:
    """
    A plain blocking HTTPS request from the standard library's TLS stack,
    run in a thread: a client that is not Twisted's.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    # Allow the old protocols on our side so that any refusal is the server's.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = min_version
    ctx.maximum_version = max_version
    if cert is not None:
        ctx.load_cert_chain(*cert)
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _handshake(
    ca: str,
    port: int,
    ciphers: str = "DEFAULT:@SECLEVEL=0",
    *,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> tuple[Optional[str], str]:
    """
    A TLS handshake from the standard library's stack offering only
    C{ciphers} (for TLS 1.2 and older); the version and suite agreed.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.set_ciphers(ciphers)
    ctx.minimum_version = min_version
    ctx.maximum_version = max_version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            cipher = tls.cipher()
            assert cipher is not None
            return tls.version(), cipher[0]


class TLSListenerTests(TestCase):
    def setUp(self) -> None:
        self.ca = CertificateAuthority(self.mktemp())
        self.server = self.ca.issue("server")
        self.client_cert = self.ca.issue("client-a", server=False, dns=(), ips=(), common_name="client-a")
        other_ca = CertificateAuthority(self.mktemp(), "other CA")
        self.stranger = other_ca.issue("stranger", server=False, dns=(), ips=())

    def listen(self, mode: str = "none", server: Optional[Issued] = None, **tls_keys: Any) -> int:
        server = server or self.server
        tls = TLSConfig(
            certificate=server.certificate,
            key=server.key,
            client_ca=self.ca.certificate if mode != "none" else None,
            client_certificates=mode,
            **tls_keys,
        )
        listener = prepare_listener(
            reactor,
            ListenerConfig(endpoint="ssl:0:interface=127.0.0.1", tls=tls),
            Site(_Peer()),
            "listeners[0]",
        )
        d = listener.endpoint.listen(listener.factory)
        port = self.successResultOf(d)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def test_tls12_accepted(self) -> None:
        port = self.listen()
        status, body = await deferToThread(
            _client, self.ca.certificate, port, max_version=ssl.TLSVersion.TLSv1_2
        )
        self.assertEqual((status, body), (200, b"hello anonymous"))

    async def test_tls13_accepted(self) -> None:
        port = self.listen()
        status, _ = await deferToThread(
            _client, self.ca.certificate, port, min_version=ssl.TLSVersion.TLSv1_3
        )
        self.assertEqual(status, 200)

    async def test_tls11_refused(self) -> None:
        """
        A client offering only TLS 1.0 and 1.1 gets a protocol-version alert
        from the server.
        """
        port = self.listen()
        with self.assertRaises(ssl.SSLError) as caught:
            await deferToThread(
                _client,
                self.ca.certificate,
                port,
                min_version=ssl.TLSVersion.TLSv1,
                max_version=ssl.TLSVersion.TLSv1_1,
            )
        self.assertIn("PROTOCOL_VERSION", str(caught.exception).upper())

    async def test_static_rsa_refused(self) -> None:
        """
        A TLS 1.2 client offering only C{AES128-SHA} (RSA key exchange, no
        forward secrecy, CBC with SHA-1) is refused, even by a listener
        whose RSA certificate could serve it.
        """
        port = self.listen(server=self.ca.issue("rsa-server", rsa_key=True))
        with self.assertRaises(ssl.SSLError) as caught:
            await deferToThread(
                _handshake,
                self.ca.certificate,
                port,
                "AES128-SHA:@SECLEVEL=0",
                max_version=ssl.TLSVersion.TLSv1_2,
            )
        self.assertIn("HANDSHAKE_FAILURE", str(caught.exception).upper())

    async def test_ecdhe_gcm_accepted(self) -> None:
        port = self.listen(server=self.ca.issue("rsa-server", rsa_key=True))
        agreed = await deferToThread(
            _handshake,
            self.ca.certificate,
            port,
            "ECDHE-RSA-AES128-GCM-SHA256",
            max_version=ssl.TLSVersion.TLSv1_2,
        )
        self.assertEqual(agreed, ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"))

    async def test_ecdhe_chacha20_accepted(self) -> None:
        port = self.listen()
        agreed = await deferToThread(
            _handshake,
            self.ca.certificate,
            port,
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            max_version=ssl.TLSVersion.TLSv1_2,
        )
        self.assertEqual(agreed, ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"))

    async def test_cbc_refused(self) -> None:
        """
        Forward secret but not AEAD (CBC with SHA-1): refused.
        """
        port = self.listen()
        with self.assertRaises(ssl.SSLError):
            await deferToThread(
                _handshake,
                self.ca.certificate,
                port,
                "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0",
                max_version=ssl.TLSVersion.TLSv1_2,
            )

    async def test_tls13_suite(self) -> None:
        port = self.listen()
        version, cipher = await deferToThread(
            _handshake, self.ca.certificate, port, min_version=ssl.TLSVersion.TLSv1_3
        )
        self.assertEqual(version, "TLSv1.3")
        self.assertIn(
            cipher,
            ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"),
        )

    async def test_min_version_13(self) -> None:
        """
        With C{min_version: "1.3"} a client that speaks at most TLS 1.2 is
        refused with a protocol-version alert; TLS 1.3 is served.
        """
        port = self.listen(min_version="1.3")
        with self.assertRaises(ssl.SSLError) as caught:
            await deferToThread(
                _handshake, self.ca.certificate, port, max_version=ssl.TLSVersion.TLSv1_2
            )
        self.assertIn("PROTOCOL_VERSION", str(caught.exception).upper())
        version, _ = await deferToThread(_handshake, self.ca.certificate, port)
        self.assertEqual(version, "TLSv1.3")

    async def test_custom_ciphers(self) -> None:
        """
        A listener's own cipher string replaces the default for TLS 1.2.
        """
        port = self.listen(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
        with self.assertRaises(ssl.SSLError):
            await deferToThread(
                _handshake,
                self.ca.certificate,
                port,
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                max_version=ssl.TLSVersion.TLSv1_2,
            )
        agreed = await deferToThread(
            _handshake,
            self.ca.certificate,
            port,
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
            max_version=ssl.TLSVersion.TLSv1_2,
        )
        self.assertEqual(agreed, ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"))

    async def test_mtls_required_with_certificate(self) -> None:
        port = self.listen("required")
        status, body = await deferToThread(
            _client,
            self.ca.certificate,
            port,
            cert=(self.client_cert.certificate, self.client_cert.key),
        )
        self.assertEqual((status, body), (200, b"hello client-a"))

    async def test_mtls_required_without_certificate(self) -> None:
        port = self.listen("required")
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            await deferToThread(_client, self.ca.certificate, port)

    async def test_mtls_required_foreign_certificate(self) -> None:
        """
        A certificate from a CA the listener does not trust is refused.
        """
        port = self.listen("required")
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            await deferToThread(
                _client,
                self.ca.certificate,
                port,
                cert=(self.stranger.certificate, self.stranger.key),
            )

    async def test_mtls_optional(self) -> None:
        port = self.listen("optional")
        status, body = await deferToThread(_client, self.ca.certificate, port)
        self.assertEqual((status, body), (200, b"hello anonymous"))
        status, body = await deferToThread(
            _client,
            self.ca.certificate,
            port,
            cert=(self.client_cert.certificate, self.client_cert.key),
        )
        self.assertEqual((status, body), (200, b"hello client-a"))


class TLSConfigProblemTests(TestCase):
    def test_key_not_matching_certificate(self) -> None:
        ca = CertificateAuthority(self.mktemp())
        a = ca.issue("a")
        b = ca.issue("b")
        with self.assertRaises(ConfigError) as caught:
            server_tls_options(TLSConfig(certificate=a.certificate, key=b.key))
        self.assertIn("do not fit together", str(caught.exception))

    def test_not_a_certificate(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("hello\n")
        with self.assertRaises(ConfigError) as caught:
            server_tls_options(TLSConfig(certificate=path, key=path))
        self.assertIn("no PEM certificate", str(caught.exception))

    def test_chain_with_intermediate(self) -> None:
        """
        A chain file (leaf then the CA) loads; the leaf is used.
        """
        ca = CertificateAuthority(self.mktemp())
        leaf = ca.issue("leaf")
        chain = self.mktemp()
        with open(chain, "wb") as f, open(leaf.certificate, "rb") as a, open(ca.certificate, "rb") as b:
            f.write(a.read() + b.read())
        options = server_tls_options(TLSConfig(certificate=chain, key=leaf.key))
        self.assertIsNotNone(options)
