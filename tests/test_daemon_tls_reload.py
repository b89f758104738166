"""
Rotating a TLS listener's certificate while it serves: on SIGHUP (the
service's reload) and when the files change (a timer driven by a Clock), new
handshakes get the new certificate, open keep-alive connections go on, and a
broken new file keeps the old certificate in force.
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from sealgw.config import ListenerConfig, TLSConfig
from sealgw.daemon import GatewayService, Listener, prepare_listener
from tests.certs import CertificateAuthority, install


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        return b"hello"


class _Client:
    """
    One blocking keep-alive HTTPS connection from the standard library,
    used from a thread.
    """

    def __init__(self, ca: str, port: int) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca)
        self.conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)

    def get(self) -> tuple[int, str]:
        """
        One request; its status and the common name of the certificate the
        server showed on this connection.
        """
        self.conn.request("GET", "/")
        response = self.conn.getresponse()
        response.read()
        peer: Any = self.conn.sock.getpeercert()
        names = [value for rdn in peer["subject"] for key, value in rdn if key == "commonName"]
        return response.status, names[0]

    def close(self) -> None:
        self.conn.close()


def _write(path: str, data: bytes) -> None:
    with open(path + ".new", "wb") as f:
        f.write(data)
    os.replace(path + ".new", path)


class RotationTests(TestCase):
    def setUp(self) -> None:
        self.ca = CertificateAuthority(self.mktemp())
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.certificate = os.path.join(self.directory, "tls.crt")
        self.key = os.path.join(self.directory, "tls.key")
        install(self.ca.issue("first"), self.certificate, self.key)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def serve(self, watch_interval: float = 0.0) -> tuple[GatewayService, Listener, Clock]:
        """
        A TLS listener on a real socket, run by a service whose timers a
        L{Clock} drives.
        """
        tls = TLSConfig(
            certificate=self.certificate, key=self.key, watch_interval=watch_interval
        )
        listener = prepare_listener(
            reactor,
            ListenerConfig(endpoint="ssl:0:interface=127.0.0.1", tls=tls),
            Site(_Hello()),
            "listeners[0]",
        )
        clock = Clock()
        service = GatewayService(
            clock, [listener], [], drain_grace=1.0, install_signal_handlers=False
        )
        service.privilegedStartService()
        service.startService()

        def stop() -> object:
            d = service.stopService()
            clock.advance(10)
            return d

        self.addCleanup(stop)
        self.port = int(listener.port.getHost().port)
        return service, listener, clock

    def client(self) -> _Client:
        c = _Client(self.ca.certificate, self.port)
        self.addCleanup(c.close)
        return c

    def logged(self, text: str) -> list[str]:
        return [formatEvent(e) for e in self.events if text in formatEvent(e)]

    async def test_sighup_rotates_without_dropping(self) -> None:
        """
        After a reload, a new connection is shown the new certificate while
        a keep-alive connection opened before goes on being served on the
        same socket, with the certificate it started with.
        """
        service, listener, _ = self.serve()
        old = self.client()
        self.assertEqual(await deferToThread(old.get), (200, "first"))
        socket_before = old.conn.sock
        install(self.ca.issue("second"), self.certificate, self.key)
        service.reload()
        self.assertEqual(await deferToThread(self.client().get), (200, "second"))
        self.assertEqual(await deferToThread(old.get), (200, "first"))
        self.assertIs(old.conn.sock, socket_before)
        assert listener.tls is not None
        self.assertEqual(listener.tls.reloads, 1)
        self.assertTrue(self.logged("TLS certificate " + self.certificate + " loaded: 'second'"))

    async def test_broken_certificate_keeps_old(self) -> None:
        """
        A new certificate file that is not one, or that does not fit the
        key: the old certificate stays in use, and the log and C{/health}
        say why; a good file later is taken.
        """
        service, listener, _ = self.serve()
        assert listener.tls is not None
        _write(self.certificate, b"not a certificate\n")
        service.reload()
        self.assertEqual(await deferToThread(self.client().get), (200, "first"))
        self.assertIn("no PEM certificate", str(listener.tls.last_error))
        self.assertEqual(listener.tls.health()["status"], "degraded")
        [line] = self.logged("not reloaded")
        self.assertIn("'first'", line)
        self.assertIn("no PEM certificate", line)

        # A certificate whose key was not replaced with it.
        other = self.ca.issue("other")
        shutil.copyfile(other.certificate, self.certificate)
        self.assertFalse(listener.tls.reload())
        self.assertIn("do not fit together", str(listener.tls.last_error))
        self.assertEqual(await deferToThread(self.client().get), (200, "first"))

        install(self.ca.issue("third"), self.certificate, self.key)
        self.assertTrue(listener.tls.reload())
        self.assertIsNone(listener.tls.last_error)
        self.assertEqual(listener.tls.health()["status"], "ok")
        self.assertEqual(await deferToThread(self.client().get), (200, "third"))

    async def test_missing_key_keeps_old(self) -> None:
        service, listener, _ = self.serve()
        os.unlink(self.key)
        service.reload()
        assert listener.tls is not None
        self.assertIn("cannot read the private key", str(listener.tls.last_error))
        self.assertEqual(await deferToThread(self.client().get), (200, "first"))

    async def test_watch_picks_up_changed_files(self) -> None:
        """
        With C{watch_interval}, a changed file is read at the next check
        without any signal; files that did not change are not read again.
        """
        service, listener, clock = self.serve(watch_interval=30)
        assert listener.tls is not None
        clock.advance(30)
        self.assertEqual(listener.tls.reloads, 0)
        install(self.ca.issue("second"), self.certificate, self.key)
        self.assertEqual(await deferToThread(self.client().get), (200, "first"))
        clock.advance(29)
        self.assertEqual(listener.tls.reloads, 0)
        clock.advance(1)
        self.assertEqual(listener.tls.reloads, 1)
        self.assertEqual(await deferToThread(self.client().get), (200, "second"))
        clock.advance(30)
        self.assertEqual(listener.tls.reloads, 1)

    def test_watch_reports_a_broken_file_once(self) -> None:
        _, listener, clock = self.serve(watch_interval=30)
        assert listener.tls is not None
        _write(self.certificate, b"garbage\n")
        clock.advance(30)
        clock.advance(30)
        clock.advance(30)
        self.assertEqual(listener.tls.failed_reloads, 1)
        self.assertEqual(len(self.logged("not reloaded")), 1)

    def test_watch_survives_an_unexpected_error(self) -> None:
        """
        A check that fails in an unforeseen way is logged, and the timer
        keeps running.
        """
        _, listener, clock = self.serve(watch_interval=30)
        assert listener.tls is not None
        calls: list[None] = []

        def broken() -> bool:
            calls.append(None)
            raise RuntimeError("boom")

        listener.tls.reload = broken  # type: ignore[method-assign]
        install(self.ca.issue("second"), self.certificate, self.key)
        clock.advance(30)
        install(self.ca.issue("third"), self.certificate, self.key)
        clock.advance(30)
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_no_watch_when_interval_zero(self) -> None:
        service, listener, clock = self.serve(watch_interval=0)
        assert listener.tls is not None
        self.assertEqual(list(service), [])
        install(self.ca.issue("second"), self.certificate, self.key)
        clock.advance(3600)
        self.assertEqual(listener.tls.reloads, 0)

    def test_sighup_survives_an_unexpected_error(self) -> None:
        """
        SIGHUP's reload logs a TLS reload that fails in an unforeseen way
        rather than letting it escape into the signal's reactor call.
        """
        service, listener, _ = self.serve()
        assert listener.tls is not None

        def broken() -> bool:
            raise RuntimeError("boom")

        listener.tls.reload = broken  # type: ignore[method-assign]
        service.reload()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(self.logged("reloading TLS for listeners[0] failed"))
