"""
End to end with the OpenTelemetry Python SDK's OTLP/gRPC exporters
(grpcio underneath, as in every SDK deployment): traces, metrics and logs
through an C{otlp-grpc} listener to a recording upstream on loopback, with
the same identities, tenancy and refusals as OTLP/HTTP, over TLS too.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Optional

import grpc
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource as OTelResource
from opentelemetry.sdk.trace.export import SpanExportResult
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.server import NOT_DONE_YET

from sealgw.web.grpc import GrpcSite
from tests.certs import CertificateAuthority
from tests.e2e_support import (
    TEST_TIMEOUT,
    Gateway,
    ScriptedUpstream,
    answer,
    serve,
    start_gateway,
    wait_until,
)
from tests.test_e2e_otlp import make_spans

TOKENS = [
    {"name": "svc-a", "token": "tok-a", "tenants": ["team-a"]},
    {
        "name": "svc-multi",
        "token_sha256": hashlib.sha256(b"tok-multi").hexdigest(),
        "tenants": ["team-a", "team-b"],
    },
    {
        "name": "svc-slow",
        "token": "tok-slow",
        "tenants": ["team-s"],
        "limits": {"requests_per_second": 0.01, "burst": 1},
    },
]

LOOPBACK = "tcp:0:interface=127.0.0.1"
ROUTES = {
    "otlp_traces": {"upstream": "tempo", "path": "/v1/traces"},
    "otlp_metrics": {"upstream": "tempo", "path": "/otlp/v1/metrics"},
    "otlp_logs": {"upstream": "tempo", "path": "/otlp/v1/logs"},
}


def _quiet(test: TestCase) -> None:
    # The exporters log every refusal as an error; here they are expected.
    for name in (
        "opentelemetry.exporter.otlp.proto.grpc.exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ):
        test.patch(logging.getLogger(name), "disabled", True)


def make_metrics() -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=OTelResource.create({"service.name": "checkout"}), metric_readers=[reader]
    )
    counter = provider.get_meter("e2e").create_counter("carts_total")
    counter.add(3, {"shop": "north"})
    counter.add(4, {"shop": "south"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def make_logs() -> Any:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=OTelResource.create({"service.name": "checkout"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.get_logger("e2e").emit(body="cart emptied", severity_text="INFO")
    provider.shutdown()
    return memory.get_finished_logs()


class GrpcGatewayCase(TestCase):
    """
    A gateway with an HTTP listener and an C{otlp-grpc} one, relaying the
    three OTLP routes to a recording upstream.
    """

    timeout = TEST_TIMEOUT

    upstream_script: tuple[Any, ...] = ()

    async def setUp(self) -> None:  # type: ignore[override]
        _quiet(self)
        self.upstream = ScriptedUpstream(
            *(self.upstream_script or (answer(200, ExportTraceServiceResponse().SerializeToString()),))
        )
        server = serve(self, self.upstream)
        self.gateway: Gateway = await start_gateway(
            self,
            {
                "listeners": [
                    {"endpoint": LOOPBACK, "ops": True},
                    {"endpoint": LOOPBACK, "protocol": "otlp-grpc"},
                ],
                "upstreams": {"tempo": {"url": server.url}},
                "push": ROUTES,
                "limits": {"max_body": "64KiB", "max_decompressed": "256KiB"},
            },
            TOKENS,
        )
        port = self.gateway.service.listeners[1].port.getHost().port
        self.target = f"127.0.0.1:{port}"

    def exporter(self, kind: type, token: Optional[str] = "tok-a", **more: Any) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        headers.update(more.pop("headers", {}))
        exporter = kind(
            endpoint=self.target, insecure=True, headers=headers, timeout=5, **more
        )
        self.addCleanup(exporter.shutdown)
        return exporter

    async def export_spans(self, token: Optional[str] = "tok-a", **more: Any) -> Any:
        exporter = self.exporter(OTLPSpanExporter, token, **more)
        return await deferToThread(exporter.export, make_spans())

    def traces(self) -> list[ExportTraceServiceRequest]:
        out = []
        for received in self.upstream.received:
            if received.path == b"/v1/traces":
                out.append(ExportTraceServiceRequest.FromString(received.body))
        return out

    def call(
        self,
        message: bytes,
        metadata: tuple[tuple[str, str], ...] = (("authorization", "Bearer tok-a"),),
        method: str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        compression: Optional[grpc.Compression] = None,
    ) -> Any:
        """
        One call with grpcio itself, so that the code, the message and the
        trailers show: C{(code, details or response, trailers)}.
        """

        def blocking() -> Any:
            with grpc.insecure_channel(self.target) as channel:
                stub = channel.unary_unary(method)
                try:
                    response, call = stub.with_call(
                        message, metadata=metadata, timeout=10, compression=compression
                    )
                except grpc.RpcError as e:
                    return e.code(), e.details(), dict(e.trailing_metadata() or ())
                return grpc.StatusCode.OK, response, dict(call.trailing_metadata() or ())

        return deferToThread(blocking)

    def spans_message(self) -> bytes:
        request = ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.add(name="s")
        return request.SerializeToString()


class GrpcExportTests(GrpcGatewayCase):
    async def test_traces(self) -> None:
        result = await self.export_spans()
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [received] = self.upstream.received
        self.assertEqual(received.path, b"/v1/traces")
        self.assertEqual(received.header("X-Scope-OrgID"), "team-a")
        self.assertEqual(received.header("Content-Type"), "application/x-protobuf")
        self.assertIsNone(received.header("Authorization"))
        [request] = self.traces()
        spans = {
            span.name: span
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        }
        self.assertEqual(set(spans), {"GET /cart", "SELECT carts"})
        self.assertEqual(spans["SELECT carts"].parent_span_id, spans["GET /cart"].span_id)

    async def test_gzip(self) -> None:
        """
        A message the client compressed (C{grpc-encoding: gzip}) is relayed
        as gzip, as OTLP/HTTP's gzip is.
        """
        result = await self.export_spans(compression=grpc.Compression.Gzip)
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [received] = self.upstream.received
        self.assertEqual(received.header("Content-Encoding"), "gzip")
        import gzip

        request = ExportTraceServiceRequest.FromString(gzip.decompress(received.body))
        self.assertEqual(len(request.resource_spans[0].scope_spans[0].spans), 2)

    async def test_deflate(self) -> None:
        result = await self.export_spans(compression=grpc.Compression.Deflate)
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [request] = self.traces()
        self.assertEqual(len(request.resource_spans[0].scope_spans[0].spans), 2)

    async def test_metrics(self) -> None:
        exporter = self.exporter(OTLPMetricExporter)
        result = await deferToThread(exporter.export, make_metrics())
        self.assertEqual(result.name, "SUCCESS")
        [received] = self.upstream.received
        self.assertEqual(received.path, b"/otlp/v1/metrics")
        self.assertEqual(received.header("X-Scope-OrgID"), "team-a")
        request = ExportMetricsServiceRequest.FromString(received.body)
        [metric] = request.resource_metrics[0].scope_metrics[0].metrics
        self.assertEqual(metric.name, "carts_total")
        self.assertEqual(sorted(p.as_int for p in metric.sum.data_points), [3, 4])

    async def test_logs(self) -> None:
        exporter = self.exporter(OTLPLogExporter)
        result = await deferToThread(exporter.export, make_logs())
        self.assertEqual(result.name, "SUCCESS")
        [received] = self.upstream.received
        self.assertEqual(received.path, b"/otlp/v1/logs")
        request = ExportLogsServiceRequest.FromString(received.body)
        [record] = request.resource_logs[0].scope_logs[0].log_records
        self.assertEqual(record.body.string_value, "cart emptied")

    async def test_multi_tenant_identity_chooses(self) -> None:
        result = await self.export_spans("tok-multi", headers={"x-scope-orgid": "team-b"})
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [received] = self.upstream.received
        self.assertEqual(received.header_values("X-Scope-OrgID"), ["team-b"])


class GrpcRefusalTests(GrpcGatewayCase):
    """
    Refusals as OTLP/HTTP has them, as gRPC codes.
    """

    async def test_wrong_token(self) -> None:
        code, details, _ = await self.call(
            self.spans_message(), (("authorization", "Bearer nope"),)
        )
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(details, "the token is not recognised")
        code, details, _ = await self.call(self.spans_message(), ())
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("Authorization: Bearer token", details)
        self.assertEqual(self.upstream.received, [])

    async def test_basic_in_metadata(self) -> None:
        import base64

        basic = base64.b64encode(b"team-a:tok-a").decode("ascii")
        code, _, _ = await self.call(self.spans_message(), (("authorization", f"Basic {basic}"),))
        self.assertEqual(code, grpc.StatusCode.OK)
        [received] = self.upstream.received
        self.assertEqual(received.header("X-Scope-OrgID"), "team-a")

    async def test_foreign_tenant(self) -> None:
        code, details, _ = await self.call(
            self.spans_message(),
            (("authorization", "Bearer tok-a"), ("x-scope-orgid", "team-b")),
        )
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("team-b", details)
        self.assertEqual(self.upstream.received, [])

    async def test_exporter_refused(self) -> None:
        """
        The SDK's exporter gives up at once on a refusal it must not retry.
        """
        result = await self.export_spans("tok-a", headers={"x-scope-orgid": "team-b"})
        self.assertEqual(result, SpanExportResult.FAILURE)
        self.assertEqual(self.upstream.received, [])

    async def test_not_protobuf(self) -> None:
        code, details, _ = await self.call(b"\xff\xff\xff")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(details, "otlp traces: body is not a valid protobuf request")

    async def test_too_large(self) -> None:
        code, details, trailers = await self.call(b"\x0a" + b"\x00" * (70 * 1024))
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(details, "message is larger than the limit of 65536 bytes")
        # Not to be retried: no RetryInfo.
        self.assertNotIn("google.rpc.retryinfo-bin", trailers)

    async def test_bomb(self) -> None:
        """
        A message that inflates past C{max_decompressed} is refused as
        OTLP/HTTP's is, a piece past the limit.
        """
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.name = "x" * (1024 * 1024)
        code, details, _ = await self.call(
            request.SerializeToString(), compression=grpc.Compression.Gzip
        )
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(details, "gzip: body decompresses to more than the limit of 262144 bytes")
        self.assertEqual(self.upstream.received, [])

    async def test_over_rate_limit(self) -> None:
        """
        Over its rate: RESOURCE_EXHAUSTED with a RetryInfo, which the
        exporters read as "retry after this long".
        """
        slow = (("authorization", "Bearer tok-slow"),)
        code, _, _ = await self.call(self.spans_message(), slow)
        self.assertEqual(code, grpc.StatusCode.OK)
        code, details, trailers = await self.call(self.spans_message(), slow)
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        from google.rpc.error_details_pb2 import RetryInfo

        info = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        self.assertGreaterEqual(info.retry_delay.seconds, 1)
        self.assertEqual(len(self.upstream.received), 1)

    async def test_unknown_method(self) -> None:
        code, details, _ = await self.call(b"", method="/some.Service/Method")
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)
        self.assertIn("/some.Service/Method", details)


class GrpcUpstreamOutcomeTests(TestCase):
    """
    What the upstream said, as gRPC says it: its 5xx as UNAVAILABLE with
    its Retry-After as RetryInfo, its 4xx as a code the client does not
    retry, its partial_success passed on.
    """

    timeout = TEST_TIMEOUT

    async def start(self, *script: Any) -> None:
        self.upstream = ScriptedUpstream(*script)
        server = serve(self, self.upstream)
        self.gateway = await start_gateway(
            self,
            {
                "listeners": [
                    {"endpoint": LOOPBACK, "ops": True},
                    {"endpoint": LOOPBACK, "protocol": "otlp-grpc"},
                ],
                "upstreams": {"tempo": {"url": server.url, "retry": {"attempts": 1}}},
                "push": ROUTES,
            },
            TOKENS,
        )
        port = self.gateway.service.listeners[1].port.getHost().port
        self.target = f"127.0.0.1:{port}"

    call = GrpcGatewayCase.call
    spans_message = GrpcGatewayCase.spans_message

    async def test_upstream_unavailable(self) -> None:
        await self.start(answer(503, b"overloaded", {"Retry-After": "7"}))
        code, details, trailers = await self.call(self.spans_message())
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("upstream unavailable", details)
        from google.rpc.error_details_pb2 import RetryInfo

        info = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        self.assertEqual(info.retry_delay.seconds, 7)

    async def test_upstream_rejects(self) -> None:
        await self.start(answer(400, b"bad span"))
        code, details, _ = await self.call(self.spans_message())
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("upstream rejected the data", details)
        self.assertIn("bad span", details)

    async def test_partial_success(self) -> None:
        response = ExportTraceServiceResponse()
        response.partial_success.rejected_spans = 2
        response.partial_success.error_message = "spans too old"
        await self.start(answer(200, response.SerializeToString()))
        code, body, _ = await self.call(self.spans_message())
        self.assertEqual(code, grpc.StatusCode.OK)
        answered = ExportTraceServiceResponse.FromString(body[:] if body else b"")
        self.assertEqual(answered.partial_success.rejected_spans, 2)
        self.assertEqual(answered.partial_success.error_message, "spans too old")


class GrpcTLSTests(TestCase):
    """
    An C{otlp-grpc} listener with TLS: the SDK's exporter with a trust
    root, and a client certificate as the identity.
    """

    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        _quiet(self)
        self.ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        server = self.ca.issue("server")
        self.client = self.ca.issue("svc-cert", server=False, dns=(), ips=())
        self.upstream = ScriptedUpstream(answer(200, b""))
        upstream = serve(self, self.upstream)
        self.gateway = await start_gateway(
            self,
            {
                "listeners": [
                    {"endpoint": LOOPBACK, "ops": True},
                    {
                        "endpoint": LOOPBACK,
                        "protocol": "otlp-grpc",
                        "tls": {
                            "certificate": server.certificate,
                            "key": server.key,
                            "client_certificates": "optional",
                            "client_ca": self.ca.certificate,
                        },
                    },
                ],
                "auth": {
                    "client_certificates": {
                        "identities": {"svc-cert": {"tenants": ["team-c"]}}
                    }
                },
                "upstreams": {"tempo": {"url": upstream.url}},
                "push": ROUTES,
            },
            TOKENS,
        )
        port = self.gateway.service.listeners[1].port.getHost().port
        self.target = f"localhost:{port}"

    def closed_after(self, exporter: Any) -> None:
        """
        Shut C{exporter} down when the test ends, and wait for the
        gateway to see its connection close: grpcio closes it from a
        thread of its own, which could otherwise land after the gateway
        has stopped and leave the reactor unclean.
        """
        site = next(s for s in self.gateway.service.sites if isinstance(s, GrpcSite))

        async def closed() -> None:
            await wait_until(
                lambda: succeed(True if not list(site._connections) else None),
                what="the gRPC client's connection to close",
                timeout=10,
            )

        self.addCleanup(closed)
        self.addCleanup(exporter.shutdown)

    async def test_bearer_over_tls(self) -> None:
        with open(self.ca.certificate, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        exporter = OTLPSpanExporter(
            endpoint=self.target,
            credentials=credentials,
            headers={"authorization": "Bearer tok-a"},
            timeout=5,
        )
        self.closed_after(exporter)
        result = await deferToThread(exporter.export, make_spans())
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [received] = self.upstream.received
        self.assertEqual(received.header("X-Scope-OrgID"), "team-a")

    async def test_client_certificate(self) -> None:
        with open(self.ca.certificate, "rb") as f:
            root = f.read()
        with open(self.client.key, "rb") as f:
            key = f.read()
        with open(self.client.certificate, "rb") as f:
            chain = f.read()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=chain
        )
        exporter = OTLPSpanExporter(endpoint=self.target, credentials=credentials, timeout=5)
        self.closed_after(exporter)
        result = await deferToThread(exporter.export, make_spans())
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [received] = self.upstream.received
        self.assertEqual(received.header("X-Scope-OrgID"), "team-c")


class GrpcDrainTests(TestCase):
    """
    A drain with a real grpcio client: the call in flight when SIGTERM's
    drain begins is answered, then the gateway stops.
    """

    timeout = TEST_TIMEOUT

    async def test_call_in_flight_answered(self) -> None:
        held: list[Any] = []

        def hold(request: Any) -> Any:
            held.append(request)
            return NOT_DONE_YET

        upstream = ScriptedUpstream(hold)
        server = serve(self, upstream)
        gateway = await start_gateway(
            self,
            {
                "listeners": [
                    {"endpoint": LOOPBACK, "ops": True},
                    {"endpoint": LOOPBACK, "protocol": "otlp-grpc"},
                ],
                "upstreams": {"tempo": {"url": server.url}},
                "push": ROUTES,
                "drain_grace": "10s",
            },
            TOKENS,
        )
        self.target = f"127.0.0.1:{gateway.service.listeners[1].port.getHost().port}"
        call = GrpcGatewayCase.call(self, GrpcGatewayCase.spans_message(self))  # type: ignore[arg-type]
        await upstream.arrived()
        stopped = gateway.service.stopService()
        # The drain waits for the call.
        await deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(stopped.called)
        [request] = held
        request.setResponseCode(200)
        request.write(ExportTraceServiceResponse().SerializeToString())
        request.finish()
        code, _, _ = await call
        self.assertEqual(code, grpc.StatusCode.OK)
        await stopped
