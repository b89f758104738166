"""
What the gateway's site leaves undone on a request's path, for speed:
no form parsing, no audit line for an admitted request at info.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from sealgw.build import build_gateway
from sealgw.config import Config, ListenerConfig, LogConfig
from sealgw.web import GatewayMetrics, GatewaySite
from sealgw.web._errors import answer_error
from tests.e2e_support import raw_http


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def render_POST(self, request: Any) -> bytes:
        self.seen.append((dict(request.args), request.content.read()))
        return b"ok"


class FormTests(SynchronousTestCase):
    def test_form_body_not_parsed(self) -> None:
        """
        A form-encoded POST body stays the body: nothing parses its
        C{Content-Type} or fills C{request.args} from it (query-string
        arguments still are).
        """
        recorder = Recorder()
        site = GatewaySite(recorder, Clock(), GatewayMetrics(CollectorRegistry()), max_body=1024)
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        body = b"query=up&time=1"
        channel.dataReceived(
            b"POST /x?a=1 HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.assertEqual(recorder.seen, [({b"a": [b"1"]}, body)])


class AuditTests(SynchronousTestCase):
    def audit_allowed(self, level: str) -> bool:
        config = Config(
            source="test",
            listeners=(ListenerConfig(endpoint="tcp:18080"),),
            log=LogConfig(level=level),
        )
        service = build_gateway(
            config, Clock(), registry=CollectorRegistry(), install_signal_handlers=False
        )
        gate: Any = None
        for child in service:
            if hasattr(child, "audit"):
                gate = child
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        gate.audit.decision(
            outcome="allowed", reason="ok", route="r", checker="c", identity="i",
            tenant="t", status=200,
        )
        return bool([e for e in events if e.get("audit")])

    def test_admitted_logged_only_at_debug(self) -> None:
        self.assertFalse(self.audit_allowed("info"))
        self.assertTrue(self.audit_allowed("debug"))


class OpsAndPushgatewayTests(SynchronousTestCase):
    def test_metrics_job_is_a_push_on_an_ops_listener(self) -> None:
        """
        On a listener that serves C{/metrics}, C{/metrics/job/...} is still
        a Pushgateway push: it reaches the push routes (and their auth).
        """
        from sealgw.config import FileUpstreamConfig, PushConfig, PushgatewayConfig, RouteConfig

        config = Config(
            source="test",
            listeners=(ListenerConfig(endpoint="tcp:18080", ops=True),),
            upstreams={"files": FileUpstreamConfig(name="files", directory=self.mktemp())},
            push=PushConfig(pushgateway=PushgatewayConfig(route=RouteConfig(upstream="files"))),
        )
        service = build_gateway(
            config, Clock(), registry=CollectorRegistry(), install_signal_handlers=False
        )
        factory = service.listeners[0].factory

        def exchange(raw: bytes) -> bytes:
            transport = StringTransport()
            channel = factory.buildProtocol(None)
            channel.makeConnection(transport)
            channel.dataReceived(raw)
            return transport.value()

        pushed = exchange(b"PUT /metrics/job/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nup 1\n")
        self.assertTrue(pushed.startswith(b"HTTP/1.1 401"), pushed[:80])
        scraped = exchange(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(scraped.startswith(b"HTTP/1.1 200"), scraped[:80])
        self.assertIn(b"sealgw_http_requests", scraped)


class _Status(Resource):
    """
    Answers the status its path names, through the gateway's own error
    answer.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return answer_error(request, int(request.postpath[0]), "as asked")


class ReasonPhraseTests(TestCase):
    """
    Every status the gateway sends carries its reason phrase in the status
    line, those Twisted has none for included (it would send "Unknown
    Status", and clients log the phrase).
    """

    async def test_status_lines(self) -> None:
        site = GatewaySite(_Status(), reactor, GatewayMetrics(CollectorRegistry()), max_body=1024)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        expected = {
            200: b"OK",
            400: b"Bad Request",
            413: b"Request Entity Too Large",
            421: b"Misdirected Request",
            422: b"Unprocessable Entity",
            429: b"Too Many Requests",
            431: b"Request Header Fields Too Large",
            503: b"Service Unavailable",
        }
        for status, phrase in expected.items():
            raw = await raw_http(
                port.getHost().port,
                b"GET /%d HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % status,
            )
            self.assertEqual(raw.split(b"\r\n", 1)[0], b"HTTP/1.1 %d %s" % (status, phrase))
