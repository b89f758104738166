"""
Tests for L{sealgw.signals.seal}: seal-proxy and sui-proxy pushes to
remote-write series.
"""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import remote_write, seal
from sealgw.signals._floats import format_bound, go_format_g
from sealgw.signals.compression import decode_body, snappy_compress, snappy_decompress
from sealgw.signals.errors import BadEncoding, DecodeError, PayloadTooLarge
from sealgw.signals.proto.metrics_pb2 import (
    COUNTER,
    GAUGE,
    GAUGE_HISTOGRAM,
    HISTOGRAM,
    SUMMARY,
    UNTYPED,
    MetricFamily,
)
from sealgw.signals.proto.remote_pb2 import TimeSeries
from tests.wire import delimited, varint

FUZZ = settings(derandomize=True, deadline=None, max_examples=400)
NOW = 1_700_000_000_000
BOUNDS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


def sample_client() -> list[MetricFamily]:
    """
    What the seal repository's sample client pushes every 5 s.
    """
    current_time = MetricFamily(name="current_time", help="ms", type=GAUGE)
    current_time.metric.add().gauge.value = 1_699_999_999_123
    build_info = MetricFamily(name="seal_build_info", type=GAUGE)
    info = build_info.metric.add()
    info.label.add(name="version", value="0.1.0")
    info.gauge.value = 1
    duration = MetricFamily(name="seal_request_duration", type=HISTOGRAM)
    histogram = duration.metric.add().histogram
    histogram.sample_count = 7
    histogram.sample_sum = 4.75
    for bound, count in zip(BOUNDS, [1, 2, 2, 4, 5, 6, 6, 6], strict=True):
        histogram.bucket.add(upper_bound=bound, cumulative_count=count)
    return [current_time, build_info, duration]


def convert(families: list[MetricFamily], **overrides: object) -> list[TimeSeries]:
    kwargs: dict = dict(
        client_labels={}, add={}, remove=frozenset(), node_name=None, client_ip=None, now_ms=NOW
    )
    kwargs.update(overrides)
    return [TimeSeries.FromString(one) for one in seal.to_series(families, **kwargs)]


def flat(all_series: list[TimeSeries]) -> list[tuple[dict[str, str], float, int]]:
    out = []
    for one in all_series:
        [sample] = one.samples
        out.append(({lp.name: lp.value for lp in one.labels}, sample.value, sample.timestamp))
    return out


class DecodeSealJsonTests(SynchronousTestCase):
    def test_body(self) -> None:
        raw = json.dumps({"labels": {"host": "h1"}, "buf": [10, 0, 255]}).encode()
        self.assertEqual(seal.decode_seal_json(raw), ({"host": "h1"}, b"\x0a\x00\xff"))

    def test_labels_optional(self) -> None:
        self.assertEqual(seal.decode_seal_json(b'{"buf": []}'), ({}, b""))
        self.assertEqual(seal.decode_seal_json(b'{"labels": null, "buf": [1]}'), ({}, b"\x01"))

    def test_unknown_keys_ignored(self) -> None:
        self.assertEqual(seal.decode_seal_json(b'{"buf": [1], "extra": 2}'), ({}, b"\x01"))

    def assertBad(self, raw: bytes, message: str) -> None:
        error = self.assertRaises(DecodeError, seal.decode_seal_json, raw)
        self.assertEqual(error.message, message)

    def test_bad_bytes(self) -> None:
        values = "seal push: buf: values must be integers from 0 to 255"
        self.assertBad(b'{"buf": [256]}', values)
        self.assertBad(b'{"buf": [-1]}', values)
        self.assertBad(b'{"buf": [1.0]}', values)
        self.assertBad(b'{"buf": [true]}', values)
        self.assertBad(b'{"buf": ["1"]}', values)
        self.assertBad(b'{"buf": [null]}', values)
        self.assertBad(b'{"buf": [[1]]}', values)

    def test_bad_shapes(self) -> None:
        self.assertBad(b'{"labels": {}}', "seal push: buf: must be an array of byte values")
        self.assertBad(b'{"buf": "AAEC"}', "seal push: buf: must be an array of byte values")
        self.assertBad(b"[1, 2]", "seal push: body is not a JSON object")
        self.assertBad(b'{"buf": [1]', "seal push: body is not valid JSON")
        self.assertBad(b"\xff\xfe", "seal push: body is not valid JSON")
        self.assertBad(b"[" * 100_000, "seal push: body is not valid JSON")

    def test_bad_labels(self) -> None:
        strings = "seal push: labels: must be an object of strings"
        self.assertBad(b'{"labels": ["a"], "buf": []}', strings)
        self.assertBad(b'{"labels": {"a": 1}, "buf": []}', strings)
        self.assertBad(b'{"labels": {"a": "\\ud800"}, "buf": []}', strings)
        self.assertBad(
            b'{"labels": {"a-b": "c"}, "buf": []}', "seal push: labels: invalid label name 'a-b'"
        )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["labels", "buf", "a"]), inner, max_size=3)
    ),
    max_leaves=20,
)


class DecodeSealJsonFuzzTests(SynchronousTestCase):
    @FUZZ
    @given(JSON_VALUES)
    def test_json_shapes(self, doc: object) -> None:
        """
        Any JSON document decodes or raises DecodeError, nothing else.
        """
        try:
            labels, buf = seal.decode_seal_json(json.dumps(doc).encode())
        except DecodeError:
            return
        self.assertIsInstance(buf, bytes)
        self.assertTrue(all(isinstance(v, str) for v in labels.values()))


class DecodeDelimitedTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        families = sample_client()
        self.assertEqual(seal.decode_delimited(delimited(*families)), families)

    def test_empty(self) -> None:
        self.assertEqual(seal.decode_delimited(b""), [])

    def test_empty_message(self) -> None:
        """
        Empty families carry nothing and are not built.
        """
        self.assertEqual(seal.decode_delimited(b"\x00"), [])
        self.assertEqual(seal.decode_delimited(b"\x00" * 100_000), [])

    def test_too_many_families(self) -> None:
        one = delimited(sample_client()[0])
        self.assertEqual(len(seal.decode_delimited(one * 3, max_families=3)), 3)
        error = self.assertRaises(
            PayloadTooLarge, seal.decode_delimited, one * 4, max_families=3
        )
        self.assertEqual(error.message, "seal push: more than 3 metric families in one push")

    def test_truncated(self) -> None:
        stream = delimited(*sample_client())
        error = self.assertRaises(DecodeError, seal.decode_delimited, stream[:-1])
        self.assertIn("metric family 2 at byte", error.message)
        self.assertIn("is truncated", error.message)

    def test_cut_in_length(self) -> None:
        stream = delimited(*sample_client()) + b"\x80"
        error = self.assertRaises(DecodeError, seal.decode_delimited, stream)
        self.assertIn("ends inside a length prefix", error.message)

    def test_overlong_length(self) -> None:
        error = self.assertRaises(DecodeError, seal.decode_delimited, b"\xff" * 11)
        self.assertIn("longer than 10 bytes", error.message)

    def test_huge_length(self) -> None:
        self.assertRaises(DecodeError, seal.decode_delimited, b"\xff" * 9 + b"\x01abc")

    def test_malformed_message(self) -> None:
        error = self.assertRaises(DecodeError, seal.decode_delimited, b"\x02\x0a\x05")
        self.assertEqual(
            error.message,
            "seal push: metric family 0 at byte 0 is not a valid MetricFamily protobuf",
        )

    @FUZZ
    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, buf: bytes) -> None:
        """
        Nothing but DecodeError, whatever the bytes.
        """
        try:
            seal.decode_delimited(buf)
        except DecodeError:
            pass

    @FUZZ
    @given(st.integers(min_value=0), st.binary(max_size=40))
    def test_damaged_stream(self, cut: int, tail: bytes) -> None:
        """
        A valid stream cut anywhere and given any tail either decodes or
        raises DecodeError; converting what decodes raises nothing else.
        """
        stream = delimited(*sample_client())
        damaged = stream[: cut % (len(stream) + 1)] + tail
        try:
            families = seal.decode_delimited(damaged)
            convert(families)
        except DecodeError:
            pass


class SampleClientTests(SynchronousTestCase):
    def test_conversion(self) -> None:
        """
        The sample client's gauge, gauge vector and histogram, exactly.
        """
        got = flat(convert(sample_client()))
        buckets = [
            ({"__name__": "seal_request_duration_bucket", "le": le}, float(count), NOW)
            for le, count in zip(
                ["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"],
                [1, 2, 2, 4, 5, 6, 6, 6, 7],
                strict=True,
            )
        ]
        self.assertEqual(
            got,
            [
                ({"__name__": "current_time"}, 1_699_999_999_123.0, NOW),
                ({"__name__": "seal_build_info", "version": "0.1.0"}, 1.0, NOW),
                *buckets,
                ({"__name__": "seal_request_duration_sum"}, 4.75, NOW),
                ({"__name__": "seal_request_duration_count"}, 7.0, NOW),
            ],
        )

    def test_valid_remote_write(self) -> None:
        """
        The series make a remote-write request that passes validation.
        """
        all_series = convert(
            sample_client(), client_labels={"host": "h"}, node_name="n1", client_ip="10.0.0.1"
        )
        [request] = remote_write.batches(all_series, 500)
        remote_write.validate(request)
        self.assertEqual(len(request.timeseries), 13)

    def test_whole_push(self) -> None:
        """
        From the HTTP body a seal client sends to remote-write bytes.
        """
        buf = delimited(*sample_client())
        body = snappy_compress(json.dumps({"labels": {"host": "h"}, "buf": list(buf)}).encode())
        raw = decode_body(body, "snappy", 1 << 20, allowed=("snappy",))
        labels, stream = seal.decode_seal_json(raw)
        all_series = convert(seal.decode_delimited(stream), client_labels=labels, node_name="n")
        [request] = remote_write.batches(all_series, 1000)
        decoded = remote_write.decode(snappy_decompress(remote_write.encode(request), 1 << 20))
        remote_write.validate(decoded)
        self.assertEqual(
            [lp.name for lp in decoded.timeseries[0].labels], ["__name__", "host", "node_name"]
        )

    def test_seal_needs_snappy(self) -> None:
        self.assertRaises(BadEncoding, decode_body, b"{}", None, 100, allowed=("snappy",))


class ConversionTests(SynchronousTestCase):
    def test_metric_timestamp(self) -> None:
        family = MetricFamily(name="c_total", type=COUNTER)
        family.metric.add(timestamp_ms=123).counter.value = 5
        family.metric.add(timestamp_ms=0).counter.value = 6
        self.assertEqual(
            flat(convert([family])),
            [({"__name__": "c_total"}, 5.0, 123), ({"__name__": "c_total"}, 6.0, NOW)],
        )

    def test_untyped(self) -> None:
        family = MetricFamily(name="u", type=UNTYPED)
        family.metric.add().untyped.value = -2.5
        self.assertEqual(flat(convert([family])), [({"__name__": "u"}, -2.5, NOW)])

    def test_histogram_with_inf_bucket(self) -> None:
        """
        A +Inf bucket given by the client is used, not doubled; buckets past
        it are ignored as Prometheus ignores them.
        """
        family = MetricFamily(name="h", type=HISTOGRAM)
        histogram = family.metric.add().histogram
        histogram.sample_count = 3
        histogram.sample_sum = 1.5
        histogram.bucket.add(upper_bound=1, cumulative_count=2)
        histogram.bucket.add(upper_bound=math.inf, cumulative_count=3)
        histogram.bucket.add(upper_bound=math.inf, cumulative_count=99)
        self.assertEqual(
            [(labels.get("le"), value) for labels, value, _ in flat(convert([family]))],
            [("1.0", 2.0), ("+Inf", 3.0), (None, 1.5), (None, 3.0)],
        )

    def test_histogram_float_counts(self) -> None:
        family = MetricFamily(name="h", type=HISTOGRAM)
        histogram = family.metric.add().histogram
        histogram.sample_count_float = 2.5
        histogram.bucket.add(upper_bound=0.5, cumulative_count_float=1.25)
        self.assertEqual([value for _, value, _ in flat(convert([family]))], [1.25, 2.5, 0.0, 2.5])

    def test_histogram_without_buckets(self) -> None:
        family = MetricFamily(name="h", type=HISTOGRAM)
        family.metric.add().histogram.sample_count = 4
        self.assertEqual(
            flat(convert([family])),
            [
                ({"__name__": "h_bucket", "le": "+Inf"}, 4.0, NOW),
                ({"__name__": "h_sum"}, 0.0, NOW),
                ({"__name__": "h_count"}, 4.0, NOW),
            ],
        )

    def test_gauge_histogram(self) -> None:
        family = MetricFamily(name="g", type=GAUGE_HISTOGRAM)
        histogram = family.metric.add().histogram
        histogram.sample_count = 1
        histogram.bucket.add(upper_bound=100000, cumulative_count=1)
        self.assertEqual(
            [labels for labels, _, _ in flat(convert([family]))],
            [
                {"__name__": "g_bucket", "le": "100000.0"},
                {"__name__": "g_bucket", "le": "+Inf"},
                {"__name__": "g_sum"},
                {"__name__": "g_count"},
            ],
        )

    def test_buckets_must_increase(self) -> None:
        family = MetricFamily(name="h", type=HISTOGRAM)
        histogram = family.metric.add().histogram
        histogram.bucket.add(upper_bound=1)
        histogram.bucket.add(upper_bound=1)
        error = self.assertRaises(DecodeError, convert, [family])
        self.assertEqual(
            error.message,
            "seal push: metric family 'h': metric[0]: bucket upper bounds are not increasing",
        )

    def test_summary(self) -> None:
        family = MetricFamily(name="rpc_seconds", type=SUMMARY)
        metric = family.metric.add()
        metric.label.add(name="method", value="get")
        summary = metric.summary
        summary.sample_count = 10
        summary.sample_sum = 3.25
        summary.quantile.add(quantile=0.5, value=0.2)
        summary.quantile.add(quantile=0.99, value=1.5)
        summary.quantile.add(quantile=1, value=2)
        self.assertEqual(
            flat(convert([family])),
            [
                ({"__name__": "rpc_seconds", "method": "get", "quantile": "0.5"}, 0.2, NOW),
                ({"__name__": "rpc_seconds", "method": "get", "quantile": "0.99"}, 1.5, NOW),
                ({"__name__": "rpc_seconds", "method": "get", "quantile": "1.0"}, 2.0, NOW),
                ({"__name__": "rpc_seconds_sum", "method": "get"}, 3.25, NOW),
                ({"__name__": "rpc_seconds_count", "method": "get"}, 10.0, NOW),
            ],
        )

    def test_summary_repeated_quantile(self) -> None:
        family = MetricFamily(name="s", type=SUMMARY)
        summary = family.metric.add().summary
        summary.quantile.add(quantile=0.5)
        summary.quantile.add(quantile=0.5)
        self.assertRaises(DecodeError, convert, [family])

    def test_empty_family_skipped(self) -> None:
        self.assertEqual(convert([MetricFamily(name="nothing", type=GAUGE), MetricFamily()]), [])

    def test_no_name(self) -> None:
        family = MetricFamily(type=GAUGE)
        family.metric.add().gauge.value = 1
        error = self.assertRaises(DecodeError, convert, [family])
        self.assertEqual(error.message, "seal push: metric family 0: no name")

    def test_unknown_type(self) -> None:
        # name "x", type 99, one empty metric.
        [family] = seal.decode_delimited(b"\x07\x0a\x01x\x18\x63\x22\x00")
        error = self.assertRaises(DecodeError, convert, [family])
        self.assertEqual(error.message, "seal push: metric family 'x': unknown metric type")

    def test_bad_metric_labels(self) -> None:
        family = MetricFamily(name="g", type=GAUGE)
        metric = family.metric.add()
        metric.label.add(name="a", value="1")
        metric.label.add(name="a", value="2")
        error = self.assertRaises(DecodeError, convert, [family])
        self.assertEqual(
            error.message, "seal push: metric family 'g': metric[0]: duplicate label name 'a'"
        )
        del metric.label[:]
        metric.label.add(name="a.b", value="1")
        error = self.assertRaises(DecodeError, convert, [family])
        self.assertIn("invalid label name 'a.b'", error.message)

    def test_label_not_utf8(self) -> None:
        family = MetricFamily(name="g", type=GAUGE)
        family.metric.add().label.add(name="a", value="Zq")
        raw = family.SerializeToString().replace(b"Zq", b"\xff\xfe")
        [bad] = seal.decode_delimited(varint(len(raw)) + raw)
        error = self.assertRaises(DecodeError, convert, [bad])
        self.assertIn("not valid UTF-8", error.message)


class LabelPrecedenceTests(SynchronousTestCase):
    def family(self) -> MetricFamily:
        family = MetricFamily(name="g", type=GAUGE)
        metric = family.metric.add()
        for name in ("own", "clash", "node_name", "gone", "le"):
            metric.label.add(name=name, value="metric")
        metric.gauge.value = 1
        return family

    def test_precedence(self) -> None:
        """
        add > node_name/client_ip > client labels > the metric's own; then
        remove; empty values dropped.
        """
        [(labels, _, _)] = flat(
            convert(
                [self.family()],
                client_labels={"clash": "client", "node_name": "client", "mine": "client"},
                add={"env": "prod", "mine": "add", "client_ip": "add", "blank": ""},
                remove=frozenset(["gone", "nowhere"]),
                node_name="node-1",
                client_ip="10.1.2.3",
            )
        )
        self.assertEqual(
            labels,
            {
                "__name__": "g",
                "own": "metric",
                "clash": "client",
                "node_name": "node-1",
                "client_ip": "add",
                "mine": "add",
                "env": "prod",
                "le": "metric",
            },
        )

    def test_sorted_unique(self) -> None:
        [one] = convert([self.family()], client_labels={"zz": "1", "aa": "2"}, node_name="n")
        names = [label.name for label in one.labels]
        self.assertEqual(names, sorted(set(names)))

    def test_remove_cannot_drop_derived_labels(self) -> None:
        family = MetricFamily(name="h", type=HISTOGRAM)
        family.metric.add().histogram.bucket.add(upper_bound=1, cumulative_count=1)
        got = flat(convert([family], remove=frozenset(["le", "__name__"])))
        self.assertEqual([labels.get("le") for labels, _, _ in got], ["1.0", "+Inf", None, None])

    def test_bad_client_label(self) -> None:
        self.assertRaises(DecodeError, convert, sample_client(), client_labels={"a b": "c"})


class FloatFormatTests(SynchronousTestCase):
    def test_go_g(self) -> None:
        """
        Go's strconv.FormatFloat(f, 'g', -1, 64) outputs.
        """
        cases = {
            0.05: "0.05",
            1.0: "1",
            2.5: "2.5",
            100000.0: "100000",
            1e6: "1e+06",
            123456789.0: "1.23456789e+08",
            0.0001: "0.0001",
            0.00001: "1e-05",
            1.5e-7: "1.5e-07",
            -2.5: "-2.5",
            0.1 + 0.2: "0.30000000000000004",
            1e100: "1e+100",
            5e-324: "5e-324",
            math.inf: "+Inf",
            -math.inf: "-Inf",
            math.nan: "NaN",
        }
        self.assertEqual({value: go_format_g(value) for value in cases}, cases)

    def test_bounds(self) -> None:
        """
        Prometheus' le/quantile form: Go's, with .0 on whole numbers.
        """
        cases = [
            (0.0, "0.0"),
            (-0.0, "0.0"),
            (1.0, "1.0"),
            (10.0, "10.0"),
            (0.05, "0.05"),
            (1e6, "1e+06"),
            (-1.0, "-1.0"),
            (999999.0, "999999.0"),
            (math.inf, "+Inf"),
        ]
        self.assertEqual([(v, format_bound(v)) for v, _ in cases], cases)

    @FUZZ
    @given(st.floats(allow_nan=False, allow_infinity=False))
    def test_reads_back(self, value: float) -> None:
        self.assertEqual(float(go_format_g(value)), value)
        self.assertEqual(float(format_bound(value)), value)


class SuiTests(SynchronousTestCase):
    def test_content_type(self) -> None:
        self.assertTrue(seal.is_sui_content_type(seal.SUI_CONTENT_TYPE))
        self.assertTrue(
            seal.is_sui_content_type(
                'Application/Vnd.Google.Protobuf;encoding="delimited";'
                " proto=io.prometheus.client.MetricFamily"
            )
        )
        self.assertFalse(seal.is_sui_content_type("application/vnd.google.protobuf"))
        self.assertFalse(seal.is_sui_content_type("application/json"))
        self.assertFalse(seal.is_sui_content_type(None))
        self.assertFalse(
            seal.is_sui_content_type(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;"
                " encoding=text"
            )
        )

    def test_body_raw_or_snappy(self) -> None:
        families = sample_client()
        stream = delimited(*families)
        self.assertEqual(seal.decode_sui_body(stream, None, 1 << 20), families)
        self.assertEqual(seal.decode_sui_body(snappy_compress(stream), None, 1 << 20), families)
        self.assertEqual(seal.decode_sui_body(snappy_compress(stream), "snappy", 1 << 20), families)

    def test_body_limits(self) -> None:
        stream = delimited(*sample_client())
        self.assertRaises(PayloadTooLarge, seal.decode_sui_body, stream, None, 10)
        self.assertRaises(PayloadTooLarge, seal.decode_sui_body, snappy_compress(stream), None, 10)

    def test_body_garbage(self) -> None:
        self.assertRaises(DecodeError, seal.decode_sui_body, b"\x05\x0a\x05", None, 1 << 20)
