"""
Tests for L{sealgw.signals.pushgateway}: grouping keys and bodies as
Pushgateway clients send them.
"""

from __future__ import annotations

from typing import Optional

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import generate_latest
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import PayloadError
from sealgw.signals import _wire as wire
from sealgw.signals.proto import metrics_pb2
from sealgw.signals.proto.remote_pb2 import TimeSeries
from sealgw.signals.pushgateway import (
    _refuse_repeated,
    _without_value,
    grouping_key,
    to_series,
)
from sealgw.signals.seal import SUI_CONTENT_TYPE
from tests.e2e_support import seal_sample_families
from tests.wire import delimited

#: What C{curl --data-binary} sends when told nothing else.
FORM = "application/x-www-form-urlencoded"

INT64 = st.integers(-(1 << 63), (1 << 63) - 1)


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

    def test_job_required(self) -> None:
        """
        No job, however it is left out, is a 400 in a Pushgateway's words.
        """
        for path in (
            "/metrics/job/",
            "/metrics/job",
            "/metrics/job@base64/",
            "/metrics/job@base64",
            "/metrics/job@base64/=",
            "/metrics/job//instance/a",
        ):
            with self.assertRaises(PayloadError, msg=path) as caught:
                grouping_key(path)
            self.assertEqual(caught.exception.status, 400)
            self.assertIn("job name is required", caught.exception.message)

    def test_percent_encoded_slash_refused(self) -> None:
        """
        A Pushgateway splits the path at a percent-encoded C{/}, so the
        push would be refused there or land in another group: refused
        here, pointing at base64.
        """
        for path in (
            "/metrics/job/a%2Fb",
            "/metrics/job/j/path/a%2fb%2Fc",
            "/metrics/job/j/a%2Fb/c",
        ):
            with self.assertRaises(PayloadError, msg=path) as caught:
                grouping_key(path)
            self.assertEqual(caught.exception.status, 400)
            self.assertIn("%2F", caught.exception.message)
            self.assertIn("@base64", caught.exception.message)

    def test_utf8(self) -> None:
        """
        Path bytes are UTF-8, percent-encoded or raw (a raw byte that is
        not UTF-8 comes as a surrogate); anything else is a 400, never a
        value with replacement characters.
        """
        self.assertEqual(
            grouping_key("/metrics/job/caf%C3%A9/site/caf\u00e9"),
            {"job": "caf\u00e9", "site": "caf\u00e9"},
        )
        for path in ("/metrics/job/j/site/%FF", "/metrics/job/j/site/a\udcff", "/metrics/job/%C3"):
            with self.assertRaises(PayloadError, msg=path) as caught:
                grouping_key(path)
            self.assertIn("not UTF-8", caught.exception.message)


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


def _push(body: bytes, content_type: Optional[str], **grouping: str) -> list[TimeSeries]:
    return _decoded(
        to_series(
            body,
            content_type,
            grouping or {"job": "j"},
            add={},
            remove=frozenset(),
            now_ms=1_700_000_000_000,
        )
    )


def _labels(series: TimeSeries) -> dict[str, str]:
    return {label.name: label.value for label in series.labels}


class ContentTypeTests(SynchronousTestCase):
    """
    A Pushgateway reads every body that is not sent as delimited protobuf
    as the text format: so does sealgw.
    """

    def test_text_whatever_the_type(self) -> None:
        for content_type in (
            FORM,
            None,
            "",
            "text/plain",
            "text/plain; version=0.0.4; charset=utf-8",
            "TEXT/Plain;charset=UTF-8",
            "application/openmetrics-text; version=1.0.0",
            "application/octet-stream",
            "application/json",  # a Pushgateway reads it as text too
            "text/plain; ;; =",  # a header that does not parse
        ):
            [series] = _push(b"some_metric 3.14\n", content_type)
            self.assertEqual(
                (_labels(series), series.samples[0].value),
                ({"__name__": "some_metric", "job": "j"}, 3.14),
                content_type,
            )

    def test_bad_text_is_400(self) -> None:
        """
        A body sent as text (or as a form, or as nothing) that does not
        parse is the body's fault.
        """
        for content_type in (FORM, None, "text/plain; version=0.0.4"):
            with self.assertRaises(PayloadError, msg=content_type) as caught:
                _push(b"<html>\n", content_type)
            self.assertEqual(caught.exception.status, 400)
            self.assertIn("not in the text format", caught.exception.message)

    def test_other_format_is_415(self) -> None:
        """
        A body of another named type that is not text either (where a
        Pushgateway fails too) is refused for its type, naming the two
        formats that are read.
        """
        protobuf = delimited(*seal_sample_families(1000))
        for body, content_type in (
            (b'{"some_metric": 3.14}', "application/json"),
            # The protobuf type without encoding=delimited is not it.
            (protobuf, "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily"),
            (protobuf, "application/x-protobuf"),
        ):
            with self.assertRaises(PayloadError, msg=content_type) as caught:
                _push(body, content_type)
            self.assertEqual(caught.exception.status, 415)
            self.assertIn("encoding=delimited", caught.exception.message)

    def test_protobuf_only_with_its_type(self) -> None:
        series = _push(delimited(*seal_sample_families(1000)), SUI_CONTENT_TYPE)
        self.assertIn("current_time", {_labels(one)["__name__"] for one in series})


class RepeatedSeriesTests(SynchronousTestCase):
    """
    The same series twice at one time is refused whole, as a Pushgateway
    refuses it: relayed, the upstream would keep one value or refuse the
    rest of the push after writing part of it.
    """

    def assertRefused(self, body: bytes, content_type: Optional[str], series: str) -> None:
        with self.assertRaises(PayloadError) as caught:
            _push(body, content_type)
        self.assertEqual(caught.exception.status, 400)
        self.assertIn(series, caught.exception.message)
        self.assertIn("more than once", caught.exception.message)

    def test_text(self) -> None:
        self.assertRefused(b"dup 1\ndup 2\n", FORM, '{__name__="dup", job="j"}')
        self.assertRefused(b'dup{a="1"} 1\ndup{a="1"} 1\n', FORM, 'a="1"')
        # The grouping key wins over the sample's own job: the same series.
        self.assertRefused(b'dup{job="a"} 1\ndup{job="b"} 2\n', FORM, 'job="j"')
        # Its own timestamps, the same one twice.
        self.assertRefused(b"dup 1 1000\ndup 2 1000\n", FORM, '__name__="dup"')

    def test_protobuf(self) -> None:
        family = metrics_pb2.MetricFamily(name="dup", type=metrics_pb2.GAUGE)
        for value in (1.0, 2.0):
            metric = family.metric.add()
            metric.label.add(name="a", value="1")
            metric.gauge.value = value
        self.assertRefused(delimited(family), SUI_CONTENT_TYPE, 'a="1"')

    def test_different_series_or_times_accepted(self) -> None:
        series = _push(
            b'x{a="1"} 1\nx{a="2"} 1\ny 1 1000\ny 2 2000\n# TYPE z gauge\nz 1\n', FORM
        )
        self.assertEqual(len(series), 5)

    @given(
        labels=st.dictionaries(
            st.sampled_from(["__name__", "a", "b", "job"]), st.text(min_size=1), min_size=1
        ),
        values=st.tuples(st.floats(), st.floats()),
        timestamps=st.tuples(INT64, INT64),
        now=st.one_of(st.sampled_from([0, 1]), INT64),
        now_is=st.sampled_from(["first", "second", "other"]),
    )
    def test_repeated_means_same_labels_and_time(
        self,
        labels: dict[str, str],
        values: tuple[float, float],
        timestamps: tuple[int, int],
        now: int,
        now_is: str,
    ) -> None:
        """
        Two series written by L{wire.series} with the same labels are
        refused exactly when their timestamps are the same, whatever their
        values, and whether or not one is the arrival time (whose key is
        cut at a known length).
        """
        now = {"first": timestamps[0], "second": timestamps[1], "other": now}[now_is]
        encode = wire.LabelCache()
        series = [
            wire.series(labels, value, timestamp, encode)
            for value, timestamp in zip(values, timestamps, strict=True)
        ]
        keys = [_without_value(one) for one in series]
        self.assertEqual(keys[0] == keys[1], timestamps[0] == timestamps[1])
        if timestamps[0] == timestamps[1]:
            self.assertRaises(PayloadError, _refuse_repeated, series, now)
        else:
            _refuse_repeated(series, now)


class BoundTests(SynchronousTestCase):
    """
    C{le} and C{quantile} are written as Prometheus 3 writes them in
    histograms and summaries, and left as sent elsewhere.
    """

    def test_histogram_and_summary(self) -> None:
        series = _push(
            b"# TYPE h histogram\n"
            b'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n'
            b"# TYPE s summary\n"
            b's{quantile="0.50"} 1\ns_sum 1\ns_count 1\n',
            FORM,
        )
        bounds = {
            (_labels(one)["__name__"], _labels(one).get("le") or _labels(one).get("quantile"))
            for one in series
        }
        self.assertLessEqual({("h_bucket", "1.0"), ("h_bucket", "+Inf"), ("s", "0.5")}, bounds)

    def test_other_types_keep_their_labels(self) -> None:
        series = _push(
            b'# TYPE g gauge\ng{le="abc"} 1\nu_bucket{le="1"} 1\nq{quantile="x"} 1\n', FORM
        )
        self.assertEqual(
            {_labels(one)["__name__"]: _labels(one) for one in series},
            {
                "g": {"__name__": "g", "job": "j", "le": "abc"},
                "u_bucket": {"__name__": "u_bucket", "job": "j", "le": "1"},
                "q": {"__name__": "q", "job": "j", "quantile": "x"},
            },
        )

    def test_histogram_bound_not_a_number(self) -> None:
        with self.assertRaises(PayloadError) as caught:
            _push(b'# TYPE h histogram\nh_bucket{le="abc"} 1\n', FORM)
        self.assertEqual(caught.exception.status, 400)
        self.assertIn("'abc' is not a number", caught.exception.message)


class TimestampTests(SynchronousTestCase):
    """
    Unlike a Pushgateway (which refuses them since 1.0), a sample's own
    timestamp is kept: nothing is stored to be scraped later, and a remote
    write carries it as the sample's time.
    """

    def test_kept(self) -> None:
        [own, arrived] = _push(b"x 1 1699999990000\ny 2\n", FORM)
        self.assertEqual(own.samples[0].timestamp, 1_699_999_990_000)
        self.assertEqual(arrived.samples[0].timestamp, 1_700_000_000_000)
