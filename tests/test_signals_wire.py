"""
L{sealgw.signals._wire}: series written as bytes read back by protobuf as
the series built from objects.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import _wire as wire
from sealgw.signals.proto.remote_pb2 import Label, Sample, TimeSeries, WriteRequest

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)
# Hypothesis leaves surrogates out of text by default: every value is UTF-8.
_values = st.text(max_size=300)
_labels = st.dictionaries(_names, _values, max_size=8)
_floats = st.floats(allow_nan=True, allow_infinity=True)
_timestamps = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _expected(labels: dict[str, str], value: float, timestamp: int) -> TimeSeries:
    return TimeSeries(
        labels=[Label(name=k, value=labels[k]) for k in sorted(labels) if labels[k]],
        samples=[Sample(value=value, timestamp=timestamp)],
    )


def _same(test: SynchronousTestCase, got: TimeSeries, expected: TimeSeries) -> None:
    test.assertEqual(list(got.labels), list(expected.labels))
    [a], [b] = got.samples, expected.samples
    test.assertEqual(a.timestamp, b.timestamp)
    if math.isnan(b.value):
        test.assertTrue(math.isnan(a.value))
    else:
        test.assertEqual(math.copysign(1, a.value), math.copysign(1, b.value))
        test.assertEqual(a.value, b.value)


class SeriesTests(SynchronousTestCase):
    @given(_labels, _floats, _timestamps)
    def test_reads_back_as_objects(self, labels: dict[str, str], value: float, ts: int) -> None:
        encoded = wire.series(labels, value, ts, wire.LabelCache())
        _same(self, TimeSeries.FromString(encoded), _expected(labels, value, ts))

    @given(st.lists(st.tuples(_labels, _floats, _timestamps), max_size=20))
    def test_write_request(self, rows: list[tuple[dict[str, str], float, int]]) -> None:
        encode = wire.LabelCache()
        request = WriteRequest.FromString(
            wire.write_request([wire.series(*row, encode) for row in rows])
        )
        self.assertEqual(len(request.timeseries), len(rows))
        for got, row in zip(request.timeseries, rows, strict=True):
            _same(self, got, _expected(*row))

    def test_long_lengths(self) -> None:
        # Lengths of one, two and three varint bytes, at every level.
        for size in (127, 128, 16383, 16384, 70000):
            labels = {"__name__": "m", "big": "x" * size}
            encoded = wire.series(labels, 1.5, 1_700_000_000_000, wire.LabelCache())
            _same(self, TimeSeries.FromString(encoded), _expected(labels, 1.5, 1_700_000_000_000))
            [one] = WriteRequest.FromString(wire.write_request([encoded])).timeseries
            self.assertEqual(one.labels[1].value, "x" * size)  # after __name__

    def test_labels_encoded_once(self) -> None:
        encode = wire.LabelCache()
        self.assertIs(encode("job", "a"), encode("job", "a"))
        self.assertEqual(
            Label.FromString(encode("job", "ä")[2:]), Label(name="job", value="ä")
        )
