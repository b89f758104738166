"""
Tests for L{sealgw.signals._relabel}: label actions on encoded bytes give
exactly what the protobuf objects give, or step aside.
"""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import remote_write
from sealgw.signals._relabel import relabel
from sealgw.signals.proto.remote_pb2 import WriteRequest

_names = st.sampled_from(["__name__", "a", "env", "job", "le", "network", "zone", "ünï"])
_values = st.text(max_size=140)  # past 127 bytes: two-byte lengths too


@st.composite
def write_requests(draw: st.DrawFn) -> WriteRequest:
    request = WriteRequest()
    for _ in range(draw(st.integers(0, 5))):
        series = request.timeseries.add()
        for name in sorted(draw(st.sets(_names, max_size=6))):
            series.labels.add(name=name, value=draw(_values))
        for _ in range(draw(st.integers(0, 2))):
            series.samples.add(value=draw(st.floats(allow_nan=False)), timestamp=draw(st.integers(0, 2**40)))
    if draw(st.booleans()):
        request.metadata.add(metric_family_name="up", help="h")
    return request


class RelabelTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(
        write_requests(),
        st.dictionaries(_names, st.text(max_size=20), max_size=3),
        st.frozensets(_names, max_size=2),
    )
    def test_same_as_objects(
        self, request: WriteRequest, add: dict[str, str], remove: frozenset[str]
    ) -> None:
        assume(add or remove)  # without actions nothing is rewritten at all
        raw = request.SerializeToString()
        got = relabel(raw, add, remove)
        assert got is not None
        expected = WriteRequest.FromString(raw)
        remote_write.apply_labels(expected, add, remove)
        self.assertEqual(WriteRequest.FromString(got), expected)

    def test_unsorted_steps_aside(self) -> None:
        request = WriteRequest()
        series = request.timeseries.add()
        series.labels.add(name="job", value="x")
        series.labels.add(name="__name__", value="up")
        self.assertIsNone(relabel(request.SerializeToString(), {"a": "b"}, frozenset()))

    def test_label_after_samples_steps_aside(self) -> None:
        request = WriteRequest()
        series = request.timeseries.add()
        series.labels.add(name="__name__", value="up")
        series.samples.add(value=1.0, timestamp=1)
        raw = bytearray(request.SerializeToString())
        label = b"\x0a\x07\x0a\x01z\x12\x02zz"
        raw[1] += len(label)  # the series' length prefix (one byte here)
        raw += label
        self.assertIsNone(relabel(bytes(raw), {"a": "b"}, frozenset()))

    def test_garbage_steps_aside(self) -> None:
        for raw in (b"\x08\x01", b"\x0a\xff", b"\x0a\x05\x0a\x03", b"\x0a\x02\x0b\x00"):
            self.assertIsNone(relabel(raw, {"a": "b"}, frozenset()), raw)
