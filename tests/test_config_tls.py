"""
A listener's tls section: the TLS policy keys (min_version, ciphers) and
the watch of its files, their defaults and their problems.
"""

from __future__ import annotations

import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, TLSConfig, load
from sealgw.config._model import INTERMEDIATE_CIPHERS
from tests.certs import CertificateAuthority


class TLSSectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = CertificateAuthority(os.path.abspath(self.mktemp())).issue("server")

    def path(self, tls_lines: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        text = textwrap.dedent(
            f"""\
            listeners:
              - endpoint: ssl:8443
                tls:
                  certificate: {self.server.certificate}
                  key: {self.server.key}
            """
        ) + textwrap.indent(textwrap.dedent(tls_lines), " " * 6)
        with open(path, "w") as f:
            f.write(text)
        return path

    def tls(self, tls_lines: str = "") -> TLSConfig:
        config = load(self.path(tls_lines))
        tls = config.listeners[0].tls
        assert tls is not None
        return tls

    def problems(self, tls_lines: str) -> list[str]:
        path = self.path(tls_lines)
        with self.assertRaises(ConfigError) as caught:
            load(path)
        return [p[len(path) + 2:] for p in caught.exception.problems]

    def test_defaults(self) -> None:
        tls = self.tls()
        self.assertEqual(tls.min_version, "1.2")
        self.assertEqual(tls.ciphers, INTERMEDIATE_CIPHERS)
        self.assertEqual(tls.watch_interval, 60.0)

    def test_intermediate_is_forward_secret_aead(self) -> None:
        for suite in INTERMEDIATE_CIPHERS.split(":"):
            self.assertTrue(suite.startswith("ECDHE-"), suite)
            self.assertTrue(suite.endswith(("GCM-SHA256", "GCM-SHA384", "CHACHA20-POLY1305")), suite)

    def test_set(self) -> None:
        tls = self.tls(
            """\
            min_version: 1.3
            ciphers: ECDHE-ECDSA-AES256-GCM-SHA384
            watch_interval: 5m
            """
        )
        self.assertEqual(tls.min_version, "1.3")
        self.assertEqual(tls.ciphers, "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(tls.watch_interval, 300.0)

    def test_min_version_as_string(self) -> None:
        self.assertEqual(self.tls('min_version: "1.2"\n').min_version, "1.2")

    def test_watch_off(self) -> None:
        self.assertEqual(self.tls("watch_interval: 0\n").watch_interval, 0.0)

    def test_bad_min_version(self) -> None:
        self.assertEqual(
            self.problems("min_version: 1.1\n"),
            ["listeners[0].tls.min_version: '1.1' is not one of '1.2', '1.3'"],
        )

    def test_unknown_cipher(self) -> None:
        self.assertEqual(
            self.problems("ciphers: ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES-GCM\n"),
            [
                "listeners[0].tls.ciphers: 'ECDHE-RSA-AES-GCM' names no TLS 1.2 "
                "cipher suite OpenSSL knows"
            ],
        )

    def test_tls13_name_is_not_a_tls12_cipher(self) -> None:
        [problem] = self.problems("ciphers: TLS_AES_128_GCM_SHA256\n")
        self.assertIn("listeners[0].tls.ciphers: 'TLS_AES_128_GCM_SHA256' names no", problem)

    def test_cipher_string_leaving_nothing(self) -> None:
        self.assertEqual(
            self.problems("ciphers: ECDH+AESGCM:!ECDH\n"),
            ["listeners[0].tls.ciphers: 'ECDH+AESGCM:!ECDH' leaves no TLS 1.2 cipher suite"],
        )

    def test_cipher_string_with_operators(self) -> None:
        tls = self.tls("ciphers: ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:@SECLEVEL=2\n")
        self.assertEqual(tls.ciphers, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:@SECLEVEL=2")

    def test_unknown_key(self) -> None:
        self.assertEqual(
            self.problems("min_versoin: 1.3\n"),
            ["listeners[0].tls.min_versoin: unknown key (did you mean 'min_version'?)"],
        )
