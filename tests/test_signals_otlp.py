"""
Tests for L{sealgw.signals.otlp}: OTLP/HTTP requests and responses in
protobuf and OTLP/JSON.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import otlp
from sealgw.signals.errors import DecodeError, UnsupportedMediaType

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
PARENT_ID = "0102030405060708"

TRACES_JSON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "manual"},
                    "spans": [
                        {
                            "traceId": TRACE_ID.upper(),
                            "spanId": SPAN_ID,
                            "parentSpanId": PARENT_ID,
                            "name": "GET /",
                            "kind": 2,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "links": [{"traceId": TRACE_ID, "spanId": PARENT_ID}],
                            "status": {"code": 1},
                        },
                        {
                            "traceId": TRACE_ID,
                            "spanId": PARENT_ID,
                            "parentSpanId": "",
                            "name": "root",
                        },
                    ],
                }
            ],
        }
    ]
}


def traces_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    span = scope.spans.add(name="GET /", kind=2)
    span.trace_id = bytes.fromhex(TRACE_ID)
    span.span_id = bytes.fromhex(SPAN_ID)
    scope.spans.add(name="other")
    return request


def metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    gauge = scope.metrics.add(name="g")
    gauge.gauge.data_points.add(as_double=1.0)
    gauge.gauge.data_points.add(as_int=2)
    scope.metrics.add(name="s").sum.data_points.add(as_int=3)
    scope.metrics.add(name="h").histogram.data_points.add(count=4)
    scope.metrics.add(name="e").exponential_histogram.data_points.add(count=5)
    scope.metrics.add(name="q").summary.data_points.add(count=6)
    scope.metrics.add(name="no data")
    second = request.resource_metrics.add().scope_metrics.add()
    second.metrics.add(name="g2").gauge.data_points.add(as_double=7)
    return request


def logs_request() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    record = scope.log_records.add(severity_number=9)
    record.body.string_value = "hello"
    record.trace_id = bytes.fromhex(TRACE_ID)
    scope.log_records.add()
    request.resource_logs.add().scope_logs.add().log_records.add()
    return request


class ProtobufTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        for signal, request in (
            ("traces", traces_request()),
            ("metrics", metrics_request()),
            ("logs", logs_request()),
        ):
            body = otlp.encode_protobuf(request)
            self.assertEqual(otlp.decode(signal, body, "application/x-protobuf"), request)

    def test_item_count(self) -> None:
        self.assertEqual(otlp.item_count("traces", traces_request()), 2)
        self.assertEqual(otlp.item_count("metrics", metrics_request()), 7)
        self.assertEqual(otlp.item_count("logs", logs_request()), 3)
        self.assertEqual(otlp.item_count("logs", ExportLogsServiceRequest()), 0)

    def test_malformed(self) -> None:
        error = self.assertRaises(
            DecodeError, otlp.decode, "traces", b"\x0a\x05\x12", "application/x-protobuf"
        )
        self.assertEqual(error.message, "otlp traces: body is not a valid protobuf request")

    def test_content_types(self) -> None:
        for content_type in ("text/plain", "application/grpc", "", None, "application/protobuf"):
            error = self.assertRaises(UnsupportedMediaType, otlp.decode, "logs", b"", content_type)
            self.assertEqual(error.status, 415)
        otlp.decode("logs", b"", "Application/X-Protobuf; charset=binary")

    def test_unknown_signal(self) -> None:
        self.assertRaises(ValueError, otlp.decode, "profiles", b"", "application/x-protobuf")


class JsonTests(SynchronousTestCase):
    def decode(self, doc: object, signal: str = "traces") -> object:
        return otlp.decode(signal, json.dumps(doc).encode(), "application/json")

    def test_hex_ids(self) -> None:
        request = self.decode(TRACES_JSON)
        assert isinstance(request, ExportTraceServiceRequest)
        span, root = request.resource_spans[0].scope_spans[0].spans
        self.assertEqual(span.trace_id, bytes.fromhex(TRACE_ID))
        self.assertEqual(span.span_id, bytes.fromhex(SPAN_ID))
        self.assertEqual(span.parent_span_id, bytes.fromhex(PARENT_ID))
        self.assertEqual(span.links[0].span_id, bytes.fromhex(PARENT_ID))
        self.assertEqual(root.parent_span_id, b"")
        self.assertEqual((span.kind, span.status.code), (2, 1))
        self.assertEqual(span.start_time_unix_nano, 1544712660000000000)

    def test_round_trip(self) -> None:
        """
        JSON in, JSON records out: ids stay hex (lower case), the rest as
        OTLP/JSON writes it.
        """
        request = self.decode(TRACES_JSON)
        assert isinstance(request, ExportTraceServiceRequest)
        [record] = otlp.to_records("traces", request)
        span = record["scopeSpans"][0]["spans"][0]
        self.assertEqual(
            (span["traceId"], span["spanId"], span["parentSpanId"]), (TRACE_ID, SPAN_ID, PARENT_ID)
        )
        self.assertEqual(span["links"][0], {"traceId": TRACE_ID, "spanId": PARENT_ID})
        self.assertEqual(span["kind"], 2)
        self.assertEqual(span["startTimeUnixNano"], "1544712660000000000")
        json.dumps(record)
        self.assertEqual(otlp.decode("traces", otlp.to_json(request), "application/json"), request)

    def test_protobuf_upstream(self) -> None:
        request = self.decode(TRACES_JSON)
        assert isinstance(request, ExportTraceServiceRequest)
        body = otlp.encode_protobuf(request)
        self.assertEqual(ExportTraceServiceRequest.FromString(body), request)

    def test_base64_ids_refused(self) -> None:
        """
        An id in base64 (protobuf's usual JSON form) is not OTLP/JSON.
        """
        doc = json.loads(json.dumps(TRACES_JSON))
        doc["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["spanId"] = "AQIDBAUGBwg="
        error = self.assertRaises(DecodeError, self.decode, doc)
        self.assertEqual(
            error.message,
            "otlp traces: resourceSpans[0].scopeSpans[0].spans[1].spanId: not a 16-digit hex id",
        )

    def test_bad_ids(self) -> None:
        for bad in (
            "W47/95gDgQPSabYzgT/GDA==",
            TRACE_ID[:-2],
            TRACE_ID + "00",
            "g" * 32,
            " " + TRACE_ID[1:],
            TRACE_ID[:30] + "\u0661\u0662",
        ):
            doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": bad}]}]}]}
            error = self.assertRaises(DecodeError, self.decode, doc, "logs")
            self.assertIn("traceId: not a 32-digit hex id", error.message)

    def test_exemplar_ids(self) -> None:
        doc = {
            "resourceMetrics": [
                {
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": "m",
                                    "sum": {
                                        "dataPoints": [
                                            {
                                                "asInt": "3",
                                                "exemplars": [
                                                    {"traceId": TRACE_ID, "spanId": SPAN_ID}
                                                ],
                                            }
                                        ]
                                    },
                                }
                            ]
                        }
                    ]
                }
            ]
        }
        request = self.decode(doc, "metrics")
        assert isinstance(request, ExportMetricsServiceRequest)
        point = request.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
        self.assertEqual((point.as_int, point.exemplars[0].span_id.hex()), (3, SPAN_ID))
        self.assertEqual(otlp.item_count("metrics", request), 1)

    def test_proto_field_names(self) -> None:
        doc = {"resource_logs": [{"scope_logs": [{"log_records": [{"trace_id": TRACE_ID}]}]}]}
        request = self.decode(doc, "logs")
        assert isinstance(request, ExportLogsServiceRequest)
        self.assertEqual(
            request.resource_logs[0].scope_logs[0].log_records[0].trace_id.hex(), TRACE_ID
        )

    def test_unknown_fields_ignored(self) -> None:
        doc = {"resourceLogs": [{"futureField": {"spanId": 5}, "scopeLogs": []}], "other": 1}
        self.assertEqual(otlp.item_count("logs", self.decode(doc, "logs")), 0)  # type: ignore[arg-type]

    def test_bad_documents(self) -> None:
        for body, message in (
            (b"[]", "otlp logs: body is not a JSON object"),
            (b"{", "otlp logs: body is not valid JSON"),
            (b"[" * 50_000, "otlp logs: body is not valid JSON"),
        ):
            error = self.assertRaises(DecodeError, otlp.decode, "logs", body, "application/json")
            self.assertEqual(error.message, message)

    def test_wrong_types(self) -> None:
        for doc in (
            {"resourceLogs": 5},
            {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]},
            {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": 12}]}]}]},
            {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityText": "\ud800"}]}]}]},
        ):
            error = self.assertRaises(DecodeError, self.decode, doc, "logs")
            self.assertTrue(error.message.startswith("otlp logs: "), error.message)
            self.assertNotIn("Failed to parse", error.message)
            self.assertLessEqual(len(error.message), 220)

    def test_parse_error_names_field(self) -> None:
        doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}
        error = self.assertRaises(DecodeError, self.decode, doc, "logs")
        self.assertTrue(
            error.message.startswith("otlp logs: resourceLogs.scopeLogs.logRecords.timeUnixNano: "),
            error.message,
        )

    def test_deep_nesting(self) -> None:
        """
        Deeply nested values fail as DecodeError (or decode), never as
        RecursionError, at every depth.
        """
        for depth in (10, 50, 300, 3000):
            value = '{"arrayValue":{"values":[' * depth + '{"stringValue":"x"}' + "]}}" * depth
            body = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + value + "}]}]}]}"
            try:
                request = otlp.decode("logs", body.encode(), "application/json")
            except DecodeError:
                self.assertGreater(depth, 10)
            else:
                self.assertEqual(otlp.item_count("logs", request), 1)


FUZZ = settings(derandomize=True, deadline=None, max_examples=300)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=34),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceLogs",
                    "scopeLogs",
                    "logRecords",
                    "traceId",
                    "spanId",
                    "body",
                    "stringValue",
                    "timeUnixNano",
                    "severityNumber",
                    "attributes",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=25,
)


class FuzzTests(SynchronousTestCase):
    @FUZZ
    @given(JSON_VALUES)
    def test_json_shapes(self, doc: object) -> None:
        """
        Any JSON document decodes or raises DecodeError, nothing else.
        """
        try:
            otlp.decode("logs", json.dumps(doc).encode(), "application/json")
        except DecodeError:
            pass

    @FUZZ
    @given(st.sampled_from(otlp.SIGNALS), st.binary(max_size=200))
    def test_protobuf_bytes(self, signal: str, body: bytes) -> None:
        try:
            request = otlp.decode(signal, body, "application/x-protobuf")
        except DecodeError:
            return
        otlp.item_count(signal, request)
        json.dumps(otlp.to_records(signal, request))


class ResponseTests(SynchronousTestCase):
    def test_protobuf_success(self) -> None:
        self.assertEqual(
            otlp.encode_response("traces", "application/x-protobuf"),
            (b"", "application/x-protobuf"),
        )

    def test_json_success(self) -> None:
        self.assertEqual(
            otlp.encode_response("logs", "application/json; charset=utf-8"),
            (b"{}", "application/json"),
        )

    def test_partial_success_json(self) -> None:
        body, content_type = otlp.encode_response("traces", "application/json", 3, "too old")
        self.assertEqual(content_type, "application/json")
        self.assertEqual(
            json.loads(body), {"partialSuccess": {"rejectedSpans": "3", "errorMessage": "too old"}}
        )

    def test_partial_success_protobuf(self) -> None:
        body, _ = otlp.encode_response("logs", "application/x-protobuf", 2, "x")
        response = ExportLogsServiceResponse.FromString(body)
        self.assertEqual(response.partial_success.rejected_log_records, 2)
        body, _ = otlp.encode_response("metrics", "application/x-protobuf", 5)
        self.assertIn(b"\x08\x05", body)

    def test_warning_only(self) -> None:
        body, _ = otlp.encode_response("traces", "application/x-protobuf", 0, "slow down")
        response = ExportTraceServiceResponse.FromString(body)
        self.assertTrue(response.HasField("partial_success"))
        self.assertEqual(response.partial_success.error_message, "slow down")
