"""
The HTTP edge in memory, on a task.Clock: what every listener answers to
paths and methods it does not serve, which metric labels a client can
make, and the limits on request heads (size, time) and on connections.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from werkzeug.routing import Map

from sealgw.build import build_gateway
from sealgw.config import Config, ConfigError, ListenerConfig, load
from sealgw.daemon._limits import ConnectionLimit
from sealgw.http import Body
from sealgw.relay._outcome import response_outcome
from sealgw.web import GatewayMetrics
from sealgw.web._host import host_problem

PEER = "203.0.113.7"
HEAD_RE = re.compile(rb"^HTTP/1\.1 (\d{3}) ")


class Connection:
    """
    One client connection to a listener's factory, over a transport in
    memory.
    """

    def __init__(self, factory: Any, port: int = 40000) -> None:
        address = IPv4Address("TCP", PEER, port)
        self.protocol = factory.buildProtocol(address)
        self.transport = StringTransportWithDisconnection(peerAddress=address)
        if self.protocol is None:
            self.transport.connected = False
            return
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    @property
    def refused(self) -> bool:
        return self.protocol is None

    @property
    def open(self) -> bool:
        return bool(self.transport.connected)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def close(self) -> None:
        self.transport.loseConnection()


def status_of(answer: bytes) -> int:
    match = HEAD_RE.match(answer)
    assert match is not None, f"not an HTTP answer: {answer[:200]!r}"
    return int(match.group(1))


def header_of(answer: bytes, name: bytes) -> Optional[bytes]:
    head = answer.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def body_of(answer: bytes) -> bytes:
    head, _, body = answer.partition(b"\r\n\r\n")
    if header_of(answer, b"transfer-encoding") != b"chunked":
        return body
    chunks = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return b"".join(chunks)
        chunks.append(body[:size])
        body = body[size + 2 :]


def request(method: bytes, path: bytes, *headers: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: gateway", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class EdgeCase(SynchronousTestCase):
    """
    A whole gateway built from a configuration with a push listener, a
    push+ops listener and an admin listener, on a Clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def build(self, **limits: Any) -> dict[str, Any]:
        """
        @return: each listener kind's factory, as it is given to its port.
        """
        config = Config(
            source="test",
            listeners=(
                ListenerConfig(endpoint="tcp:18080", **limits),
                ListenerConfig(endpoint="tcp:18081", ops=True, **limits),
            ),
            admin=ListenerConfig(endpoint="tcp:19090", **limits),
        )
        self.registry = CollectorRegistry()
        service = build_gateway(
            config, self.clock, registry=self.registry, install_signal_handlers=False
        )
        factories = [listener.factory for listener in service.listeners]
        return {"push": factories[0], "push+ops": factories[1], "admin": factories[2]}

    def access_lines(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("access")]

    def assertNothingAlarming(self) -> None:
        loud = [
            e
            for e in self.events
            if e.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical)
            and "no identity source" not in e.get("log_format", "")
        ]
        self.assertEqual(loud, [])

    def metric(self, name: str, **labels: str) -> Optional[float]:
        value: Optional[float] = self.registry.get_sample_value(name, labels)
        return value


class UnknownPathsAndMethodsTests(EdgeCase):
    def exchange(self, factory: Any, raw: bytes) -> bytes:
        connection = Connection(factory)
        connection.send(raw)
        return connection.take()

    def assertRefused(
        self, answer: bytes, status: int, allow: Optional[bytes] = None
    ) -> None:
        self.assertEqual(status_of(answer), status, answer)
        self.assertEqual(header_of(answer, b"content-type"), b"text/plain; charset=utf-8")
        # One short line, like every other error the gateway answers.
        body = body_of(answer)
        self.assertTrue(body.endswith(b"\n") and body.count(b"\n") == 1, body)
        self.assertLess(len(body), 100)
        self.assertEqual(header_of(answer, b"allow"), allow)

    def test_unknown_path_is_404_on_every_listener(self) -> None:
        factories = self.build()
        for kind, factory in factories.items():
            for path in (b"/", b"/nope", b"/api/v1/pushx", b"/wp-login.php?x=1", b"/.env"):
                answer = self.exchange(factory, request(b"GET", path))
                self.assertRefused(answer, 404)
                self.assertIn(b"no route", body_of(answer), (kind, path))
        self.assertNothingAlarming()

    def test_ops_paths_only_where_served(self) -> None:
        factories = self.build()
        self.assertRefused(self.exchange(factories["push"], request(b"GET", b"/metrics")), 404)
        self.assertRefused(
            self.exchange(factories["admin"], request(b"POST", b"/api/v1/push")), 404
        )
        for kind in ("push+ops", "admin"):
            answer = self.exchange(factories[kind], request(b"GET", b"/metrics"))
            self.assertEqual(status_of(answer), 200, answer)

    def test_wrong_method_is_405_with_allow(self) -> None:
        factories = self.build()
        for kind in ("push", "push+ops"):
            for path in (b"/api/v1/push", b"/loki/api/v1/push", b"/v1/traces", b"/publish/metrics"):
                answer = self.exchange(factories[kind], request(b"GET", path))
                self.assertRefused(answer, 405, allow=b"POST")
        for kind in ("push+ops", "admin"):
            for path in (b"/health", b"/ready", b"/metrics"):
                answer = self.exchange(factories[kind], request(b"DELETE", path))
                self.assertRefused(answer, 405, allow=b"GET, HEAD")
        self.assertNothingAlarming()

    def test_invented_method_is_405(self) -> None:
        factories = self.build()
        answer = self.exchange(factories["push"], request(b"BREW", b"/api/v1/write"))
        self.assertRefused(answer, 405, allow=b"POST")

    def test_odd_request_targets(self) -> None:
        """
        The asterisk form and an absolute URL are not internal errors.
        """
        factories = self.build()
        for factory in factories.values():
            for method, target, status in (
                (b"OPTIONS", b"*", 200),
                (b"GET", b"*", 405),
                (b"GET", b"http://gateway/nope", 404),
                (b"GET", b"/%ff%fe", 400),
                (b"GET", b"/api/v1/%ff", 400),
            ):
                answer = self.exchange(factory, request(method, target))
                self.assertEqual(status_of(answer), status, (method, target, answer))
                self.assertEqual(header_of(answer, b"server"), b"sealgw")
            answer = self.exchange(
                factory, b"GET /metrics HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n"
            )
            self.assertEqual(status_of(answer), 400, answer)
        self.assertNothingAlarming()

    def test_access_line_not_critical(self) -> None:
        factories = self.build()
        self.exchange(factories["push"], request(b"POST", b"/no/such/route"))
        lines = self.access_lines()
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["log_level"], LogLevel.info)
        self.assertEqual(lines[0]["status"], 404)
        self.assertEqual(lines[0]["route"], "unmatched")
        self.assertEqual(lines[0]["path"], "/no/such/route")
        self.assertNothingAlarming()
        self.assertEqual(
            self.metric(
                "sealgw_http_requests_total",
                route="unmatched",
                method="POST",
                status="404",
                tenant="",
            ),
            1.0,
        )

    def test_invented_methods_make_no_new_series(self) -> None:
        factories = self.build()
        for i in range(300):
            self.exchange(factories["push+ops"], request(b"M%d" % i, b"/api/v1/push"))
            self.exchange(factories["push+ops"], request(b"X%d" % i, b"/x%d" % i))
        samples = [
            s
            for family in self.registry.collect()
            if family.name == "sealgw_http_requests"
            for s in family.samples
            if s.name == "sealgw_http_requests_total"
        ]
        self.assertEqual(
            sorted((s.labels["method"], s.labels["status"], s.value) for s in samples),
            [("other", "404", 300.0), ("other", "405", 300.0)],
        )
        self.assertEqual({s.labels["route"] for s in samples}, {"unmatched"})


class HeaderSizeTests(EdgeCase):
    def test_one_huge_header_is_431(self) -> None:
        """
        A 1 MB Authorization header is answered 431 and logged, not met
        with a silently closed connection.
        """
        factory = self.build()["push"]
        connection = Connection(factory)
        token = b"x" * (1024 * 1024)
        head = b"POST /api/v1/push HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer "
        for start in range(0, len(token), 65536):
            if not connection.open:
                break
            connection.send((head if start == 0 else b"") + token[start : start + 65536])
        answer = connection.take()
        self.assertEqual(status_of(answer), 431, answer[:200])
        self.assertIn(b"larger than the limit of 65536 bytes", body_of(answer))
        self.assertEqual(header_of(answer, b"connection"), b"close")
        self.assertFalse(connection.open)
        [line] = self.access_lines()
        self.assertEqual((line["status"], line["method"], line["path"]), (431, "POST", "/api/v1/push"))
        self.assertEqual(line["peer"], PEER)
        self.assertNotIn("xxxxxxxx", repr(self.events))
        self.assertEqual(
            self.metric(
                "sealgw_http_requests_total",
                route="unmatched",
                method="POST",
                status="431",
                tenant="",
            ),
            1.0,
        )

    def test_many_headers_over_the_total(self) -> None:
        factory = self.build()["push+ops"]
        connection = Connection(factory)
        headers = [b"X-Filler-%d: %s" % (i, b"y" * 1000) for i in range(70)]
        connection.send(request(b"GET", b"/health", *headers))
        self.assertEqual(status_of(connection.take()), 431)
        self.assertFalse(connection.open)

    def test_too_many_header_fields(self) -> None:
        factory = self.build()["push+ops"]
        connection = Connection(factory)
        connection.send(request(b"GET", b"/health", *(b"a%d: b" % i for i in range(501))))
        answer = connection.take()
        self.assertEqual(status_of(answer), 431)
        self.assertIn(b"more than 500 header fields", body_of(answer))

    def test_request_line_too_long(self) -> None:
        factory = self.build(max_header_size=2048)["push"]
        connection = Connection(factory)
        connection.send(b"GET /" + b"a" * 4096)
        self.assertEqual(status_of(connection.take()), 431)
        [line] = self.access_lines()
        self.assertEqual((line["method"], line["path"]), ("-", "-"))

    def test_under_the_limit_is_served(self) -> None:
        factory = self.build()["push+ops"]
        connection = Connection(factory)
        connection.send(request(b"GET", b"/metrics", b"X-Big: " + b"z" * 60000))
        self.assertEqual(status_of(connection.take()), 200)
        self.assertTrue(connection.open)

    def test_limit_is_per_listener(self) -> None:
        factory = self.build(max_header_size=4096)["admin"]
        small = Connection(factory)
        small.send(request(b"GET", b"/metrics", b"X-Big: " + b"z" * 3000))
        self.assertEqual(status_of(small.take()), 200)
        big = Connection(factory, port=40001)
        big.send(request(b"GET", b"/health", b"X-Big: " + b"z" * 5000))
        self.assertEqual(status_of(big.take()), 431)

    def test_malformed_head_is_400_with_access_line(self) -> None:
        factory = self.build()["push"]
        connection = Connection(factory)
        connection.send(b"GET /x HTTP/1.1\r\nHost: gateway\r\nno colon here\r\n\r\n")
        answer = connection.take()
        self.assertEqual(status_of(answer), 400)
        self.assertIn(b"malformed", body_of(answer))
        self.assertEqual([line["status"] for line in self.access_lines()], [400])


    def test_malformed_chunk_is_400_with_access_line(self) -> None:
        factory = self.build()["push"]
        connection = Connection(factory)
        connection.send(
            b"POST /api/v1/push HTTP/1.1\r\nHost: gateway\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n"
        )
        answer = connection.take()
        self.assertEqual(status_of(answer), 400, answer)
        self.assertEqual(body_of(answer), b"malformed request body\n")
        self.assertFalse(connection.open)
        [line] = self.access_lines()
        self.assertEqual((line["status"], line["bytes_in"]), (400, 4))
        self.assertEqual(self.metric("sealgw_http_requests_in_flight"), 0.0)


GOOD_HOSTS = [
    b"gateway",
    b"gateway:8080",
    b"Sealgw.Example.COM:443",
    b"sealgw-0.sealgw.monitoring.svc.cluster.local",
    b"example.com.",
    b"a_b",
    b"_dmarc.example.com",
    b"ci--runner.internal",
    b"xn--bcher-kva.example",
    b"XN--strae-oqa.de:80",
    b"127.0.0.1",
    b"10.0.0.255:65535",
    b"[::1]",
    b"[2001:db8::7]:9090",
    b"[::ffff:192.0.2.1]",
    b"a" * 63 + b".com",
    b"a." * 126 + b"b",
    b"%2Frun%2Fsealgw.sock",
    b"%41.example:80",
    b"%2F" * 21 + b".example",
]

BAD_HOSTS = {
    b"": "it is empty",
    b"a..b": "not a valid host name",
    b"-a.b": "not a valid host name",
    b"a-.b": "not a valid host name",
    b".a": "not a valid host name",
    b"a" * 64 + b".com": "not a valid host name",
    b"a." * 127 + b"b": "longer than 253",
    b"a" * 300: "longer than 260 characters",
    b"xn--zz": "xn-- is not a valid international name",
    b"xn--": "not a valid host name",
    b"xn--ls8h.example": "xn-- is not a valid international name",
    b"[::1": "no closing bracket",
    b"[::1]x": "only a port may follow",
    b"[fe80::1%25eth0]": "not a valid IPv6 address",
    b"[v1.fe]": "not a valid IPv6 address",
    b"[1::2::3]": "not a valid IPv6 address",
    b"::1": "must be in brackets",
    b"host:99999": "port is not a number from 1 to 65535",
    b"host:0": "port is not a number from 1 to 65535",
    b"host:abc": "port is not a number from 1 to 65535",
    b"host:": "port is not a number from 1 to 65535",
    b"host:+80": "port is not a number from 1 to 65535",
    b":80": "no host name",
    b"me@gateway": "user information",
    b"user:pw@host:80": "user information",
    b"a b": "spaces or control characters",
    b"a\tb": "spaces or control characters",
    b"a\x00b": "spaces or control characters",
    b"a\x7fb": "spaces or control characters",
    b"caf\xc3\xa9.example": "not ASCII",
    b"\xff\xfe": "not ASCII",
    b"%zz.example": "not a valid host name",
    b"%4.example": "not a valid host name",
    b"a" + b"%2F" * 21 + b".example": "a label is longer than 63 characters",
    b"a,b": "not a valid host name",
    b"a/b": "not a valid host name",
    b"1.2.3.256": "not a valid IPv4 address",
    b"01.2.3.4": "not a valid IPv4 address",
    b"1.2.3": "not a valid IPv4 address",
    b"example.123": "not a valid IPv4 address",
}


class HostGrammarTests(SynchronousTestCase):
    """
    What a valid Host is (L{sealgw.web._host}).
    """

    def test_accepted(self) -> None:
        for value in GOOD_HOSTS:
            self.assertIsNone(host_problem(value), value)

    def test_refused_with_a_reason(self) -> None:
        for value, reason in BAD_HOSTS.items():
            problem = host_problem(value)
            assert problem is not None, value
            self.assertIn(reason, problem, value)
            # The reason never repeats the value (it may hold a password).
            if len(value) > 3:
                self.assertNotIn(value.decode("latin-1"), problem)

    @settings(derandomize=True, deadline=None, max_examples=1000)
    @given(st.binary(max_size=300) | st.from_regex(rb"\A[a-zA-Z0-9_.:%\[\]-]{0,80}\Z"))
    @example(b"a..b")
    @example(b"a" * 64)
    def test_whatever_is_accepted_can_be_routed(self, value: bytes) -> None:
        """
        The crash that made this grammar necessary: Werkzeug binds its URL
        map to the request's host name and fails on some (C{a..b}, a label
        over 63 characters).  No host that passes gets there.
        """
        if host_problem(value) is None:
            Map().bind(value.decode("ascii"))


class HeadFramingTests(EdgeCase):
    """
    Heads RFC 9112 says to refuse, refused with 400 and a closed connection
    before anything routes them; and the heads close to them still served.
    """

    def refused(self, raw: bytes, reason: bytes, kind: str = "push+ops") -> bytes:
        connection = Connection(self.factories[kind])
        connection.send(raw)
        answer = connection.take()
        self.assertEqual(status_of(answer), 400, answer)
        self.assertIn(reason, body_of(answer))
        self.assertEqual(header_of(answer, b"connection"), b"close")
        self.assertFalse(connection.open, raw)
        self.assertEqual(self.access_lines()[-1]["status"], 400)
        self.assertEqual(self.access_lines()[-1]["route"], "unmatched")
        self.assertNothingAlarming()
        return answer

    def served(self, raw: bytes, status: int = 200, kind: str = "push+ops") -> Connection:
        connection = Connection(self.factories[kind])
        connection.send(raw)
        answer = connection.take()
        self.assertEqual(status_of(answer), status, answer)
        return connection

    def setUp(self) -> None:
        super().setUp()
        self.factories = self.build()

    def test_bad_host_on_every_listener(self) -> None:
        for kind in self.factories:
            for host in (b"a..b", b"a" * 300, b"-a.b", b"host:99999", b"[::1"):
                self.refused(
                    b"GET /metrics HTTP/1.1\r\nHost: %s\r\n\r\n" % host,
                    b"bad Host header: ",
                    kind,
                )
        self.assertEqual(
            self.metric(
                "sealgw_http_requests_total",
                route="unmatched",
                method="GET",
                status="400",
                tenant="",
            ),
            15.0,
        )

    def test_good_hosts_are_served(self) -> None:
        for host in GOOD_HOSTS:
            self.served(b"GET /metrics HTTP/1.1\r\nHost: %s\r\n\r\n" % host)

    def test_two_hosts(self) -> None:
        self.refused(
            b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nHOST: gateway\r\n\r\n",
            b"more than one Host header",
        )

    def test_no_host(self) -> None:
        self.refused(
            b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n", b"must have a Host header"
        )
        self.refused(b"GET /metrics HTTP/1.1\r\n\r\n", b"must have a Host header")
        # HTTP/1.0 may leave it out.
        connection = Connection(self.factories["push+ops"])
        connection.send(b"GET /metrics HTTP/1.0\r\n\r\n")
        self.assertTrue(connection.take().startswith(b"HTTP/1.0 200 OK\r\n"))

    def test_obsolete_line_folding(self) -> None:
        for fold in (b" ", b"\t"):
            self.refused(
                b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nX-A: b\r\n%sc\r\n\r\n" % fold,
                b"obsolete line folding",
            )
        # A Host folded onto a continuation line cannot slip through either.
        self.refused(
            b"GET /metrics HTTP/1.1\r\nHost:\r\n gateway\r\n\r\n", b"obsolete line folding"
        )

    def test_transfer_codings(self) -> None:
        head = b"POST /api/v1/push HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: %s\r\n\r\n"
        for coding in (b"identity", b"gzip", b"gzip, chunked", b"chunked, gzip", b"x"):
            self.refused(head % coding, b"only Transfer-Encoding accepted is chunked", "push")
        self.refused(
            b"POST /api/v1/push HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.0 request cannot have a Transfer-Encoding",
            "push",
        )
        # Chunked, in any case, is read as before (remote write is not
        # enabled here).
        self.served(
            head.replace(b"%s", b"Chunked") + b"0\r\n\r\n", 404, "push"
        )

    def test_absolute_target(self) -> None:
        """
        A URL as the request target is served as its path when its host is
        C{Host}'s (RFC 9112 3.2.2: a server must accept the absolute form).
        """
        connection = self.served(
            b"GET http://Gateway:9090/metrics HTTP/1.1\r\nHost: gateway:9090\r\n\r\n"
        )
        self.assertTrue(connection.open)
        self.served(b"GET https://gateway?x=1 HTTP/1.1\r\nHost: gateway\r\n\r\n", 404)
        self.assertEqual(self.access_lines()[-1]["path"], "/")
        self.refused(
            b"GET http://elsewhere/metrics HTTP/1.1\r\nHost: gateway\r\n\r\n",
            b"name different hosts",
        )
        self.refused(
            b"GET http://a..b/metrics HTTP/1.1\r\nHost: a..b\r\n\r\n",
            b"bad host in the request target",
        )
        self.refused(
            b"GET ftp://gateway/metrics HTTP/1.1\r\nHost: gateway\r\n\r\n",
            b"not an http(s) one",
        )

    def test_userinfo_is_refused_and_not_logged(self) -> None:
        self.refused(
            b"GET http://me:s3cret@gateway/metrics HTTP/1.1\r\nHost: gateway\r\n\r\n",
            b"user information",
        )
        self.refused(
            b"GET /metrics HTTP/1.1\r\nHost: me:s3cret@gateway\r\n\r\n",
            b"user information",
        )
        self.assertNotIn("s3cret", repr(self.events))

    def test_each_request_on_a_connection_is_judged(self) -> None:
        connection = self.served(request(b"GET", b"/metrics"))
        connection.send(request(b"GET", b"/metrics"))
        self.assertEqual(status_of(connection.take()), 200)
        connection.send(b"GET /metrics HTTP/1.1\r\nHost: a..b\r\n\r\n")
        self.assertEqual(status_of(connection.take()), 400)
        self.assertFalse(connection.open)

    def test_pipelined_bad_head_after_a_good_one(self) -> None:
        connection = Connection(self.factories["push+ops"])
        connection.send(request(b"GET", b"/metrics") + b"GET /metrics HTTP/1.1\r\n\r\n")
        answer = connection.take()
        self.assertEqual(status_of(answer), 200)
        self.assertIn(b"HTTP/1.1 400 Bad Request", answer)
        self.assertIn(b"must have a Host header", answer)
        self.assertFalse(connection.open)


class HeaderTimeoutTests(EdgeCase):
    def test_slow_head_is_cut_at_the_deadline(self) -> None:
        """
        A client sending its head a byte every few seconds keeps resetting
        the idle timeout, but not the head deadline.
        """
        factory = self.build()["push"]
        connection = Connection(factory)
        head = request(b"POST", b"/api/v1/push")
        for i in range(4):
            connection.send(head[i : i + 1])
            self.clock.advance(2.4)
        self.assertTrue(connection.open)
        connection.send(head[4:5])
        self.clock.advance(0.5)
        answer = connection.take()
        self.assertEqual(status_of(answer), 408)
        self.assertIn(b"within 10s", body_of(answer))
        self.assertFalse(connection.open)
        [line] = self.access_lines()
        self.assertEqual(line["status"], 408)
        # The deadline fired at 10s, seen by a clock advanced to 10.1s.
        self.assertTrue(10000.0 <= line["latency_ms"] <= 10100.0, line["latency_ms"])
        self.assertEqual(
            self.metric("sealgw_http_header_timeouts_total", listener="tcp:18080"), 1.0
        )

    def test_silent_connection_is_closed_quietly(self) -> None:
        factory = self.build(header_timeout=3.0)["push"]
        connection = Connection(factory)
        self.clock.advance(2.9)
        self.assertTrue(connection.open)
        self.clock.advance(0.1)
        self.assertFalse(connection.open)
        self.assertEqual(connection.take(), b"")
        self.assertEqual(self.access_lines(), [])
        self.assertEqual(
            self.metric("sealgw_http_header_timeouts_total", listener="tcp:18080"), 1.0
        )

    def test_kept_alive_connection_rearms_for_each_head(self) -> None:
        factory = self.build()["push+ops"]
        connection = Connection(factory)
        self.clock.advance(5)
        connection.send(request(b"GET", b"/metrics"))
        self.assertEqual(status_of(connection.take()), 200)
        # Waiting between requests is the idle timeout's business.
        self.clock.advance(100)
        self.assertTrue(connection.open)
        connection.send(b"GET /metrics HTTP/1.1\r\n")
        self.clock.advance(9.9)
        connection.send(b"Host: gateway\r\n\r\n")
        self.assertEqual(status_of(connection.take()), 200)
        # The next head starts its own deadline.
        self.clock.advance(50)
        connection.send(b"GET /metrics HTTP/1.1\r\n")
        self.clock.advance(10)
        self.assertEqual(status_of(connection.take()), 408)
        self.assertFalse(connection.open)

    def test_pipelined_partial_head_has_a_deadline(self) -> None:
        factory = self.build()["push+ops"]
        connection = Connection(factory)
        connection.send(request(b"GET", b"/metrics") + b"GET /metrics HTTP/1.1\r\nHo")
        self.assertEqual(status_of(connection.take()), 200)
        self.clock.advance(10)
        self.assertEqual(status_of(connection.take()), 408)

    def test_body_is_not_under_the_head_deadline(self) -> None:
        factory = self.build()["push"]
        connection = Connection(factory)
        connection.send(
            b"POST /api/v1/push HTTP/1.1\r\nHost: gateway\r\nContent-Length: 20\r\n\r\n"
        )
        for _ in range(10):
            self.clock.advance(5)
            connection.send(b"ab")
        answer = connection.take()
        # The whole body came in 50s; remote write is not enabled here.
        self.assertEqual(status_of(answer), 404, answer)
        self.assertTrue(connection.open)

    def test_idle_timeout(self) -> None:
        factory = self.build(idle_timeout=30.0)["push+ops"]
        connection = Connection(factory)
        connection.send(request(b"GET", b"/metrics"))
        self.assertEqual(status_of(connection.take()), 200)
        self.clock.advance(29)
        self.assertTrue(connection.open)
        self.clock.advance(1)
        self.assertFalse(connection.open)


class ConnectionLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.metrics = GatewayMetrics()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.factory = ConnectionLimit(
            Factory.forProtocol(Protocol),
            2,
            "tcp:8080",
            self.metrics.connections_open,
            self.metrics.connections_refused,
        )

    def metric(self, name: str) -> Optional[float]:
        value: Optional[float] = self.metrics.registry.get_sample_value(
            name, {"listener": "tcp:8080"}
        )
        return value

    def test_cap(self) -> None:
        first, second = Connection(self.factory), Connection(self.factory, 40001)
        self.assertFalse(first.refused or second.refused)
        self.assertEqual(self.metric("sealgw_connections_open"), 2.0)
        for port in range(40002, 40007):
            self.assertTrue(Connection(self.factory, port).refused)
        self.assertEqual(self.metric("sealgw_connections_refused_total"), 5.0)
        first.close()
        self.assertEqual(self.metric("sealgw_connections_open"), 1.0)
        third = Connection(self.factory, 40010)
        self.assertFalse(third.refused)
        self.assertEqual(self.metric("sealgw_connections_open"), 2.0)

    def test_logs_when_refusing_starts_and_stops(self) -> None:
        first, _ = Connection(self.factory), Connection(self.factory, 40001)
        for port in range(40002, 40102):
            Connection(self.factory, port)
        first.close()
        said = [e["log_format"] for e in self.events if "log_format" in e]
        self.assertEqual(len(said), 2, said)
        self.assertIn("closing new connections", said[0])
        self.assertIn("accepting connections again", said[1])
        self.assertEqual(self.events[-1]["refused"], 100)

    def test_listener_factory_is_limited(self) -> None:
        """
        Every configured listener is served through its limit.
        """
        config = Config(
            source="test",
            listeners=(ListenerConfig(endpoint="tcp:18080", max_connections=3),),
            admin=ListenerConfig(endpoint="tcp:19090", max_connections=1),
        )
        service = build_gateway(
            config, Clock(), registry=CollectorRegistry(), install_signal_handlers=False
        )
        limits = [li.factory for li in service.listeners]
        self.assertEqual(
            [(f.max_connections, f.listener) for f in limits],
            [(3, "tcp:18080"), (1, "tcp:19090")],
        )


class UpstreamStatusLabelTests(SynchronousTestCase):
    def test_status_label_is_bounded(self) -> None:
        """
        An upstream answering nonsense statuses (Twisted takes any integer)
        cannot add series to the upstream latency histogram.
        """
        body = Body(data=b"", truncated=False)
        labels = {
            response_outcome(status, Headers(), body, 0.0).label
            for status in (-1, 0, 99, 600, 999, 12345)
        }
        self.assertEqual(labels, {"invalid"})
        self.assertEqual(response_outcome(503, Headers(), body, 0.0).label, "503")


class ListenerConfigTests(SynchronousTestCase):
    def load(self, listener: str) -> Config:
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            f.write("listeners:\n  - endpoint: tcp:8080\n" + listener)
        return load(path)

    def problems(self, listener: str) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.load(listener)
        return [p.split(": ", 1)[1] for p in caught.exception.problems]

    def test_defaults(self) -> None:
        [listener] = self.load("").listeners
        self.assertEqual(
            (
                listener.max_connections,
                listener.max_header_size,
                listener.header_timeout,
                listener.idle_timeout,
            ),
            (1024, 65536, 10.0, 120.0),
        )

    def test_keys(self) -> None:
        [listener] = self.load(
            "    max_connections: 50\n    max_header_size: 16KiB\n"
            "    header_timeout: 2500ms\n    idle_timeout: 1m\n"
        ).listeners
        self.assertEqual(
            (
                listener.max_connections,
                listener.max_header_size,
                listener.header_timeout,
                listener.idle_timeout,
            ),
            (50, 16384, 2.5, 60.0),
        )

    def test_bad_values(self) -> None:
        self.assertEqual(
            self.problems(
                "    max_connections: 0\n    max_header_size: 100B\n"
                "    header_timeout: 0s\n    idle_timeout: soon\n"
            ),
            [
                "listeners[0].max_header_size: must be at least 1024 bytes (1KiB)",
                "listeners[0].max_connections: must be at least 1",
                "listeners[0].header_timeout: must be longer than zero",
                "listeners[0].idle_timeout: 'soon' is not a duration (write it like 30s, 5m "
                "or 250ms)",
            ],
        )
