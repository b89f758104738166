"""
Tests for L{sealgw.signals.remote_write}.
"""

from __future__ import annotations

import json
import math
import struct

from google.protobuf import unknown_fields
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import remote_write
from sealgw.signals.compression import snappy_decompress
from sealgw.signals.errors import DecodeError
from sealgw.signals.proto.remote_pb2 import Histogram, Sample, TimeSeries, WriteRequest


def series(labels: dict[str, str], samples: list[tuple[int, float]]) -> TimeSeries:
    return TimeSeries(
        labels=[{"name": k, "value": labels[k]} for k in sorted(labels)],
        samples=[Sample(timestamp=t, value=v) for t, v in samples],
    )


def request(*many: TimeSeries) -> WriteRequest:
    return WriteRequest(timeseries=list(many))


def labels_of(one: TimeSeries) -> list[tuple[str, str]]:
    return [(label.name, label.value) for label in one.labels]


UP = series({"__name__": "up", "job": "node"}, [(1000, 1.0), (2000, 0.0)])
TEMP = series({"__name__": "temp", "room": "a"}, [(1000, 21.5)])


def field(number: int, wire_type: int) -> bytes:
    return bytes([(number << 3) | wire_type])


class DecodeEncodeTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        original = request(UP, TEMP)
        body = remote_write.encode(original)
        raw = snappy_decompress(body, 1 << 20)
        self.assertEqual(raw, original.SerializeToString())
        self.assertEqual(remote_write.decode(raw), original)

    def test_malformed(self) -> None:
        error = self.assertRaises(DecodeError, remote_write.decode, b"\x0a\xff\xff\xff\x0f")
        self.assertEqual(error.message, "remote write: body is not a valid WriteRequest protobuf")

    def test_truncated(self) -> None:
        raw = request(UP).SerializeToString()
        self.assertRaises(DecodeError, remote_write.decode, raw[:-2])

    def test_field_number_zero(self) -> None:
        self.assertRaises(DecodeError, remote_write.decode, b"\x00\x01")

    def test_empty_body(self) -> None:
        self.assertEqual(remote_write.decode(b""), WriteRequest())

    def test_unknown_fields_survive(self) -> None:
        """
        Native histogram details, undeclared in remote.proto, and unknown
        fields of a series are re-encoded byte for byte, even after
        relabelling.
        """
        # timestamp = 1000, then count_int = 5, sum = 2.5, schema = 3 (sint32).
        histogram = b"".join(
            [
                field(15, 0) + b"\xe8\x07",
                field(1, 0) + b"\x05",
                field(3, 1) + struct.pack("<d", 2.5),
                field(4, 0) + b"\x06",
            ]
        )
        unknown = field(9, 2) + b"\x03abc"
        one = series({"__name__": "h", "job": "x"}, [])
        raw_series = (
            one.SerializeToString() + field(4, 2) + bytes([len(histogram)]) + histogram + unknown
        )
        raw = field(1, 2) + bytes([len(raw_series)]) + raw_series

        decoded = remote_write.decode(raw)
        self.assertEqual(decoded.timeseries[0].histograms[0].timestamp, 1000)
        self.assertEqual(decoded.SerializeToString(), raw)

        self.assertTrue(remote_write.apply_labels(decoded, {"tenant": "t"}, frozenset()))
        again = remote_write.decode(decoded.SerializeToString())
        self.assertEqual(again.timeseries[0].histograms[0].SerializeToString(), histogram)
        kept = [f.field_number for f in unknown_fields.UnknownFieldSet(again.timeseries[0])]
        self.assertEqual(kept, [9])


class ValidateTests(SynchronousTestCase):
    def test_valid(self) -> None:
        remote_write.validate(request(UP, TEMP))

    def assertInvalid(self, message: str, *many: TimeSeries) -> None:
        error = self.assertRaises(DecodeError, remote_write.validate, request(*many))
        self.assertEqual(error.message, message)

    def test_unsorted(self) -> None:
        bad = TimeSeries(
            labels=[{"name": "job", "value": "x"}, {"name": "__name__", "value": "up"}]
        )
        self.assertInvalid("remote write: timeseries[2]: labels not sorted by name", UP, TEMP, bad)

    def test_duplicate(self) -> None:
        bad = TimeSeries(
            labels=[
                {"name": "__name__", "value": "up"},
                {"name": "job", "value": "x"},
                {"name": "job", "value": "y"},
            ]
        )
        self.assertInvalid("remote write: timeseries[1]: duplicate label name 'job'", UP, bad)

    def test_bad_label_name(self) -> None:
        for name in ("0job", "job-name", "jöb", ""):
            bad = TimeSeries(
                labels=sorted(
                    [{"name": "__name__", "value": "up"}, {"name": name, "value": "x"}],
                    key=lambda label: label["name"],
                )
            )
            self.assertInvalid(f"remote write: timeseries[0]: invalid label name {name!r}", bad)

    def test_no_name(self) -> None:
        self.assertInvalid(
            "remote write: timeseries[1]: no __name__ label", UP, series({"job": "x"}, [])
        )

    def test_empty_name(self) -> None:
        self.assertInvalid(
            "remote write: timeseries[0]: empty __name__", series({"__name__": ""}, [])
        )

    def test_any_float(self) -> None:
        remote_write.validate(
            request(series({"__name__": "x"}, [(1, math.nan), (2, math.inf), (3, -math.inf)]))
        )


class ApplyLabelsTests(SynchronousTestCase):
    def test_nothing_to_do(self) -> None:
        original = request(UP, TEMP)
        raw = original.SerializeToString()
        self.assertFalse(remote_write.apply_labels(original, {}, frozenset()))
        self.assertEqual(original.SerializeToString(), raw)

    def test_already_as_wanted(self) -> None:
        original = request(UP)
        self.assertFalse(remote_write.apply_labels(original, {"job": "node"}, frozenset(["gone"])))
        self.assertEqual(original, request(UP))

    def test_add_overrides_and_sorts(self) -> None:
        changed = request(UP, TEMP)
        self.assertTrue(
            remote_write.apply_labels(changed, {"job": "gateway", "cluster": "eu"}, frozenset())
        )
        self.assertEqual(
            labels_of(changed.timeseries[0]),
            [("__name__", "up"), ("cluster", "eu"), ("job", "gateway")],
        )
        self.assertEqual(
            labels_of(changed.timeseries[1]),
            [("__name__", "temp"), ("cluster", "eu"), ("job", "gateway"), ("room", "a")],
        )
        self.assertEqual(list(changed.timeseries[0].samples), list(UP.samples))
        remote_write.validate(changed)

    def test_remove_after_add(self) -> None:
        changed = request(UP, TEMP)
        self.assertTrue(
            remote_write.apply_labels(changed, {"job": "g"}, frozenset(["job", "room"]))
        )
        self.assertEqual(labels_of(changed.timeseries[0]), [("__name__", "up")])
        self.assertEqual(labels_of(changed.timeseries[1]), [("__name__", "temp")])

    def test_only_some_series_change(self) -> None:
        changed = request(UP, TEMP)
        self.assertTrue(remote_write.apply_labels(changed, {}, frozenset(["room"])))
        self.assertEqual(changed.timeseries[0], UP)
        self.assertEqual(labels_of(changed.timeseries[1]), [("__name__", "temp")])

    def test_empty_value_for_missing_label(self) -> None:
        original = request(UP)
        self.assertFalse(remote_write.apply_labels(original, {"team": ""}, frozenset()))
        self.assertEqual(original, request(UP))

    def test_empty_value_drops(self) -> None:
        changed = request(UP)
        self.assertTrue(remote_write.apply_labels(changed, {"job": ""}, frozenset()))
        self.assertEqual(labels_of(changed.timeseries[0]), [("__name__", "up")])


class RecordsTests(SynchronousTestCase):
    def test_records(self) -> None:
        odd = series({"__name__": "odd"}, [(1, math.nan), (2, math.inf), (3, -math.inf), (4, 0.5)])
        records = remote_write.to_records(request(UP, odd))
        self.assertEqual(
            records,
            [
                {
                    "labels": {"__name__": "up", "job": "node"},
                    "samples": [[1000, 1.0], [2000, 0.0]],
                },
                {
                    "labels": {"__name__": "odd"},
                    "samples": [[1, "NaN"], [2, "+Inf"], [3, "-Inf"], [4, 0.5]],
                },
            ],
        )
        json.dumps(records, allow_nan=False)

    def test_exemplars_and_histograms(self) -> None:
        one = series({"__name__": "h"}, [])
        one.exemplars.add(labels=[{"name": "trace_id", "value": "abc"}], value=0.3, timestamp=7)
        one.histograms.append(Histogram(timestamp=9))
        [record] = remote_write.to_records(request(one))
        self.assertEqual(
            record["exemplars"], [{"labels": {"trace_id": "abc"}, "value": 0.3, "timestamp": 7}]
        )
        self.assertEqual(record["histograms"], [{"timestamp": 9, "protobuf": "eAk="}])


class BatchTests(SynchronousTestCase):
    def many(self) -> list[TimeSeries]:
        return [
            series({"__name__": f"m{i}"}, [(t, float(t)) for t in range(i % 4 + 1)])
            for i in range(50)
        ]

    def test_sizes_and_order(self) -> None:
        given = self.many()
        out = list(remote_write.batches(given, 7))
        for one in out:
            self.assertLessEqual(sum(len(s.samples) for s in one.timeseries), 7)
            self.assertTrue(one.timeseries)
        self.assertEqual([s for one in out for s in one.timeseries], given)
        # Packed: no two neighbouring batches could have been one.
        counts = [sum(len(s.samples) for s in one.timeseries) for one in out]
        for a, b in zip(counts, counts[1:], strict=False):
            self.assertGreater(a + b, 7)

    def test_big_series_split(self) -> None:
        big = series({"__name__": "big"}, [(t, float(t)) for t in range(25)])
        big.exemplars.add(value=1.0, timestamp=3)
        out = list(remote_write.batches([TEMP, big], 10))
        self.assertEqual(
            [[len(s.samples) for s in one.timeseries] for one in out], [[1], [10], [10], [5]]
        )
        parts = [one.timeseries[0] for one in out[1:]]
        self.assertEqual([labels_of(p) for p in parts], [labels_of(big)] * 3)
        self.assertEqual([len(p.exemplars) for p in parts], [1, 0, 0])
        self.assertEqual(
            [s.timestamp for p in parts for s in p.samples], [s.timestamp for s in big.samples]
        )

    def test_empty_series_still_sent(self) -> None:
        empty = series({"__name__": "nothing"}, [])
        self.assertEqual(list(remote_write.batches([empty, empty], 1)), [request(empty)] * 2)

    def test_nothing(self) -> None:
        self.assertEqual(list(remote_write.batches([], 10)), [])

    def test_bad_size(self) -> None:
        self.assertRaises(ValueError, list, remote_write.batches([UP], 0))
