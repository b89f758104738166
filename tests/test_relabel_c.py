"""
Tests for C{sealgw.signals._relabel_c}, the C loop of
L{sealgw.signals._relabel}: the same answer as the Python reference
(L{sealgw.signals._relabel._relabel_python}) on every body, well-formed or
not, bytes or L{None}; never a crash; and what it returns decodes to what
the protobuf objects make of the request.

Skipped when the extension was not built (no compiler at install time),
unless C{SEALGW_REQUIRE_C_EXTENSIONS=1} is set (as CI does): then its
absence fails.
"""

from __future__ import annotations

import importlib
import os
import random
from typing import Any, Optional
from unittest import SkipTest

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import _relabel, _wire, remote_write
from sealgw.signals.proto.remote_pb2 import MetricMetadata, WriteRequest

try:
    _relabel_c: Any = importlib.import_module("sealgw.signals._relabel_c")
except ImportError:
    _relabel_c = None

REQUIRED = os.environ.get("SEALGW_REQUIRE_C_EXTENSIONS") == "1"

# Label names and values: short ones, non-ASCII ones, and long ones whose
# length prefixes take two (past 127 bytes) and three (past 16,383) bytes.
_long = st.builds(
    lambda piece, n: (piece * n)[:n],
    st.sampled_from(["x", "é", "ü-", "日本"]),
    st.sampled_from([60, 127, 128, 129, 200, 8000, 16383, 16384, 17000]),
)
_names = (
    st.sampled_from(["__name__", "a", "env", "job", "le", "tenant", "zone", "ünï", "日本"]) | _long
)
_values = st.text(max_size=20) | _long


def _needs_extension(case: SynchronousTestCase) -> None:
    if _relabel_c is None:
        if REQUIRED:
            case.fail(
                "sealgw.signals._relabel_c is not built and SEALGW_REQUIRE_C_EXTENSIONS=1: "
                "build it with python setup.py build_ext --inplace"
            )
        raise SkipTest("sealgw.signals._relabel_c is not built")


@st.composite
def write_requests(draw: st.DrawFn, *, sorted_labels: bool = True) -> WriteRequest:
    """
    A write request: series with labels (sorted and unique, or not),
    samples, exemplars and histograms; maybe metadata.
    """
    request = WriteRequest()
    for _ in range(draw(st.integers(0, 4))):
        series = request.timeseries.add()
        if sorted_labels:
            names = sorted(draw(st.sets(_names, max_size=6)), key=lambda n: n.encode())
        else:
            names = draw(st.lists(_names, max_size=6))
        for name in names:
            series.labels.add(name=name, value=draw(_values))
        for _ in range(draw(st.integers(0, 2))):
            series.samples.add(
                value=draw(st.floats(allow_nan=False)), timestamp=draw(st.integers(-(2**40), 2**40))
            )
        for _ in range(draw(st.integers(0, 1))):
            exemplar = series.exemplars.add(value=1.5, timestamp=draw(st.integers(0, 2**40)))
            exemplar.labels.add(name="trace_id", value=draw(st.text(max_size=10)))
        for _ in range(draw(st.integers(0, 1))):
            series.histograms.add(timestamp=draw(st.integers(0, 2**40)))
    for _ in range(draw(st.integers(0, 2))):
        request.metadata.add(
            type=MetricMetadata.COUNTER, metric_family_name=draw(st.text(max_size=10)), help="h"
        )
    return request


_adds = st.dictionaries(_names, st.just("") | _values, max_size=3)
_removes = st.frozensets(_names, max_size=3)


#: What follows a body in memory, for the C side to find if it reads too far:
#: the end of a varint, a label, a whole series.
_AFTER = (b"\x01\x0a\x05\x0a\x01a\x12\x00", b"\x0a\x02\x0a\x00" * 3)


def _parse(raw: bytes) -> Optional[WriteRequest]:
    try:
        return WriteRequest.FromString(raw)
    except DecodeError:
        return None


class _Both(SynchronousTestCase):
    def setUp(self) -> None:
        _needs_extension(self)

    def both(self, raw: bytes, add: dict[str, str], remove: frozenset[str]) -> Optional[bytes]:
        """
        Both implementations on C{raw}: their common answer; and when it is
        bytes and C{raw} is a C{WriteRequest}, that answer is the objects'
        (with actions: without, neither is used, and the objects keep
        labels with empty values).
        """
        adds, drop = _relabel.prepare(add, remove)
        got = _relabel_c.relabel_encoded(raw, adds, drop)
        self.assertEqual(got, _relabel._relabel_python(raw, adds, drop))
        # Nothing past the end is read: bytes there change nothing.
        for after in _AFTER:
            view = memoryview(raw + after)[: len(raw)]
            self.assertEqual(_relabel_c.relabel_encoded(view, adds, drop), got)
        if got is not None and (add or remove):
            original = _parse(raw)
            if original is not None:
                remote_write.apply_labels(original, add, remove)
                self.assertEqual(WriteRequest.FromString(got), original)
        return got


class CompareTests(_Both):
    """
    C and Python give the same answer, and bytes they give decode to what
    the protobuf objects make of the request.
    """

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(), _adds, _removes)
    def test_well_formed(
        self, request: WriteRequest, add: dict[str, str], remove: frozenset[str]
    ) -> None:
        """
        A request as senders encode it (labels sorted and unique): rewritten,
        never stepped aside from.
        """
        got = self.both(request.SerializeToString(), add, remove)
        self.assertIsNotNone(got)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(sorted_labels=False), _adds, _removes)
    def test_any_label_order(
        self, request: WriteRequest, add: dict[str, str], remove: frozenset[str]
    ) -> None:
        """
        Labels unsorted or repeated: the same answer (L{None} where out of
        order or repeated).
        """
        got = self.both(request.SerializeToString(), add, remove)
        for series in request.timeseries:
            names = [label.name.encode() for label in series.labels]
            if names != sorted(set(names)):
                self.assertIsNone(got)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300), _adds, _removes)
    @example(b"\x0a" + b"\xff" * 10 + b"\x01", {"a": "b"}, frozenset())
    @example(b"\x0a" + b"\x80" * 9 + b"\x02", {"a": "b"}, frozenset())
    @example(b"\x1a" + b"\x80" * 9 + b"\x01", {}, frozenset({"a"}))
    @example(b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", {"a": "b"}, frozenset())
    def test_random_bytes(self, raw: bytes, add: dict[str, str], remove: frozenset[str]) -> None:
        self.both(raw, add, remove)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(), _adds, _removes, st.data())
    def test_truncated(
        self,
        request: WriteRequest,
        add: dict[str, str],
        remove: frozenset[str],
        data: st.DataObject,
    ) -> None:
        raw = request.SerializeToString()
        assume(raw)
        cut = data.draw(st.integers(0, len(raw) - 1))
        self.both(raw[:cut], add, remove)

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(), _adds, _removes, st.randoms(use_true_random=False))
    def test_mutated(
        self,
        request: WriteRequest,
        add: dict[str, str],
        remove: frozenset[str],
        rng: random.Random,
    ) -> None:
        """
        Bytes changed, inserted or deleted anywhere, length prefixes
        included.
        """
        raw = bytearray(request.SerializeToString())
        assume(raw)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(raw) + 1)
            what = rng.random()
            if what < 0.5 and at < len(raw):
                raw[at] = rng.choice([0x00, 0x01, 0x0A, 0x12, 0x7F, 0x80, 0xFF, rng.randrange(256)])
            elif what < 0.75:
                raw[at:at] = bytes([rng.randrange(256)])
            elif at < len(raw):
                del raw[at]
        self.both(bytes(raw), add, remove)


class ShapeTests(_Both):
    """
    Examples, in C (and, through L{_Both.both}, in Python too).
    """

    def relabelled(
        self, request: WriteRequest, add: dict[str, str], remove: frozenset[str] = frozenset()
    ) -> WriteRequest:
        got = self.both(request.SerializeToString(), add, remove)
        assert got is not None
        return WriteRequest.FromString(got)

    def labels(self, request: WriteRequest) -> list[list[tuple[str, str]]]:
        return [
            [(label.name, label.value) for label in series.labels] for series in request.timeseries
        ]

    def test_implementation(self) -> None:
        self.assertEqual(_relabel.IMPLEMENTATION, "c")
        self.assertIs(_relabel.relabel_encoded, _relabel_c.relabel_encoded)

    def test_added_replaced_removed(self) -> None:
        """
        Added labels go at their sorted place (before, between, after the
        series' own), win over the series' own value, and the removed ones
        and the ones set to the empty string go, as do empty values.
        """
        request = WriteRequest()
        series = request.timeseries.add()
        for name, value in [("__name__", "up"), ("env", "prod"), ("job", "api"), ("zone", "")]:
            series.labels.add(name=name, value=value)
        series.samples.add(value=1.0, timestamp=5)
        got = self.relabelled(
            request,
            {"a": "1", "env": "staging", "k": "2", "zz": "3", "job": ""},
            frozenset({"__name__"}),
        )
        self.assertEqual(
            self.labels(got), [[("a", "1"), ("env", "staging"), ("k", "2"), ("zz", "3")]]
        )
        self.assertEqual(list(got.timeseries[0].samples), list(request.timeseries[0].samples))

    def test_lengths_grow_and_shrink(self) -> None:
        """
        Series whose length prefix grows past one, two and three bytes with
        the added label, and shrinks back when a long label goes.
        """
        for size in (100, 127, 16300, 16383, 2**21 - 30):
            request = WriteRequest()
            series = request.timeseries.add()
            series.labels.add(name="__name__", value="x" * size)
            series.samples.add(value=2.0, timestamp=1)
            grown = self.relabelled(request, {"tenant": "t" * 40})
            self.assertEqual(self.labels(grown), [[("__name__", "x" * size), ("tenant", "t" * 40)]])
            shrunk = self.relabelled(request, {"a": "b"}, frozenset({"__name__"}))
            self.assertEqual(self.labels(shrunk), [[("a", "b")]])

    def test_long_added_label(self) -> None:
        request = WriteRequest()
        for n in range(3):
            request.timeseries.add().labels.add(name="__name__", value=f"m{n}")
        value = "ü" * 20000
        got = self.relabelled(request, {"big": value})
        self.assertEqual(
            self.labels(got), [[("__name__", f"m{n}"), ("big", value)] for n in range(3)]
        )

    def test_other_fields_pass(self) -> None:
        """
        Metadata, exemplars and histograms pass unchanged, and so does an
        unknown length-delimited field of the request (field 2, reserved).
        """
        request = WriteRequest()
        series = request.timeseries.add()
        series.labels.add(name="__name__", value="up")
        series.exemplars.add(value=1.0, timestamp=3).labels.add(name="trace_id", value="abc")
        series.histograms.add(timestamp=9)
        request.metadata.add(metric_family_name="up", help="is it up")
        raw = request.SerializeToString() + b"\x12\x03abc"
        got = self.both(raw, {"a": "b"}, frozenset())
        assert got is not None
        self.assertTrue(got.endswith(b"\x12\x03abc"))
        decoded = WriteRequest.FromString(got)
        self.assertEqual(decoded.metadata, request.metadata)
        self.assertEqual(decoded.timeseries[0].exemplars, series.exemplars)
        self.assertEqual(decoded.timeseries[0].histograms, series.histograms)

    def test_steps_aside(self) -> None:
        """
        Bodies out of the shape: L{None} from both.
        """
        label = b"\x0a\x07\x0a\x01a\x12\x02bb"
        for raw in [
            b"\x08\x01",  # a varint field
            b"\x0d\x00\x00\x00\x00",  # a fixed32 field
            b"\x82\x01\x00",  # a two-byte tag
            b"\x0a\xff",  # truncated length
            b"\x0a" + b"\xff" * 10 + b"\x01",  # an eleven-byte varint
            b"\x0a" + b"\x80" * 9 + b"\x02",  # past 64 bits
            b"\x0a\x0a" + label,  # a series longer than the body
            b"\x0a\x09\x0a\x08\x0a\x01a\x12\x02bb",  # a label longer than its series
            b"\x0a\x09\x0a\x07\x0a\x09a\x12\x02bb",  # a name longer than its label
            b"\x0a\x09\x0a\x07\x0a\x01a\x12\x03bb",  # a value longer than its label
            b"\x0a\x0b\x0a\x09\x0a\x01a\x12\x02bb\x18\x01",  # a label field after the value
            b"\x0a\x09\x0a\x07\x12\x02bb\x0a\x01a",  # the value first
            b"\x0a\x02\x0a\x00",  # an empty label
            b"\x0a\x12" + label + label,  # a repeated label
            b"\x0a\x0f\x12\x04\x09\x00\x00\x00" + label,  # a label after a sample
            b"\x0a\x0b" + label + b"\x10\x01",  # a varint field in the series
        ]:
            self.assertIsNone(self.both(raw, {"a": "b"}, frozenset()), raw)

    def test_empty(self) -> None:
        self.assertEqual(self.both(b"", {"a": "b"}, frozenset()), b"")
        self.assertEqual(
            self.both(b"\x0a\x00", {"a": "b"}, frozenset()), b"\x0a\x08\x0a\x06\x0a\x01a\x12\x01b"
        )

    def test_buffers(self) -> None:
        """
        The C function takes any bytes-like body.
        """
        raw = b"\x0a\x09\x0a\x07\x0a\x01a\x12\x02bb"
        adds, drop = _relabel.prepare({"c": "d"}, frozenset())
        expected = _relabel_c.relabel_encoded(raw, adds, drop)
        self.assertIsNotNone(expected)
        for other in (bytearray(raw), memoryview(raw), memoryview(b"xx" + raw)[2:]):
            self.assertEqual(_relabel_c.relabel_encoded(other, adds, drop), expected)

    def test_bad_arguments(self) -> None:
        relabel_encoded = _relabel_c.relabel_encoded
        label = _wire.label
        with self.assertRaises(TypeError):
            relabel_encoded(b"", ())  # type: ignore[call-arg]
        with self.assertRaises(TypeError):
            relabel_encoded("text", (), ())
        with self.assertRaises(TypeError):
            relabel_encoded(b"", [], ())
        with self.assertRaises(TypeError):
            relabel_encoded(b"", ((b"a",),), ())
        with self.assertRaises(TypeError):
            relabel_encoded(b"", ((b"a", "b"),), ())
        with self.assertRaises(TypeError):
            relabel_encoded(b"", (), ("a",))
        with self.assertRaises(ValueError):
            relabel_encoded(b"", ((b"b", label(b"b", b"1")), (b"a", label(b"a", b"1"))), ())
        with self.assertRaises(ValueError):
            relabel_encoded(b"", ((b"a", label(b"a", b"1")), (b"a", label(b"a", b"2"))), ())

    def test_many_actions(self) -> None:
        """
        More actions than the C side keeps on its stack.
        """
        request = WriteRequest()
        series = request.timeseries.add()
        for n in range(0, 40, 2):
            series.labels.add(name=f"l{n:02}", value="v")
        add = {f"l{n:02}": "new" for n in range(0, 40, 3)}
        remove = frozenset(f"l{n:02}" for n in range(0, 40, 5))
        got = self.relabelled(request, add, remove)
        expected = WriteRequest.FromString(request.SerializeToString())
        remote_write.apply_labels(expected, add, remove)
        self.assertEqual(got, expected)


class RequiredTests(SynchronousTestCase):
    def test_built_when_required(self) -> None:
        """
        With C{SEALGW_REQUIRE_C_EXTENSIONS=1}, the extension is there and
        in use.
        """
        if not REQUIRED:
            raise SkipTest("SEALGW_REQUIRE_C_EXTENSIONS is not 1")
        self.assertIsNotNone(_relabel_c, "sealgw.signals._relabel_c is not built")
        self.assertEqual(_relabel.IMPLEMENTATION, "c")
