"""
End to end, OTLP/HTTP bodies in every encoding clients send: the
OpenTelemetry Python SDK's C{deflate} export, the Collector's C{zstd},
and bombs of each refused with 413 before anything is relayed.
"""

from __future__ import annotations

import zlib

import zstandard
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.e2e_support import (
    TEST_TIMEOUT,
    ScriptedUpstream,
    answer,
    bearer,
    http_client,
    serve,
    start_gateway,
)
from tests.test_e2e_otlp import make_spans

TOKENS = [{"name": "svc-a", "token": "tok-a", "tenants": ["team-a"]}]


class EncodingTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        self.upstream = ScriptedUpstream(
            answer(200, ExportTraceServiceResponse().SerializeToString())
        )
        server = serve(self, self.upstream)
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {"tempo": {"url": server.url}},
                "push": {"otlp_traces": {"upstream": "tempo", "path": "/v1/traces"}},
                "limits": {"max_body": "1MiB", "max_decompressed": "1MiB"},
            },
            TOKENS,
        )

    def spans(self) -> list[str]:
        names = []
        for received in self.upstream.received:
            request = ExportTraceServiceRequest.FromString(received.body)
            names += [
                span.name
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]
        return names

    async def post(self, body: bytes, encoding: str) -> tuple[int, bytes]:
        response = await http_client(self).post(
            self.gateway.url + "/v1/traces",
            data=body,
            headers={
                "Content-Type": ["application/x-protobuf"],
                "Content-Encoding": [encoding],
                **bearer("tok-a"),
            },
        )
        return response.code, await response.content()

    async def test_sdk_deflate(self) -> None:
        """
        The Python SDK's C{Compression.Deflate} export arrives whole; the
        upstream gets it decoded (not every OTLP receiver reads deflate).
        """
        exporter = OTLPSpanExporter(
            endpoint=self.gateway.url + "/v1/traces",
            headers={"Authorization": "Bearer tok-a"},
            timeout=10,
            compression=Compression.Deflate,
        )
        self.addCleanup(exporter.shutdown)
        result = await deferToThread(exporter.export, make_spans())
        self.assertEqual(result, SpanExportResult.SUCCESS)
        [received] = self.upstream.received
        self.assertIsNone(received.header("Content-Encoding"))
        self.assertEqual(sorted(self.spans()), ["GET /cart", "SELECT carts"])

    async def test_zstd(self) -> None:
        request = ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.add(name="zstd span")
        body = zstandard.ZstdCompressor().compress(request.SerializeToString())
        code, answer_body = await self.post(body, "zstd")
        self.assertEqual(code, 200, answer_body)
        self.assertEqual(self.spans(), ["zstd span"])

    async def test_bombs(self) -> None:
        zeros = b"\x00" * (8 * 1024 * 1024)
        for encoding, body in [
            ("deflate", zlib.compress(zeros, 9)),
            ("zstd", zstandard.ZstdCompressor(level=19).compress(zeros)),
        ]:
            code, answer_body = await self.post(body, encoding)
            self.assertEqual(code, 413, encoding)
            status = status_pb2.Status.FromString(answer_body)
            self.assertIn("more than the limit of 1048576 bytes", status.message)
        self.assertEqual(self.upstream.received, [])

    async def test_truncated(self) -> None:
        request = ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.add(name="x" * 1000)
        body = zstandard.ZstdCompressor().compress(request.SerializeToString())
        code, answer_body = await self.post(body[:-8], "zstd")
        self.assertEqual(code, 400)
        self.assertEqual(status_pb2.Status.FromString(answer_body).message, "zstd: body is truncated")
