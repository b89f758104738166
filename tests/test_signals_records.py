"""
Tests for L{sealgw.signals.records}: records read back from relayed bytes.
"""

import gzip
import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import PayloadError, loki, snappy_compress
from sealgw.signals.proto.remote_pb2 import WriteRequest
from sealgw.signals.records import records


def _write_request() -> bytes:
    request = WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.labels.add(name="job", value="node")
    series.samples.add(value=1.0, timestamp=1700000000000)
    return snappy_compress(request.SerializeToString())


class RecordsTests(SynchronousTestCase):
    def test_remote_write(self) -> None:
        for signal in ("remote_write", "seal"):
            got = records(signal, _write_request(), "application/x-protobuf", "snappy")
            self.assertEqual(
                got,
                [{"labels": {"__name__": "up", "job": "node"}, "samples": [[1700000000000, 1.0]]}],
            )

    def test_loki_json_gzip(self) -> None:
        body = gzip.compress(
            json.dumps(
                {"streams": [{"stream": {"job": "x"}, "values": [["1700000000000000000", "hi"]]}]}
            ).encode()
        )
        [record] = records("loki", body, "application/json", "gzip")
        self.assertEqual(record["stream"], {"job": "x"})
        self.assertEqual(record["values"][0][1], "hi")

    def test_loki_protobuf(self) -> None:
        push = loki.decode(
            json.dumps(
                {"streams": [{"stream": {"job": "x"}, "values": [["1700000000000000000", "hi"]]}]}
            ).encode(),
            "application/json",
        )
        [record] = records("loki", push.to_protobuf(), "application/x-protobuf", None)
        self.assertEqual(record["stream"], {"job": "x"})

    def test_otlp(self) -> None:
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id = bytes(range(16))
        span.span_id = bytes(range(8))
        span.name = "GET /"
        [record] = records(
            "otlp_traces", gzip.compress(request.SerializeToString()), "application/x-protobuf", "gzip"
        )
        got = record["scopeSpans"][0]["spans"][0]
        self.assertEqual(got["name"], "GET /")
        self.assertEqual(got["traceId"], bytes(range(16)).hex())

    def test_bad_body(self) -> None:
        with self.assertRaises(PayloadError):
            records("remote_write", b"not snappy", "application/x-protobuf", "snappy")

    def test_unknown_signal(self) -> None:
        with self.assertRaises(PayloadError):
            records("otlp_profiles", b"", "application/x-protobuf", None)
