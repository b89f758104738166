"""
The C conversion of remote write 2.0 to 1.0 (C{convert_v2} in
C{sealgw.signals._relabel_c}) against its reference, the conversion of the
protobuf objects (L{remote_write2.to_v1}): the same 1.0 request and counts
for any request it converts, and a step aside (L{None}) for every request
with a problem, whose objects then say what it is.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sealgw.signals import remote_write2
from sealgw.signals.errors import PayloadError
from sealgw.signals.proto import remote_pb2
from sealgw.signals.proto import remote_v2_pb2 as v2
from tests.rw2_support import native_histogram

LIMIT = 1 << 24

try:
    from sealgw.signals._relabel_c import convert_v2
except ImportError:  # pragma: no cover
    convert_v2 = None


def _require_c() -> Any:
    if convert_v2 is None:
        if os.environ.get("SEALGW_REQUIRE_C_EXTENSIONS"):
            raise AssertionError("the C extension was not built")
        raise SkipTest("the C extension was not built")
    return convert_v2


SYMBOLS = ["__name__", "job", "a", "b", "le", "", "é", "zz", "up", "x" * 200, "trace_id"]


@st.composite
def requests(draw: Any) -> v2.Request:
    symbols = [""] + draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=12))
    count = len(symbols)
    refs = st.integers(0, count - 1)
    request = v2.Request(symbols=symbols)
    for _ in range(draw(st.integers(0, 5))):
        series = request.timeseries.add()
        pairs = draw(st.lists(st.tuples(refs, refs), max_size=6))
        series.labels_refs.extend(ref for pair in pairs for ref in pair)
        for value, timestamp in draw(
            st.lists(st.tuples(st.floats(), st.integers(-(2**63), 2**63 - 1)), max_size=3)
        ):
            series.samples.add(value=value, timestamp=timestamp)
        for timestamp in draw(st.lists(st.integers(-(2**40), 2**40), max_size=2)):
            series.histograms.append(native_histogram(timestamp))
        for _ in range(draw(st.integers(0, 2))):
            exemplar_pairs = draw(st.lists(st.tuples(refs, refs), max_size=3))
            series.exemplars.add(
                labels_refs=[ref for pair in exemplar_pairs for ref in pair],
                value=draw(st.floats(allow_nan=False)),
                timestamp=draw(st.integers(-(2**63), 2**63 - 1)),
            )
        if draw(st.booleans()):
            series.metadata.type = draw(st.integers(-3, 9))  # type: ignore[assignment]
            series.metadata.help_ref = draw(refs)
            series.metadata.unit_ref = draw(refs)
        series.created_timestamp = draw(st.integers(0, 2**40))
    return request


def _reference(raw: bytes) -> Optional[tuple[remote_pb2.WriteRequest, remote_write2.Written]]:
    """
    The objects' conversion of C{raw}, or L{None} when they refuse it.
    """
    try:
        request = remote_write2.decode(raw)
        remote_write2.check_references(request)
        remote_write2.expanded_size(request, LIMIT)
    except PayloadError:
        return None
    converted = remote_pb2.WriteRequest.FromString(remote_write2.to_v1(request))
    return converted, remote_write2.written(request)


class ConvertTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.convert = _require_c()

    def converted(self, raw: bytes) -> Optional[tuple[remote_pb2.WriteRequest, remote_write2.Written]]:
        result = self.convert(raw, LIMIT)
        if result is None:
            return None
        v1, samples, histograms, exemplars = result
        return (
            remote_pb2.WriteRequest.FromString(v1),
            remote_write2.Written(samples, histograms, exemplars),
        )

    @given(requests())
    def test_same_as_objects(self, request: v2.Request) -> None:
        raw = request.SerializeToString()
        expected = _reference(raw)
        got = self.converted(raw)
        if expected is None:
            self.assertIsNone(got)
        else:
            self.assertIsNotNone(got, "a valid request in the senders' shape was not converted")
            self.assertEqual(got, expected)

    @given(requests(), st.data())
    def test_mutated(self, request: v2.Request, data: Any) -> None:
        """
        Any bytes: the C walk never reads past the body, and on any that
        protobuf reads as a request (the only ones the intake hands it)
        either steps aside or agrees with the objects.
        """
        raw = bytearray(request.SerializeToString())
        if raw:
            for _ in range(data.draw(st.integers(1, 4))):
                at = data.draw(st.integers(0, len(raw) - 1))
                raw[at] = data.draw(st.integers(0, 255))
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        self.convert(bytes(raw), LIMIT)
        try:
            remote_write2.decode(bytes(raw))
        except PayloadError:
            return
        got = self.converted(bytes(raw))
        if got is not None:
            self.assertEqual(got, _reference(bytes(raw)))

    def test_steps_aside_for_problems(self) -> None:
        """
        A bad reference, an odd list, symbols[0] not empty, labels past
        the limit, references not packed: None, and the objects say why
        (or, for the last, convert).
        """
        def one(*refs: int, symbols: tuple[str, ...] = ("", "__name__", "up")) -> bytes:
            request = v2.Request(symbols=symbols)
            request.timeseries.add(labels_refs=refs).samples.add(value=1, timestamp=1)
            return request.SerializeToString()

        for raw in (one(1, 3), one(1, 2, 1), one(1, 2, symbols=("x", "__name__", "up"))):
            self.assertIsNone(self.convert(raw, LIMIT))
            self.assertIsNone(_reference(raw))
        self.assertIsNone(self.convert(one(1, 2), 9))
        self.assertIsNotNone(self.convert(one(1, 2), 10))
        # labels_refs written one varint a field (legal, not what senders do).
        unpacked = b"\x22\x00\x22\x08__name__\x22\x02up" + b"\x2a\x04\x08\x01\x08\x02"
        self.assertIsNone(self.convert(unpacked, LIMIT))
        expected = _reference(unpacked)
        assert expected is not None
        self.assertEqual(
            [(label.name, label.value) for label in expected[0].timeseries[0].labels],
            [("__name__", "up")],
        )

    @given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 40)), min_size=33, max_size=200))
    def test_many_labels(self, pairs: Any) -> None:
        """
        Past 32 labels a series in any order is merged, not sorted by
        insertion: the same order as the objects', names repeated
        included (their order kept).
        """
        request = v2.Request(symbols=[""] + [f"n{index:02d}" for index in range(40)])
        series = request.timeseries.add(labels_refs=[ref for pair in pairs for ref in pair])
        series.samples.add(value=1, timestamp=1)
        raw = request.SerializeToString()
        self.assertEqual(self.converted(raw), _reference(raw))

    def test_reversed_labels(self) -> None:
        """
        100,000 labels in reverse order: sorted as the objects sort them
        (an insertion sort would take minutes).
        """
        count = 100_000
        request = v2.Request(symbols=[""] + [f"l{index:06d}" for index in range(count)])
        request.timeseries.add(
            labels_refs=[ref for index in range(count, 0, -1) for ref in (index, index)]
        ).samples.add(value=1, timestamp=1)
        raw = request.SerializeToString()
        got = self.converted(raw)
        assert got is not None
        names = [label.name for label in got[0].timeseries[0].labels]
        self.assertEqual(names, sorted(names))
        self.assertEqual(len(names), count)
        relabelled = remote_write2.apply_labels_encoded(raw, request, {"a": "b"}, frozenset())
        assert relabelled is not None
        refs = list(v2.Request.FromString(relabelled).timeseries[0].labels_refs)
        self.assertEqual(refs[:4], [count + 1, count + 2, 1, 1])

    def test_metadata_bomb(self) -> None:
        """
        A large help string named by every series' metadata counts
        against the limit on every series, though one record is written:
        each is built before it is found to repeat.
        """
        request = v2.Request(symbols=["", "__name__", "up", "h" * 10_000])
        for _ in range(200):
            series = request.timeseries.add(labels_refs=[1, 2])
            series.samples.add(value=1, timestamp=1)
            series.metadata.type = v2.Metadata.METRIC_TYPE_GAUGE
            series.metadata.help_ref = 3
        raw = request.SerializeToString()
        self.assertIsNone(self.convert(raw, 1_000_000))
        with self.assertRaises(PayloadError):
            remote_write2.expanded_size(request, 1_000_000)
        self.assertEqual(remote_write2.expanded_size(request, LIMIT), 200 * (10 + 10_000))
        self.assertIsNotNone(self.convert(raw, LIMIT))

    def test_metadata_once_a_family(self) -> None:
        request = v2.Request(symbols=["", "__name__", "h_bucket", "le", "1", "2", "help"])
        for le in (4, 5):
            series = request.timeseries.add(labels_refs=[1, 2, 3, le])
            series.samples.add(value=1, timestamp=1)
            series.metadata.type = v2.Metadata.METRIC_TYPE_HISTOGRAM
            series.metadata.help_ref = 6
        got = self.converted(request.SerializeToString())
        assert got is not None
        [metadata] = got[0].metadata
        self.assertEqual(
            (metadata.type, metadata.metric_family_name, metadata.help),
            (remote_pb2.MetricMetadata.HISTOGRAM, "h_bucket", "help"),
        )

    def test_many_metadata_records(self) -> None:
        """
        Past the first sizes of the table that remembers records: every
        family once.
        """
        request = v2.Request(symbols=["", "__name__", "help"])
        for index in range(300):
            request.symbols.append(f"m{index}")
            for _ in range(2):
                series = request.timeseries.add(labels_refs=[1, 3 + index])
                series.samples.add(value=1, timestamp=1)
                series.metadata.type = v2.Metadata.METRIC_TYPE_GAUGE
                series.metadata.help_ref = 2
        got = self.converted(request.SerializeToString())
        expected = _reference(request.SerializeToString())
        self.assertEqual(got, expected)
        assert got is not None
        self.assertEqual(len(got[0].metadata), 300)


ADDS = st.dictionaries(st.sampled_from(["tenant", "job", "a", "new", "é"]), st.sampled_from(["", "team-a", "up", "x", "fresh"]), max_size=3)
REMOVES = st.frozensets(st.sampled_from(["b", "job", "zz", "tenant"]), max_size=2)


class RelabelTests(SynchronousTestCase):
    """
    L{remote_write2.apply_labels_encoded} in C against L{apply_labels} on
    the objects.
    """

    def setUp(self) -> None:
        _require_c()

    def expected(self, request: v2.Request, add: Any, remove: Any) -> Optional[v2.Request]:
        copy = v2.Request()
        copy.CopyFrom(request)
        return copy if remote_write2.apply_labels(copy, add, remove) else None

    @given(requests(), ADDS, REMOVES)
    def test_same_as_objects(self, request: v2.Request, add: Any, remove: Any) -> None:
        raw = request.SerializeToString()
        got = remote_write2.apply_labels_encoded(raw, request, add, remove)
        expected = self.expected(request, add, remove)
        if expected is None:
            self.assertIsNone(got)
        else:
            assert got is not None
            self.assertEqual(v2.Request.FromString(got), expected)

    def test_in_c(self) -> None:
        """
        A request as senders write it is relabelled on its bytes: the
        objects are not touched, and the new symbols come after the old.
        """
        request = v2.Request(symbols=["", "__name__", "up", "tenant", "team-b"])
        request.timeseries.add(labels_refs=[1, 2, 3, 4]).samples.add(value=1, timestamp=1)
        raw = request.SerializeToString()
        from sealgw.signals._relabel_c import relabel_v2

        new, changed = relabel_v2(raw, ((b"tenant", 3, 5),), (), b"\x22\x06team-a")
        self.assertTrue(changed)
        got = v2.Request.FromString(new)
        self.assertEqual(list(got.symbols), ["", "__name__", "up", "tenant", "team-b", "team-a"])
        self.assertEqual(list(got.timeseries[0].labels_refs), [1, 2, 3, 5])
        self.assertEqual(list(request.timeseries[0].labels_refs), [1, 2, 3, 4])
        # A name twice is left to the objects (they keep its last value).
        request.timeseries[0].labels_refs.extend([3, 2])
        self.assertIsNone(relabel_v2(request.SerializeToString(), (), (b"x",), b""))

    @given(requests(), st.data())
    def test_mutated(self, request: v2.Request, data: Any) -> None:
        """
        Any bytes protobuf reads as a request: the C walk steps aside or
        agrees with the objects, and never reads past the body.
        """
        raw = bytearray(request.SerializeToString())
        if raw:
            for _ in range(data.draw(st.integers(1, 4))):
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        try:
            parsed = remote_write2.decode(bytes(raw))
        except PayloadError:
            return  # the intake refuses it before any relabelling
        add, remove = {"tenant": "t", "a": ""}, frozenset({"job"})
        got = remote_write2.apply_labels_encoded(bytes(raw), parsed, add, remove)
        expected = self.expected(parsed, add, remove)
        if expected is None:
            self.assertIsNone(got)
        else:
            assert got is not None
            self.assertEqual(v2.Request.FromString(got), expected)
