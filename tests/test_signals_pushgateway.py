"""
Tests for L{sealgw.signals.pushgateway}: grouping keys and bodies as
Pushgateway clients send them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import generate_latest
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import PayloadError
from sealgw.signals.proto.remote_pb2 import TimeSeries
from sealgw.signals.pushgateway import grouping_key, to_series
from tests.e2e_support import seal_sample_families
from tests.wire import delimited


def _decoded(series: list[bytes]) -> list[TimeSeries]:
    return [TimeSeries.FromString(one) for one in series]


def _flat(series: list) -> dict[tuple, float]:
    return {
        tuple(sorted((label.name, label.value) for label in one.labels)): one.samples[0].value
        for one in series
    }


class GroupingKeyTests(SynchronousTestCase):
    def test_plain_and_base64(self) -> None:
        self.assertEqual(
            grouping_key("/metrics/job/batch/instance@base64/L3Zhci90bXA=/zone/eu%2Dwest"),
            {"job": "batch", "instance": "/var/tmp", "zone": "eu-west"},
        )
        self.assertEqual(grouping_key("/metrics/job/j/empty@base64/="), {"job": "j", "empty": ""})
        # Unpadded, as some clients send it.
        self.assertEqual(grouping_key("/metrics/job@base64/YS9i"), {"job": "a/b"})

    def test_refused(self) -> None:
        for path in (
            "/metrics/job/j/instance",  # a label without a value
            "/metrics/job/j/0bad/x",
            "/metrics/job/j/__name__/x",
            "/metrics/job/j/a/1/a/2",
            "/metrics/job@base64/%%%",
            "/metrics/job/j/x@base64/!!!",
            "/metrics/job@base64/=",  # an empty job
        ):
            with self.assertRaises(PayloadError, msg=path):
                grouping_key(path)


class BodyTests(SynchronousTestCase):
    def test_text_from_prometheus_client(self) -> None:
        """
        What C{push_to_gateway} sends (C{generate_latest} of a registry):
        every metric type, with the grouping labels winning.
        """
        registry = CollectorRegistry()
        Counter("jobs", "jobs done", ["kind"], registry=registry).labels("a").inc(3)
        Gauge("last_success", "when", registry=registry).set(1700000000)
        Histogram("duration", "took", buckets=(0.1, 1.0), registry=registry).observe(0.5)
        Summary("size", "bytes", registry=registry).observe(10)
        series = _decoded(to_series(
            generate_latest(registry),
            "text/plain; version=0.0.4; charset=utf-8",
            {"job": "batch", "instance": "x"},
            add={"network": "main"},
            remove=frozenset({"kind"}),
            now_ms=42,
        ))
        flat = _flat(series)
        common = (("instance", "x"), ("job", "batch"), ("network", "main"))
        self.assertEqual(flat[tuple(sorted((("__name__", "jobs_total"),) + common))], 3.0)
        self.assertEqual(flat[tuple(sorted((("__name__", "duration_bucket"), ("le", "1.0")) + common))], 1.0)
        self.assertEqual(flat[tuple(sorted((("__name__", "duration_bucket"), ("le", "+Inf")) + common))], 1.0)
        self.assertEqual(flat[tuple(sorted((("__name__", "size_sum"),) + common))], 10.0)
        self.assertEqual({one.samples[0].timestamp for one in series}, {42})

    def test_protobuf(self) -> None:
        body = delimited(*seal_sample_families(1000))
        series = _decoded(to_series(
            body,
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; "
            "encoding=delimited",
            {"job": "batch"},
            add={},
            remove=frozenset(),
            now_ms=5,
        ))
        names = {dict((x.name, x.value) for x in s.labels)["__name__"] for s in series}
        self.assertIn("seal_request_duration_bucket", names)
        self.assertTrue(
            all(("job", "batch") in [(x.name, x.value) for x in s.labels] for s in series)
        )

    def test_bad_bodies(self) -> None:
        for body, ctype, status in (
            (b"not { a metric", "text/plain", 400),
            (b"\xff\xfe", "text/plain", 400),
            (b"{}", "application/json", 415),
        ):
            with self.assertRaises(PayloadError) as caught:
                to_series(body, ctype, {"job": "j"}, add={}, remove=frozenset(), now_ms=0)
            self.assertEqual(caught.exception.status, status)
