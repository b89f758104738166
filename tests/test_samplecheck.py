"""
Tests for L{sealgw.signals._samplecheck} and L{sealgw.signals.limits}: the
sample limits judged on the encoded bytes in C
(C{sealgw.signals._relabel_c.check_samples}), by the Python reference
(L{sealgw.signals._samplecheck._check_samples_python}) and on the protobuf
objects (L{sealgw.signals.limits.judge_objects}) give the same codes on
every body the byte readers judge; the byte readers judge every body of
the shape senders produce; C and Python agree on any bytes at all, and C
never reads outside them.  Then each limit and its message, as the
remote-write, seal and Pushgateway intakes apply them.

The C tests are skipped when the extension was not built, unless
C{SEALGW_REQUIRE_C_EXTENSIONS=1} is set (as CI does).
"""

from __future__ import annotations

import importlib
import random
from typing import Any, Optional

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import _samplecheck, intake, limits, pushgateway
from sealgw.signals._samplecheck import (
    FINE,
    NAME_TOO_LONG,
    RESERVED_NAME,
    TOO_MANY_LABELS,
    TOO_NEW,
    TOO_OLD,
    VALUE_TOO_LONG,
)
from sealgw.signals.compression import snappy_compress, snappy_decompress
from sealgw.signals.errors import DecodeError
from sealgw.signals.intake import AllSeriesRefused, RequestFacts
from sealgw.signals.limits import LimitExceeded, SampleLimits, judge_objects
from sealgw.signals.proto.metrics_pb2 import GAUGE, MetricFamily
from sealgw.signals.proto.remote_pb2 import MetricMetadata, TimeSeries, WriteRequest
from tests.e2e_support import seal_body, seal_sample_families
from tests.test_labelcheck import _AFTER, _needs_extension

try:
    _relabel_c: Any = importlib.import_module("sealgw.signals._relabel_c")
except ImportError:
    _relabel_c = None

_python = _samplecheck._check_samples_python

NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)
#: Small limits, so that examples cross them often.
SMALL = SampleLimits(
    max_future=60.0,
    max_past=3600.0,
    max_labels_per_series=4,
    max_label_name_length=10,
    max_label_value_length=12,
    max_series_per_push=100,
)
BOUNDS = SMALL.bounds(NOW)

_names = st.sampled_from(
    ["__name__", "__tenant__", "__", "_", "a", "job", "le", "x" * 10, "y" * 11, "é" * 6, ""]
) | st.text(max_size=14)
_values = st.sampled_from(["", "v", "v" * 12, "v" * 13, "é" * 7, "w" * 200]) | st.text(max_size=14)
_times = st.sampled_from(
    [
        NOW_MS,
        NOW_MS + 60_000,
        NOW_MS + 60_001,
        NOW_MS - 3_600_000,
        NOW_MS - 3_600_001,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        NOW_MS + 10 * 365 * 86_400_000,
    ]
) | st.integers(-(2**63), 2**63 - 1)


@st.composite
def write_requests(draw: st.DrawFn) -> WriteRequest:
    """
    Requests whose series' labels cross every limit or not, in any order,
    with samples, histograms (with other fields beside the timestamp),
    exemplars and metadata.
    """
    request = WriteRequest()
    for _ in range(draw(st.integers(0, 5))):
        series = request.timeseries.add()
        for _ in range(draw(st.integers(0, 6))):
            series.labels.add(name=draw(_names), value=draw(_values))
        for _ in range(draw(st.integers(0, 3))):
            series.samples.add(value=draw(st.floats()), timestamp=draw(_times))
        for _ in range(draw(st.integers(0, 1))):
            exemplar = series.exemplars.add(value=1.5, timestamp=draw(_times))
            exemplar.labels.add(name="__trace", value="t" * 50)
        for _ in range(draw(st.integers(0, 2))):
            histogram = series.histograms.add(timestamp=draw(_times))
            if draw(st.booleans()):
                # Fields this schema leaves unknown, of every wire type.
                histogram.MergeFromString(
                    b"\x08\x05"  # count_int: a varint
                    + b"\x19" + b"\x00" * 8  # sum: fixed64
                    + b"\x25" + b"\x00" * 4  # a fixed32
                    + b"\x42\x02\x01\x02"  # spans: length-delimited
                    + b"\x82\x01\x01\x07"  # field 16: a two-byte tag
                )
    for _ in range(draw(st.integers(0, 1))):
        request.metadata.add(type=MetricMetadata.GAUGE, metric_family_name="m", help="h")
    return request


def series(*labels: tuple[str, str], times: tuple[int, ...] = (NOW_MS,)) -> TimeSeries:
    one = TimeSeries()
    for name, value in labels:
        one.labels.add(name=name, value=value)
    for when in times:
        one.samples.add(value=1.0, timestamp=when)
    return one


def codes_of(verdict: Optional[tuple[int, bytes]]) -> Optional[bytes]:
    """
    One code a series, whether the reader wrote them or said "all fine".
    """
    if verdict is None:
        return None
    count, codes = verdict
    return codes or bytes(count)


class ReferenceTests(SynchronousTestCase):
    """
    The Python reading of the bytes against the objects.
    """

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests())
    def test_same_as_objects(self, request: WriteRequest) -> None:
        """
        Judged, and judged as the objects are, unless a label has an empty
        name (protobuf writes no name field for it: not the shape read).
        """
        raw = request.SerializeToString()
        verdict = _python(raw, *BOUNDS)
        if any(label.name == "" for one in request.timeseries for label in one.labels):
            self.assertIsNone(verdict)
            return
        self.assertEqual(verdict, judge_objects(request, SMALL, NOW))

    def test_each_limit(self) -> None:
        """
        Every limit, at its edge and past it; the order in which a series
        with several problems reports them.
        """
        future, past = NOW_MS + 60_000, NOW_MS - 3_600_000
        for labels, times, code in [
            ([("__name__", "up"), ("a", "1"), ("b", "2"), ("c", "3")], (NOW_MS,), FINE),
            ([("__name__", "up"), ("a", "1"), ("b", "2"), ("c", "3"), ("d", "")], (), TOO_MANY_LABELS),
            ([("__name__", "up"), ("__tenant__", "x")], (NOW_MS,), RESERVED_NAME),
            ([("__name__", "up"), ("__", "x")], (NOW_MS,), RESERVED_NAME),
            ([("__name__", "up"), ("_x", "x")], (NOW_MS,), FINE),
            ([("__name__", "up"), ("x" * 10, "x")], (NOW_MS,), FINE),
            ([("__name__", "up"), ("x" * 11, "x")], (NOW_MS,), NAME_TOO_LONG),
            ([("__name__", "up"), ("é" * 6, "x")], (NOW_MS,), NAME_TOO_LONG),  # 12 bytes
            ([("__name__", "v" * 12)], (NOW_MS,), FINE),
            ([("__name__", "v" * 13)], (NOW_MS,), VALUE_TOO_LONG),
            ([("__name__", "up")], (future,), FINE),
            ([("__name__", "up")], (NOW_MS, future + 1), TOO_NEW),
            ([("__name__", "up")], (past,), FINE),
            ([("__name__", "up")], (past - 1, NOW_MS), TOO_OLD),
            ([("__name__", "up")], (past - 1, future + 1), TOO_NEW),
            ([("__name__", "v" * 13), ("x" * 11, "")], (future + 1,), NAME_TOO_LONG),
            ([("__x", "v" * 13), ("x" * 11, ""), ("a", ""), ("b", ""), ("c", "")], (), TOO_MANY_LABELS),
        ]:
            request = WriteRequest(timeseries=[series(("__name__", "ok")), series(*labels, times=times)])
            raw = request.SerializeToString()
            expected = (2, b"" if code == FINE else bytes([FINE, code]))
            self.assertEqual(_python(raw, *BOUNDS), expected, labels)
            self.assertEqual(judge_objects(request, SMALL, NOW), expected, labels)

    def test_histograms(self) -> None:
        """
        A native histogram's timestamp counts as a sample's does.
        """
        one = series(("__name__", "h"), times=())
        one.histograms.add(timestamp=NOW_MS + 60_001)
        raw = WriteRequest(timeseries=[one]).SerializeToString()
        self.assertEqual(_python(raw, *BOUNDS), (1, bytes([TOO_NEW])))

    def test_no_timestamp(self) -> None:
        """
        A sample without a timestamp field is at 0 (protobuf's default):
        before any window that has a start.
        """
        raw = b"\x0a\x0f\x0a\x08\x0a\x02up\x12\x02up\x12\x03\x09" + b""
        one = TimeSeries()
        one.labels.add(name="__name__", value="up")
        one.samples.add(value=0.0)
        raw = WriteRequest(timeseries=[one]).SerializeToString()
        self.assertEqual(_python(raw, *BOUNDS), (1, bytes([TOO_OLD])))
        self.assertEqual(_python(raw, 30, 1024, 2048, -(2**63), 2**63 - 1), (1, b""))

    def test_steps_aside(self) -> None:
        """
        Bodies out of the shape: L{None}, for the objects to judge.
        """
        label = b"\x0a\x0e\x0a\x08__name__\x12\x02up"
        for raw in [
            b"\x08\x01",
            b"\x0a\x02\x0a\x00",  # an empty label
            b"\x0a\x14" + label + b"\x12\x02\x10\x80",  # a truncated timestamp
            b"\x0a\x14" + label + b"\x12\x02\x12\x00",  # a timestamp not a varint
            b"\x0a\x14" + label + b"\x12\x02\x0b\x00",  # a group in a sample
            b"\x0a\x14" + label + b"\x12\x02\x09\x00",  # a double cut short
            b"\x0a\x14" + label + b"\x12\x02\x00\x00",  # field 0
        ]:
            self.assertIsNone(_python(raw, *BOUNDS), raw)

    def test_valid_body_no_codes(self) -> None:
        """
        A body within every limit is C{b""}: nothing built per series.
        """
        request = WriteRequest(timeseries=[series(("__name__", "up"))] * 3)
        self.assertEqual(_python(request.SerializeToString(), *BOUNDS), (3, b""))
        self.assertEqual(_python(b"", *BOUNDS), (0, b""))


class CompareTests(SynchronousTestCase):
    """
    C against the Python reference: the same answer on any bytes.
    """

    def setUp(self) -> None:
        _needs_extension(self)

    def both(self, raw: bytes, bounds: tuple[int, int, int, int, int] = BOUNDS) -> Any:
        got = _relabel_c.check_samples(raw, *bounds)
        self.assertEqual(got, _python(raw, *bounds))
        for after in _AFTER:
            view = memoryview(raw + after)[: len(raw)]
            self.assertEqual(_relabel_c.check_samples(view, *bounds), got)
        return got

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests())
    def test_requests(self, request: WriteRequest) -> None:
        got = self.both(request.SerializeToString())
        if got is not None:
            self.assertEqual(got, judge_objects(request, SMALL, NOW))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    @example(b"\x0a\x05\x0a\x03\x0a\x01a\x12\x0b\x10" + b"\xff" * 9 + b"\x01")
    @example(b"\x0a\x05\x0a\x03\x0a\x01a\x12\x0b\x10" + b"\xff" * 9 + b"\x02")
    @example(b"\x0a\x03\x22\x01\x78")
    def test_random_bytes(self, raw: bytes) -> None:
        self.both(raw)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(), st.data())
    def test_truncated(self, request: WriteRequest, data: st.DataObject) -> None:
        raw = request.SerializeToString()
        assume(raw)
        self.both(raw[: data.draw(st.integers(0, len(raw) - 1))])

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(), st.randoms(use_true_random=False))
    def test_mutated(self, request: WriteRequest, rng: random.Random) -> None:
        raw = bytearray(request.SerializeToString())
        assume(raw)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(raw) + 1)
            what = rng.random()
            if what < 0.5 and at < len(raw):
                raw[at] = rng.choice([0x00, 0x01, 0x0A, 0x10, 0x12, 0x22, 0x78, 0x80, 0xFF])
            elif what < 0.75:
                raw[at:at] = bytes([rng.randrange(256)])
            elif at < len(raw):
                del raw[at]
        self.both(bytes(raw))

    def test_extreme_limits(self) -> None:
        """
        The widest window and largest limits, and the narrowest.
        """
        raw = WriteRequest(
            timeseries=[series(("__name__", "up"), times=(2**63 - 1, -(2**63)))]
        ).SerializeToString()
        self.assertEqual(self.both(raw, (2**62, 2**62, 2**62, -(2**63), 2**63 - 1)), (1, b""))
        self.assertEqual(self.both(raw, (0, 0, 0, 0, 0)), (1, bytes([TOO_MANY_LABELS])))

    def test_many_bad_series(self) -> None:
        """
        The codes grow past their first allocation.
        """
        good, bad = series(("__name__", "up")), series(("__name__", "up"), ("__x", "1"))
        request = WriteRequest(timeseries=[good] * 40 + [bad] * 300 + [good])
        got = self.both(request.SerializeToString())
        self.assertEqual(got, (341, bytes(40) + bytes([RESERVED_NAME]) * 300 + b"\x00"))

    def test_arguments(self) -> None:
        for bad in ("text", 1, None):
            with self.assertRaises(TypeError):
                _relabel_c.check_samples(bad, *BOUNDS)
        with self.assertRaises(TypeError):
            _relabel_c.check_samples(b"")
        with self.assertRaises(OverflowError):
            _relabel_c.check_samples(b"", 1, 1, 1, 0, 2**64)

    def test_implementation(self) -> None:
        self.assertEqual(_samplecheck.IMPLEMENTATION, "c")
        self.assertIs(_samplecheck.check_samples, _relabel_c.check_samples)


# -- the limits as the intakes apply them ----------------------------------------


def rw_facts(**kw: Any) -> RequestFacts:
    return RequestFacts(
        content_type="application/x-protobuf",
        content_encoding="snappy",
        received_at=NOW,
        samples=kw.pop("samples", SampleLimits()),
        **kw,
    )


def rw(request: WriteRequest, facts: RequestFacts, check: str = "labels", **kw: Any) -> Any:
    options: dict[str, Any] = dict(add={}, remove=frozenset(), limit=1 << 24)
    options.update(kw)
    return intake.remote_write_pushes(
        snappy_compress(request.SerializeToString()), facts, check=check, **options
    )


def relayed(accepted: Any) -> WriteRequest:
    [push] = accepted.pushes
    return WriteRequest.FromString(snappy_decompress(push.body, 1 << 24))


TEN_YEARS_MS = 10 * 365 * 86_400_000


class RemoteWriteTests(SynchronousTestCase):
    def test_valid_relayed_as_it_came(self) -> None:
        request = WriteRequest(timeseries=[series(("__name__", "up"), ("job", "a"))] * 3)
        body = snappy_compress(request.SerializeToString())
        accepted = intake.remote_write_pushes(
            body, rw_facts(), add={}, remove=frozenset(), limit=1 << 20, check="labels"
        )
        self.assertIsNone(accepted.refused)
        self.assertEqual(accepted.pushes[0].body, body)

    def test_far_future_dropped(self) -> None:
        """
        The hostile probe's sample ten years ahead: left out, the others
        relayed, and the message names the limit, its value, the series.
        """
        request = WriteRequest(
            timeseries=[
                series(("__name__", "up"), ("job", "a")),
                series(("__name__", "evil"), times=(NOW_MS + TEN_YEARS_MS,)),
                series(("__name__", "up"), ("job", "b")),
            ]
        )
        accepted = rw(request, rw_facts())
        self.assertEqual(
            list(relayed(accepted).timeseries), [request.timeseries[0], request.timeseries[2]]
        )
        self.assertEqual(
            accepted.refused.message,
            "remote write: 1 of 3 series refused and not relayed, the other 2 accepted (1 by "
            'max_future); the first: timeseries[1] {__name__="evil"}: a sample at '
            "2033-11-11T22:13:20Z (2015360000000 ms) is more than max_future (10m) ahead of the "
            "gateway's clock",
        )
        self.assertEqual(accepted.refused.by_reason, (("max_future", 1),))

    def test_each_message(self) -> None:
        limits = attr_limits(max_past=86_400.0)
        many = [("__name__", "m")] + [(f"l{i:05}", "v") for i in range(20_000)]
        for one, message in [
            (series(*many), '{__name__="m", l00000="v", l00001="v", l00002="v", l00003="v", '
             'l00004="v", l00005="v", l00006="v", ... 19993 more}: 20001 labels, more than '
             "max_labels_per_series (30)"),
            (series(("__name__", "m"), ("big", "v" * 100 * 1024)),
             '{__name__="m", big="' + "v" * 64 + '..."}: the value of \'big\' is 102400 bytes, '
             "longer than max_label_value_length (2048)"),
            (series(("__name__", "m"), ("n" * 1025, "v")),
             '{__name__="m", ' + "n" * 64 + '...="v"}: label name ' + repr("n" * 64)
             + "... is 1025 bytes, longer than max_label_name_length (1024)"),
            (series(("__name__", "m"), ("__tenant__", "x")),
             '{__name__="m", __tenant__="x"}: label name \'__tenant__\' is reserved (names '
             "starting with __ other than __name__)"),
            (series(("__name__", "m"), times=(NOW_MS - 86_400_001,)),
             '{__name__="m"}: a sample at 2023-11-13T22:13:19Z (1699913599999 ms) is more than '
             "max_past (1h) behind the gateway's clock".replace("(1h)", "(24h)")),
        ]:
            request = WriteRequest(timeseries=[series(("__name__", "ok")), one])
            accepted = rw(request, rw_facts(samples=limits))
            self.assertEqual(len(relayed(accepted).timeseries), 1)
            self.assertTrue(accepted.refused.message.endswith("timeseries[1] " + message),
                            accepted.refused.message)

    def test_nothing_valid_left(self) -> None:
        request = WriteRequest(
            timeseries=[series(("__name__", "up"), times=(NOW_MS + TEN_YEARS_MS,))] * 2
        )
        error = self.assertRaises(AllSeriesRefused, rw, request, rw_facts())
        self.assertEqual(error.status, 400)
        self.assertTrue(
            error.message.startswith(
                "remote write: all 2 series refused, nothing relayed (2 by max_future)"
            ),
            error.message,
        )

    def test_too_many_series(self) -> None:
        """
        Too many series refuse the whole push, before the protobuf parse.
        """
        request = WriteRequest(timeseries=[series(("__name__", "up"))] * 11)
        facts = rw_facts(samples=attr_limits(max_series_per_push=10))
        self.patch(intake.remote_write, "decode", _never)
        error = self.assertRaises(LimitExceeded, rw, request, facts)
        self.assertEqual(
            (error.status, error.reason, error.message),
            (
                400,
                "max_series_per_push",
                "remote write: 11 series in one push, more than max_series_per_push (10); "
                "send smaller batches",
            ),
        )

    def test_where_judged(self) -> None:
        """
        At C{check: labels}, and at every level for a label-tenancy
        upstream; not at C{headers} or C{decode} for a tenant-aware one
        (Mimir judges each tenant itself).
        """
        request = WriteRequest(
            timeseries=[
                series(("__name__", "up")),
                series(("__name__", "up"), times=(NOW_MS + TEN_YEARS_MS,)),
            ]
        )
        for check, label, judged in [
            ("labels", None, True),
            ("decode", None, False),
            ("headers", None, False),
            ("labels", "tenant", True),
            ("decode", "tenant", True),
            ("headers", "tenant", True),
        ]:
            accepted = rw(request, rw_facts(tenant_label=label, tenant="t"), check=check)
            self.assertEqual(accepted.refused is not None, judged, (check, label))
            kept = relayed(accepted).timeseries
            self.assertEqual(len(kept), 1 if judged else 2, (check, label))
            if label is not None:
                self.assertEqual(
                    [(one.name, one.value) for one in kept[0].labels],
                    [("__name__", "up"), ("tenant", "t")],
                )

    def test_objects_judge_other_shapes(self) -> None:
        """
        A body out of the byte reader's shape is judged on the objects,
        the same way, with label actions applied to what is left.
        """
        request = WriteRequest(
            timeseries=[
                series(("__name__", "up"), times=(NOW_MS + TEN_YEARS_MS,)),
                series(("__name__", "up"), ("job", "a")),
            ]
        )
        raw = request.SerializeToString()
        # The second series' first label written value first: still a
        # valid protobuf, not the bytes' shape.
        out_of_shape = raw.replace(
            b"\x0a\x0e\x0a\x08__name__\x12\x02up\x0a\x08",
            b"\x0a\x0e\x12\x02up\x0a\x08__name__\x0a\x08",
        )
        self.assertNotEqual(out_of_shape, raw)
        self.assertEqual(WriteRequest.FromString(out_of_shape), request)
        for check in ("labels", "headers"):
            accepted = intake.remote_write_pushes(
                snappy_compress(out_of_shape),
                rw_facts(tenant_label="tenant", tenant="t"),
                add={},
                remove=frozenset(),
                limit=1 << 20,
                check=check,
            )
            self.assertEqual(accepted.refused.by_reason, (("max_future", 1),))
            [kept] = relayed(accepted).timeseries
            self.assertEqual(
                [(one.name, one.value) for one in kept.labels],
                [("__name__", "up"), ("job", "a"), ("tenant", "t")],
            )

    def test_label_rules_first(self) -> None:
        """
        A malformed series refuses the push whole, as before: it is not a
        limit but a bad request.
        """
        request = WriteRequest(
            timeseries=[series(("job", "a"), ("__name__", "up"), times=(NOW_MS + TEN_YEARS_MS,))]
        )
        error = self.assertRaises(DecodeError, rw, request, rw_facts())
        self.assertIn("labels not sorted", error.message)


class WithoutExtensionTests(SynchronousTestCase):
    """
    Without the C reader the objects judge, with the same outcome.
    """

    def setUp(self) -> None:
        self.patch(_samplecheck, "IMPLEMENTATION", "python")
        self.patch(_samplecheck, "check_samples", _never)

    def test_remote_write(self) -> None:
        request = WriteRequest(
            timeseries=[
                series(("__name__", "up")),
                series(("__name__", "up"), ("__x", "1")),
            ]
        )
        accepted = rw(request, rw_facts(tenant_label="tenant", tenant="t"), check="headers")
        self.assertEqual(accepted.refused.by_reason, (("reserved_label_name", 1),))
        self.assertEqual(len(relayed(accepted).timeseries), 1)

    def test_seal(self) -> None:
        accepted = SealTests("test_valid").push(seal_sample_families(NOW_MS), labels={"a": "b"})
        self.assertIsNone(accepted.refused)
        self.assertRaises(
            AllSeriesRefused,
            SealTests("test_valid").push,
            seal_sample_families(NOW_MS),
            labels={"__a": "b"},
        )


def attr_limits(**kw: Any) -> SampleLimits:
    import attr

    return attr.evolve(SampleLimits(), **kw)


def _never(*args: object) -> None:
    raise AssertionError("called")


class SealTests(SynchronousTestCase):
    """
    Seal pushes, bodies as seal sends them: the series sealgw builds are
    judged too.
    """

    def push(self, families: list[MetricFamily], **kw: Any) -> intake.Intake:
        facts = RequestFacts(
            content_encoding="snappy",
            identity="node-1",
            client_ip="192.0.2.1",
            received_at=NOW,
            samples=kw.pop("samples", SampleLimits()),
        )
        return intake.seal_pushes(
            seal_body(families, **kw), facts, add={}, remove=frozenset(), batch_size=500,
            limit=1 << 20,
        )

    def test_valid(self) -> None:
        accepted = self.push(seal_sample_families(NOW_MS))
        self.assertIsNone(accepted.refused)
        self.assertEqual(len(accepted.pushes), 1)

    def test_far_future_metric(self) -> None:
        families = seal_sample_families(NOW_MS)
        evil = MetricFamily(name="evil", type=GAUGE)
        metric = evil.metric.add()
        metric.gauge.value = 1.0
        metric.timestamp_ms = NOW_MS + TEN_YEARS_MS
        accepted = self.push([*families, evil])
        self.assertEqual(accepted.refused.by_reason, (("max_future", 1),))
        self.assertEqual(accepted.refused.total, 14)
        self.assertIn(
            '{__name__="evil", client_ip="192.0.2.1", node_name="node-1"}: a sample at '
            "2033-11-11T22:13:20Z",
            accepted.refused.message,
        )
        self.assertNotIn("[", accepted.refused.example.split(" ")[0])
        [push] = accepted.pushes
        names = {
            label.value
            for one in WriteRequest.FromString(snappy_decompress(push.body, 1 << 20)).timeseries
            for label in one.labels
            if label.name == "__name__"
        }
        self.assertNotIn("evil", names)
        self.assertIn("current_time", names)

    def test_reserved_client_label(self) -> None:
        """
        A reserved name among the client's labels is on every series:
        nothing is left, nothing relayed.
        """
        error = self.assertRaises(
            AllSeriesRefused,
            self.push,
            seal_sample_families(NOW_MS),
            labels={"__tenant__": "x"},
        )
        self.assertTrue(
            error.message.startswith(
                "seal push: all 13 series refused, nothing relayed (13 by reserved_label_name)"
            ),
            error.message,
        )

    def test_too_many_series(self) -> None:
        """
        Counted on the metrics, before any series is built, and on the
        series built (a histogram makes several).
        """
        families = seal_sample_families(NOW_MS)
        error = self.assertRaises(
            LimitExceeded, self.push, families, samples=attr_limits(max_series_per_push=2)
        )
        self.assertIn("3 series in one push, more than max_series_per_push (2)", error.message)
        error = self.assertRaises(
            LimitExceeded, self.push, families, samples=attr_limits(max_series_per_push=12)
        )
        self.assertIn("13 series in one push, more than max_series_per_push (12)", error.message)


class PushgatewayTests(SynchronousTestCase):
    def push(self, text: bytes, path: str = "/metrics/job/j", **kw: Any) -> intake.Intake:
        facts = RequestFacts(content_type="text/plain", received_at=NOW, samples=SampleLimits(**kw))
        return intake.pushgateway_pushes(
            text,
            facts,
            grouping=pushgateway.grouping_key(path),
            add={},
            remove=frozenset(),
            batch_size=500,
            limit=1 << 20,
        )

    def test_bad_timestamps(self) -> None:
        """
        C{NaN}, infinities and timestamps past int64 milliseconds are a
        400 naming the timestamp, never wrapped and never a 500.
        """
        for stamp, message in [
            (b"NaN", "timestamp nan is not a time"),
            (b"+Inf", "timestamp inf is not a time"),
            (b"-Inf", "timestamp -inf is not a time"),
            (b"99999999999999999999999", "timestamp 99999999999999991611392 ms is outside int64"),
            (b"9223372036854775808000", "is outside int64"),
        ]:
            error = self.assertRaises(
                LimitExceeded, self.push, b"ok 1\nevil 1 " + stamp + b"\n"
            )
            self.assertEqual((error.status, error.reason), (400, "invalid_timestamp"))
            self.assertIn("pushgateway: 'evil': ", error.message)
            self.assertIn(message, error.message)

    def test_far_future_timestamp(self) -> None:
        accepted = self.push(
            b"ok 1\nevil 1 %d\n" % (NOW_MS + TEN_YEARS_MS)
        )
        self.assertEqual(accepted.refused.by_reason, (("max_future", 1),))
        self.assertIn('{__name__="evil", job="j"}', accepted.refused.message)

    def test_reserved_grouping_key(self) -> None:
        for path in ("/metrics/job/j/__tenant__/x", "/metrics/job/j/__tenant__@base64/eA"):
            error = self.assertRaises(LimitExceeded, pushgateway.grouping_key, path)
            self.assertEqual(error.reason, "reserved_label_name")
            self.assertEqual(
                error.message,
                "pushgateway: label name '__tenant__' in the path is reserved (names starting "
                "with __ are Prometheus's own)",
            )

    def test_too_many_samples(self) -> None:
        text = b"".join(b"m{i=\"%d\"} 1\n" % i for i in range(11))
        error = self.assertRaises(LimitExceeded, self.push, text, max_series_per_push=10)
        self.assertIn("11 series in one push", error.message)

    def test_long_value(self) -> None:
        accepted = self.push(b'ok 1\nm{v="' + b"v" * 3000 + b'"} 1\n')
        self.assertEqual(accepted.refused.by_reason, (("max_label_value_length", 1),))


class LimitsTests(SynchronousTestCase):
    def test_window(self) -> None:
        self.assertEqual(SampleLimits().window(NOW), (-(2**63), NOW_MS + 600_000))
        self.assertEqual(
            SampleLimits(max_future=0, max_past=60).window(NOW), (NOW_MS - 60_000, 2**63 - 1)
        )

    def test_value_of(self) -> None:
        limits = SampleLimits(max_future=90, max_past=7200)
        self.assertEqual(
            [limits.value_of(name) for name in ("max_future", "max_past", "max_labels_per_series")],
            ["90s", "2h", "30"],
        )
        self.assertEqual(SampleLimits().value_of("max_past"), "off")

    def test_timestamp_ms(self) -> None:
        self.assertEqual(limits.timestamp_ms(1.5, "x"), 1500)
        self.assertEqual(limits.timestamp_ms(-0.005, "x"), -5)
        self.assertRaises(LimitExceeded, limits.timestamp_ms, float("nan"), "x")
        self.assertRaises(LimitExceeded, limits.timestamp_ms, 2.0**63 / 1000 + 1e6, "x")
