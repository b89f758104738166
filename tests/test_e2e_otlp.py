"""
End to end with the OpenTelemetry Python SDK's OTLP/HTTP span exporter:
spans go through sealgw to a collector on loopback that decodes them with
opentelemetry-proto, and the tenant the collector sees is the one sealgw
decided, whatever the client claimed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from typing import Any, Optional

import attr
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource as OTelResource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from tests.e2e_support import (
    TEST_TIMEOUT,
    Gateway,
    ScriptedUpstream,
    answer,
    bearer,
    http_client,
    serve,
    start_gateway,
    unix_ns,
)

TOKENS = [
    {"name": "svc-a", "token": "tok-a", "tenants": ["team-a"]},
    {
        "name": "svc-multi",
        "token_sha256": hashlib.sha256(b"tok-multi").hexdigest(),
        "tenants": ["team-a", "team-b"],
    },
]


@attr.define
class Export:
    headers: Headers
    request: ExportTraceServiceRequest

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        return values[-1].decode("latin-1") if values else None

    def spans(self) -> dict[str, Any]:
        return {
            span.name: span
            for resource in self.request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        }


class Collector(Resource):
    """
    An OTLP/HTTP traces receiver: decodes every request it gets (gzip
    included) with opentelemetry-proto, records it, answers 200.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[Export] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = request.content.read()
        if request.getHeader(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        decoded = ExportTraceServiceRequest()
        decoded.ParseFromString(body)
        self.exports.append(Export(request.requestHeaders.copy(), decoded))
        request.setHeader(b"content-type", b"application/x-protobuf")
        return ExportTraceServiceResponse().SerializeToString()


def _attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


def make_spans() -> list[ReadableSpan]:
    provider = TracerProvider(resource=OTelResource.create({"service.name": "checkout"}))
    tracer = provider.get_tracer("e2e")
    parent = tracer.start_span("GET /cart", attributes={"http.method": "GET", "cart.items": 3})
    with_parent = tracer.start_span(
        "SELECT carts",
        attributes={"db.system": "postgresql", "db.cached": False},
        context=_context_of(parent),
    )
    with_parent.end()
    parent.end()
    return [parent, with_parent]  # type: ignore[list-item]


def _context_of(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


class OTLPExporterTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        self.collector = Collector()
        upstream = serve(self, self.collector)
        self.gateway: Gateway = await start_gateway(
            self,
            {
                "upstreams": {"tempo": {"url": upstream.url}},
                "push": {"otlp_traces": {"upstream": "tempo", "path": "/v1/traces"}},
            },
            TOKENS,
        )

    async def export(
        self, headers: dict[str, str], compression: Compression = Compression.NoCompression
    ) -> SpanExportResult:
        exporter = OTLPSpanExporter(
            endpoint=self.gateway.url + "/v1/traces",
            headers=headers,
            timeout=10,
            compression=compression,
        )
        self.addCleanup(exporter.shutdown)
        spans = make_spans()
        result: SpanExportResult = await deferToThread(exporter.export, spans)
        return result

    async def test_spans_arrive_with_the_identitys_tenant(self) -> None:
        result = await self.export({"Authorization": "Bearer tok-a"})
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [export] = self.collector.exports
        self.assertEqual(export.header("X-Scope-OrgID"), "team-a")
        # The client's token is the gateway's business, never the upstream's.
        self.assertIsNone(export.header("Authorization"))
        spans = export.spans()
        self.assertEqual(set(spans), {"GET /cart", "SELECT carts"})
        self.assertEqual(_attributes(spans["GET /cart"]), {"http.method": "GET", "cart.items": 3})
        self.assertEqual(
            _attributes(spans["SELECT carts"]), {"db.system": "postgresql", "db.cached": False}
        )
        self.assertEqual(spans["SELECT carts"].parent_span_id, spans["GET /cart"].span_id)
        self.assertEqual(spans["SELECT carts"].trace_id, spans["GET /cart"].trace_id)
        resource = {
            kv.key: kv.value.string_value
            for kv in export.request.resource_spans[0].resource.attributes
        }
        self.assertEqual(resource["service.name"], "checkout")

    async def test_gzip(self) -> None:
        result = await self.export({"Authorization": "Bearer tok-a"}, Compression.Gzip)
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [export] = self.collector.exports
        self.assertEqual(export.header("Content-Encoding"), "gzip")
        self.assertEqual(set(export.spans()), {"GET /cart", "SELECT carts"})

    async def test_gzip_spelling_normalised(self) -> None:
        """
        A protobuf body relayed as it came carries C{gzip}, however the
        client spelled it.
        """
        body = gzip.compress(ExportTraceServiceRequest().SerializeToString())
        http = http_client(self)
        response = await http.post(
            self.gateway.url + "/v1/traces",
            data=body,
            headers={
                "Content-Type": ["application/x-protobuf"],
                "Content-Encoding": ["X-GZIP"],
                **bearer("tok-a"),
            },
        )
        self.assertEqual(response.code, 200, await response.content())
        [export] = self.collector.exports
        self.assertEqual(export.header("Content-Encoding"), "gzip")

    async def test_own_tenant_named(self) -> None:
        result = await self.export({"Authorization": "Bearer tok-a", "X-Scope-OrgID": "team-a"})
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [export] = self.collector.exports
        self.assertEqual(export.headers.getRawHeaders(b"X-Scope-OrgID"), [b"team-a"])

    async def test_forged_tenant_refused(self) -> None:
        """
        A single-tenant identity naming another tenant is refused with 403
        (the exporter does not retry it) and nothing reaches the upstream.
        """
        # The exporter logs the refusal as an error; it is expected here.
        quiet = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        self.patch(quiet, "disabled", True)
        result = await self.export({"Authorization": "Bearer tok-a", "X-Scope-OrgID": "team-b"})
        self.assertEqual(result, SpanExportResult.FAILURE)
        self.assertEqual(self.collector.exports, [])

        http = http_client(self)
        response = await http.post(
            self.gateway.url + "/v1/traces",
            data=b"",
            headers={
                "Content-Type": ["application/x-protobuf"],
                **bearer("tok-a", X_Scope_OrgID="team-b"),
            },
        )
        body = await response.content()
        self.assertEqual(response.code, 403)
        status = status_pb2.Status()
        status.ParseFromString(body)
        self.assertEqual(status.code, 7)  # PERMISSION_DENIED
        self.assertIn("team-b", status.message)

    async def test_multi_tenant_identity_chooses(self) -> None:
        """
        An identity with several tenants names one; the upstream gets that
        one.  Naming none, or two at once (C{a|b}), is a 400.
        """
        result = await self.export({"Authorization": "Bearer tok-multi", "X-Scope-OrgID": "team-b"})
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [export] = self.collector.exports
        self.assertEqual(export.headers.getRawHeaders(b"X-Scope-OrgID"), [b"team-b"])

        http = http_client(self)
        for tenant, status in [(None, 400), ("team-a|team-b", 400), ("team-c", 403)]:
            more = {"X_Scope_OrgID": tenant} if tenant is not None else {}
            response = await http.post(
                self.gateway.url + "/v1/traces",
                data=ExportTraceServiceRequest().SerializeToString(),
                headers={"Content-Type": ["application/x-protobuf"], **bearer("tok-multi", **more)},
            )
            await response.content()
            self.assertEqual(response.code, status, tenant)
        self.assertEqual(len(self.collector.exports), 1)

    async def test_otlp_json(self) -> None:
        """
        OTLP/JSON with hex ids is answered in JSON and relayed as protobuf
        with the same ids.
        """
        trace_id = "5b8efff798038103d269b633813fc60c"
        span_id = "eee19b7ec3c1b174"
        doc = {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "e2e"},
                            "spans": [
                                {
                                    "traceId": trace_id,
                                    "spanId": span_id,
                                    "name": "json span",
                                    "kind": 2,
                                    "startTimeUnixNano": "1700000000000000000",
                                    "endTimeUnixNano": "1700000000500000000",
                                    "attributes": [{"key": "retries", "value": {"intValue": "2"}}],
                                }
                            ],
                        }
                    ],
                }
            ]
        }
        http = http_client(self)
        response = await http.post(
            self.gateway.url + "/otlp/v1/traces",
            data=json.dumps(doc).encode("utf-8"),
            headers={
                "Content-Type": ["application/json"],
                **bearer("tok-a", X_Scope_OrgID="team-a"),
            },
        )
        body = await response.content()
        self.assertEqual(response.code, 200, body)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(json.loads(body), {})
        [export] = self.collector.exports
        self.assertEqual(export.header("Content-Type"), "application/x-protobuf")
        self.assertEqual(export.header("X-Scope-OrgID"), "team-a")
        span = export.spans()["json span"]
        self.assertEqual(span.trace_id.hex(), trace_id)
        self.assertEqual(span.span_id.hex(), span_id)
        self.assertEqual(span.kind, 2)
        self.assertEqual(span.end_time_unix_nano, 1700000000500000000)
        self.assertEqual(_attributes(span), {"retries": 2})

        # A JSON request that is refused is answered with a JSON Status.
        response = await http.post(
            self.gateway.url + "/v1/traces",
            data=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
            headers={"Content-Type": ["application/json"], **bearer("tok-a")},
        )
        body = await response.content()
        self.assertEqual(response.code, 400, body)
        status = json_format.Parse(body, status_pb2.Status())
        self.assertEqual(status.code, 3)
        self.assertIn("traceId", status.message)
        self.assertEqual(len(self.collector.exports), 1)


class OTLPMetricsAndLogsTests(TestCase):
    """
    The metrics and logs routes, on both paths, relay protobuf with the
    tenant and answer with the signal's own response message.
    """

    timeout = TEST_TIMEOUT

    async def test_routes(self) -> None:
        upstream = ScriptedUpstream(answer(200, b"", {"Content-Type": "application/x-protobuf"}))
        server = serve(self, upstream)
        gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "mimir": {"url": server.url + "/otlp"},
                    "loki": {"url": server.url + "/loki-otlp"},
                },
                "push": {
                    "otlp_metrics": {"upstream": "mimir", "path": "/v1/metrics"},
                    "otlp_logs": {"upstream": "loki", "path": "/v1/logs"},
                },
            },
            TOKENS,
        )
        http = http_client(self)
        metrics = ExportMetricsServiceRequest()
        gauge = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="queue_depth")
        gauge.gauge.data_points.add(as_int=7, time_unix_nano=unix_ns())
        logs = ExportLogsServiceRequest()
        record = logs.resource_logs.add().scope_logs.add().log_records.add()
        record.body.string_value = "payment declined"
        record.time_unix_nano = unix_ns()
        cases: list[tuple[str, Any, Any, bytes]] = [
            ("/v1/metrics", metrics, ExportMetricsServiceResponse, b"/otlp/v1/metrics"),
            ("/otlp/v1/metrics", metrics, ExportMetricsServiceResponse, b"/otlp/v1/metrics"),
            ("/v1/logs", logs, ExportLogsServiceResponse, b"/loki-otlp/v1/logs"),
            ("/otlp/v1/logs", logs, ExportLogsServiceResponse, b"/loki-otlp/v1/logs"),
        ]
        for path, message, response_type, upstream_path in cases:
            upstream.received.clear()
            response = await http.post(
                gateway.url + path,
                data=message.SerializeToString(),
                headers={"Content-Type": ["application/x-protobuf"], **bearer("tok-a")},
            )
            body = await response.content()
            self.assertEqual(response.code, 200, body)
            self.assertEqual(
                response.headers.getRawHeaders(b"content-type"), [b"application/x-protobuf"]
            )
            response_type().ParseFromString(body)
            [received] = upstream.received
            self.assertEqual(received.path, upstream_path)
            self.assertEqual(received.header("X-Scope-OrgID"), "team-a")
            self.assertEqual(received.body, message.SerializeToString())

        # A route that is not configured is a 404, not a relay anywhere.
        response = await http.post(
            gateway.url + "/v1/traces",
            data=b"",
            headers={"Content-Type": ["application/x-protobuf"], **bearer("tok-a")},
        )
        await response.content()
        self.assertEqual(response.code, 404)
