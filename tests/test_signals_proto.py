"""
Tests that the committed generated protobuf modules match their C{.proto}
sources, and that the sources carry the field numbers of the wire formats.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sealgw.signals.proto import logproto_pb2, metrics_pb2, remote_pb2


def numbers(message: type) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]


class GeneratedTests(SynchronousTestCase):
    def test_generated_files_match(self) -> None:
        """
        Regenerating into a temporary directory gives exactly the committed
        files.  If this fails after editing a .proto, run
        C{python -m sealgw.signals.proto.regenerate}.
        """
        try:
            from sealgw.signals.proto import regenerate
        except ImportError as e:  # pragma: no cover
            raise SkipTest(f"grpcio-tools is not installed: {e}") from None
        with tempfile.TemporaryDirectory() as tmp:
            written = regenerate.generate(Path(tmp))
            self.assertEqual(len(written), 8)
            for path in written:
                committed = regenerate.ROOT / path.relative_to(tmp)
                self.assertTrue(committed.exists(), f"{committed} is not committed")
                self.assertEqual(
                    path.read_text(),
                    committed.read_text(),
                    f"{committed.name} is out of date: run python -m sealgw.signals.proto.regenerate",
                )

    def test_generated_import_paths(self) -> None:
        self.assertEqual(remote_pb2.DESCRIPTOR.name, "sealgw/signals/proto/remote.proto")
        self.assertEqual(metrics_pb2.DESCRIPTOR.package, "io.prometheus.client")
        self.assertEqual(logproto_pb2.DESCRIPTOR.package, "logproto")
        self.assertEqual(remote_pb2.DESCRIPTOR.package, "prometheus")


class FieldNumberTests(SynchronousTestCase):
    """
    The interface facts of PROTOCOLS.md, checked against the descriptors.
    """

    def test_remote_write(self) -> None:
        self.assertEqual(numbers(remote_pb2.WriteRequest), {"timeseries": 1, "metadata": 3})
        self.assertEqual(
            numbers(remote_pb2.TimeSeries),
            {"labels": 1, "samples": 2, "exemplars": 3, "histograms": 4},
        )
        self.assertEqual(numbers(remote_pb2.Label), {"name": 1, "value": 2})
        self.assertEqual(numbers(remote_pb2.Sample), {"value": 1, "timestamp": 2})
        self.assertEqual(
            numbers(remote_pb2.MetricMetadata),
            {"type": 1, "metric_family_name": 2, "help": 4, "unit": 5},
        )
        # proto3: scalars have no presence.
        self.assertFalse(remote_pb2.Sample.DESCRIPTOR.fields_by_name["value"].has_presence)

    def test_metric_family(self) -> None:
        self.assertEqual(
            numbers(metrics_pb2.MetricFamily), {"name": 1, "help": 2, "type": 3, "metric": 4}
        )
        self.assertEqual(
            numbers(metrics_pb2.Metric),
            {
                "label": 1,
                "gauge": 2,
                "counter": 3,
                "summary": 4,
                "untyped": 5,
                "timestamp_ms": 6,
                "histogram": 7,
            },
        )
        self.assertEqual(
            numbers(metrics_pb2.Histogram),
            {"sample_count": 1, "sample_sum": 2, "bucket": 3, "sample_count_float": 9},
        )
        self.assertEqual(
            numbers(metrics_pb2.Bucket),
            {"cumulative_count": 1, "upper_bound": 2, "exemplar": 3, "cumulative_count_float": 4},
        )
        self.assertEqual(
            numbers(metrics_pb2.Summary), {"sample_count": 1, "sample_sum": 2, "quantile": 3}
        )
        self.assertEqual(numbers(metrics_pb2.Quantile), {"quantile": 1, "value": 2})
        self.assertEqual(numbers(metrics_pb2.Counter), {"value": 1, "exemplar": 2})
        self.assertEqual(numbers(metrics_pb2.Exemplar), {"label": 1, "value": 2, "timestamp": 3})
        self.assertEqual(
            {
                v.name: v.number
                for v in metrics_pb2.DESCRIPTOR.enum_types_by_name["MetricType"].values
            },
            {
                "COUNTER": 0,
                "GAUGE": 1,
                "SUMMARY": 2,
                "UNTYPED": 3,
                "HISTOGRAM": 4,
                "GAUGE_HISTOGRAM": 5,
            },
        )
        # proto2: every optional scalar has presence.
        self.assertTrue(metrics_pb2.Gauge.DESCRIPTOR.fields_by_name["value"].has_presence)

    def test_logproto(self) -> None:
        self.assertEqual(numbers(logproto_pb2.PushRequest), {"streams": 1})
        self.assertEqual(
            numbers(logproto_pb2.StreamAdapter), {"labels": 1, "entries": 2, "hash": 3}
        )
        self.assertEqual(
            numbers(logproto_pb2.EntryAdapter),
            {"timestamp": 1, "line": 2, "structured_metadata": 3},
        )
        self.assertEqual(numbers(logproto_pb2.LabelPairAdapter), {"name": 1, "value": 2})
