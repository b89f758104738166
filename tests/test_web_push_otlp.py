"""
OTLP/HTTP through the shared push path, in memory: the upstream's
C{partial_success} reaches the client, in the request's encoding.
"""

from __future__ import annotations

import json
import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import build_gate
from sealgw.config import (
    AuthConfig,
    Config,
    HTTPUpstreamConfig,
    PushConfig,
    RouteConfig,
    TokenFileConfig,
)
from sealgw.relay import Delivery
from sealgw.testing import MemoryUpstream
from sealgw.web.push import PushRoutes

HEADERS = {"Authorization": "Bearer tok-a-0123456789", "Content-Type": "application/x-protobuf"}


class PartialSuccessTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        tokens = os.path.join(directory, "tokens.yaml")
        with open(tokens, "w") as f:
            f.write("- {name: svc-a, token: tok-a-0123456789, tenants: [team-a]}\n")
        clock = Clock()
        self.upstream = MemoryUpstream("tempo")
        config = Config(
            source="test.yaml",
            listeners=(),
            upstreams={"tempo": HTTPUpstreamConfig(name="tempo", url="http://tempo.test")},
            auth=AuthConfig(token_file=TokenFileConfig(path=tokens)),
            push=PushConfig(otlp_traces=RouteConfig(upstream="tempo", path="/v1/traces")),
        )
        gate = build_gate(config, clock, CollectorRegistry())
        routes = PushRoutes(config, gate, {"tempo": self.upstream}, clock)
        self.stub = StubTreq(routes.resource())
        request = ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.add(name="s")
        self.body = request.SerializeToString()

    def post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        response = self.successResultOf(
            self.stub.post("http://sealgw.test/v1/traces", data=body, headers=headers)
        )
        return response.code, self.successResultOf(self.stub.content(response))

    def upstream_answers(self, rejected: int, message: str, truncated: bool = False) -> None:
        response = ExportTraceServiceResponse()
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
        self.upstream.play(
            Delivery(200, response.SerializeToString(), 1, body_truncated=truncated)
        )

    def test_protobuf(self) -> None:
        self.upstream_answers(3, "spans too old")
        code, body = self.post(HEADERS, self.body)
        self.assertEqual(code, 200)
        answer = ExportTraceServiceResponse.FromString(body)
        self.assertEqual(answer.partial_success.rejected_spans, 3)
        self.assertEqual(answer.partial_success.error_message, "spans too old")

    def test_json(self) -> None:
        self.upstream_answers(1, "one too old")
        code, body = self.post(
            {**HEADERS, "Content-Type": "application/json"}, b'{"resourceSpans": []}'
        )
        self.assertEqual(code, 200)
        self.assertEqual(
            json.loads(body),
            {"partialSuccess": {"rejectedSpans": "1", "errorMessage": "one too old"}},
        )

    def test_nothing_said(self) -> None:
        """
        An upstream answering with no body, a body that is not a response,
        or one cut short, rejected nothing as far as the client is told.
        """
        for delivery in (
            Delivery(204, b"", 1),
            Delivery(200, b"\xff\xff not protobuf", 1),
        ):
            self.upstream.play(delivery)
            code, body = self.post(HEADERS, self.body)
            self.assertEqual((code, body), (200, b""))
        self.upstream_answers(5, "cut", truncated=True)
        self.assertEqual(self.post(HEADERS, self.body), (200, b""))
