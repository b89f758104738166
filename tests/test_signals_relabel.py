"""
Tests for L{sealgw.signals._relabel}: label actions on encoded bytes give
exactly what the protobuf objects give, or step aside; each test with
L{relabel} as the gateway uses it (the C loop when it was built) and with
the Python loop.  C against Python, on far more bodies: C{tests.test_relabel_c}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import _relabel, remote_write
from sealgw.signals._relabel import relabel
from sealgw.signals.proto.remote_pb2 import WriteRequest


def _python(raw: bytes, add: dict[str, str], remove: frozenset[str]) -> Optional[bytes]:
    return _relabel._relabel_python(raw, *_relabel.prepare(add, remove))


#: L{relabel}, and the same with the Python loop whether or not C was built.
_BOTH: tuple[Callable[[bytes, dict[str, str], frozenset[str]], Optional[bytes]], ...] = (
    relabel,
    _python,
)

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
        expected = WriteRequest.FromString(raw)
        remote_write.apply_labels(expected, add, remove)
        for implementation in _BOTH:
            got = implementation(raw, add, remove)
            assert got is not None
            self.assertEqual(WriteRequest.FromString(got), expected)

    def test_unsorted_steps_aside(self) -> None:
        request = WriteRequest()
        series = request.timeseries.add()
        series.labels.add(name="job", value="x")
        series.labels.add(name="__name__", value="up")
        for implementation in _BOTH:
            self.assertIsNone(implementation(request.SerializeToString(), {"a": "b"}, frozenset()))

    def test_label_after_samples_steps_aside(self) -> None:
        request = WriteRequest()
        series = request.timeseries.add()
        series.labels.add(name="__name__", value="up")
        series.samples.add(value=1.0, timestamp=1)
        raw = bytearray(request.SerializeToString())
        label = b"\x0a\x07\x0a\x01z\x12\x02zz"
        raw[1] += len(label)  # the series' length prefix (one byte here)
        raw += label
        for implementation in _BOTH:
            self.assertIsNone(implementation(bytes(raw), {"a": "b"}, frozenset()))

    def test_garbage_steps_aside(self) -> None:
        for raw in (b"\x08\x01", b"\x0a\xff", b"\x0a\x05\x0a\x03", b"\x0a\x02\x0b\x00"):
            for implementation in _BOTH:
                self.assertIsNone(implementation(raw, {"a": "b"}, frozenset()), raw)
