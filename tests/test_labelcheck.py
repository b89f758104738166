"""
Tests for L{sealgw.signals._labelcheck} and
L{sealgw.signals.remote_write.validate_encoded}, the label rules of
C{check: labels} judged on the encoded bytes: C
(C{sealgw.signals._relabel_c.check_labels}), the Python reference
(L{sealgw.signals._labelcheck._check_labels_python}) and
L{sealgw.signals.remote_write.validate} on the protobuf objects give the
same verdict and message on every body the byte readers judge; the byte
readers judge every body of the shape senders produce; C and Python agree
on any bytes at all, and C never reads outside them.

The C tests are skipped when the extension was not built (no compiler at
install time), unless C{SEALGW_REQUIRE_C_EXTENSIONS=1} is set (as CI
does): then its absence fails.
"""

from __future__ import annotations

import importlib
import os
import random
from typing import Any, Optional
from unittest import SkipTest

from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import _labelcheck, intake, remote_write
from sealgw.signals._labelcheck import (
    DUPLICATE_NAME,
    EMPTY_METRIC_NAME,
    FINE,
    INVALID_NAME,
    NO_METRIC_NAME,
    UNSORTED,
    Verdict,
)
from sealgw.signals._labels import valid_label_name
from sealgw.signals.compression import snappy_compress
from sealgw.signals.errors import DecodeError
from sealgw.signals.limits import LimitExceeded
from sealgw.signals.proto.remote_pb2 import MetricMetadata, TimeSeries, WriteRequest

try:
    _relabel_c: Any = importlib.import_module("sealgw.signals._relabel_c")
except ImportError:
    _relabel_c = None

REQUIRED = os.environ.get("SEALGW_REQUIRE_C_EXTENSIONS") == "1"

_python = _labelcheck._check_labels_python

# Names of every kind: valid, reserved, invalid (a digit first, a dash, a
# dot, non-ASCII, empty, which protobuf encodes as no name at all), and
# long ones whose length prefixes take two bytes (past 127), valid or not.
_long = st.builds(
    lambda first, piece, n: (first + piece * n)[:n],
    st.sampled_from(["", "_", "a", "0", "é"]),
    st.sampled_from(["x", "_9", "é", "-", "日本"]),
    st.sampled_from([60, 127, 128, 129, 200, 300]),
)
_names = (
    st.sampled_from(
        [
            "__name__",
            "__name__",
            "__reserved__",
            "__",
            "_",
            "a",
            "A",
            "Z9",
            "env",
            "job",
            "le",
            "zone",
            "0job",
            "9",
            "job-name",
            "a.b",
            "jöb",
            "ünï",
            "日本",
            "__name_",
            "__name__x",
            "",
        ]
    )
    | _long
)
_values = st.just("") | st.text(max_size=10) | _long


@st.composite
def write_requests(draw: st.DrawFn) -> WriteRequest:
    """
    A write request whose series' labels are sorted and unique, or sorted
    with repeats, or in any order; with and without C{__name__} (empty or
    not); with samples, exemplars, histograms, metadata.
    """
    request = WriteRequest()
    for _ in range(draw(st.integers(0, 4))):
        series = request.timeseries.add()
        names = draw(st.lists(_names, max_size=6))
        order = draw(st.sampled_from(["unique", "unique", "sorted", "any"]))
        if order == "unique":
            names = sorted(set(names))
        elif order == "sorted":
            names = sorted(names)
        for name in names:
            series.labels.add(name=name, value=draw(_values))
        for _ in range(draw(st.integers(0, 2))):
            series.samples.add(
                value=draw(st.floats(allow_nan=False)), timestamp=draw(st.integers(-(2**40), 2**40))
            )
        for _ in range(draw(st.integers(0, 1))):
            exemplar = series.exemplars.add(value=1.5, timestamp=draw(st.integers(0, 2**40)))
            exemplar.labels.add(name=draw(_names), value=draw(st.text(max_size=10)))
        for _ in range(draw(st.integers(0, 1))):
            series.histograms.add(timestamp=draw(st.integers(0, 2**40)))
    for _ in range(draw(st.integers(0, 2))):
        request.metadata.add(type=MetricMetadata.COUNTER, metric_family_name=draw(_names), help="h")
    return request


#: What follows a body in memory, for the C side to find if it reads too far:
#: the end of a varint, a label, a whole series.
_AFTER = (b"\x01\x0a\x05\x0a\x01a\x12\x00", b"\x0a\x02\x0a\x00" * 3)


def _parse(raw: bytes) -> Optional[WriteRequest]:
    try:
        return WriteRequest.FromString(raw)
    except ProtobufDecodeError:
        return None


def objects_message(request: WriteRequest) -> Optional[str]:
    """
    What L{remote_write.validate} says of C{request}: its message, or
    L{None} when it is valid.
    """
    try:
        remote_write.validate(request)
    except DecodeError as e:
        return e.message
    return None


def verdict_message(verdict: Verdict) -> Optional[str]:
    """
    The message a byte reader's verdict makes (as
    L{remote_write.validate_encoded} raises it), or L{None} for a valid
    body.
    """
    index, problem, name = verdict
    if problem == FINE:
        return None
    return remote_write._series_error(index, problem, name.decode("utf-8")).message


def first_bad(request: WriteRequest) -> int:
    """
    The index of the first series L{remote_write.validate} refuses, or the
    number of series when it refuses none.
    """
    for index, series in enumerate(request.timeseries):
        if objects_message(WriteRequest(timeseries=[series])) is not None:
            return index
    return len(request.timeseries)


def _needs_extension(case: SynchronousTestCase) -> None:
    if _relabel_c is None:
        if REQUIRED:
            case.fail(
                "sealgw.signals._relabel_c is not built and SEALGW_REQUIRE_C_EXTENSIONS=1: "
                "build it with python setup.py build_ext --inplace"
            )
        raise SkipTest("sealgw.signals._relabel_c is not built")


def series(*labels: tuple[str, str], samples: int = 1) -> TimeSeries:
    """
    A series with C{labels} in the order given.
    """
    one = TimeSeries()
    for name, value in labels:
        one.labels.add(name=name, value=value)
    for n in range(samples):
        one.samples.add(value=float(n), timestamp=n)
    return one


def encoded_series(*labels: bytes) -> bytes:
    """
    A C{WriteRequest.timeseries} field holding the encoded C{labels}.
    """
    body = b"".join(labels)
    return b"\x0a" + bytes([len(body)]) + body


def encoded_label(name: bytes, value: Optional[bytes] = b"v") -> bytes:
    """
    A C{TimeSeries.labels} field (under 128 bytes): its value field left
    out when C{value} is L{None}.
    """
    inner = b"\x0a" + bytes([len(name)]) + name
    if value is not None:
        inner += b"\x12" + bytes([len(value)]) + value
    return b"\x0a" + bytes([len(inner)]) + inner


def name_byte_requests() -> list[WriteRequest]:
    """
    A request for every byte first in a name, last in it, and alone (a
    character's UTF-8 for those past ASCII), beside C{__name__}.
    """
    requests = []
    for code in range(256):
        char = chr(code)
        for name in (char, "a" + char, char + "a"):
            labels = sorted([("__name__", "up"), (name, "x")])
            requests.append(WriteRequest(timeseries=[series(*labels)]))
    return requests


class ReferenceTests(SynchronousTestCase):
    """
    The Python reading of the bytes against the objects: the same verdict,
    on every body senders produce.
    """

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests())
    def test_same_as_objects(self, request: WriteRequest) -> None:
        """
        Judged, and judged as the objects are, unless a series up to the
        first bad one has a label with an empty name (protobuf writes no
        name field for it: not the shape read).
        """
        raw = request.SerializeToString()
        verdict = _python(raw)
        bad = first_bad(request)
        unnamed = any(
            label.name == "" for one in request.timeseries[: bad + 1] for label in one.labels
        )
        if unnamed:
            self.assertIsNone(verdict)
            return
        assert verdict is not None
        self.assertEqual(verdict[0], bad)
        self.assertEqual(verdict_message(verdict), objects_message(request))

    def test_each_problem(self) -> None:
        """
        Every problem, and which one counts when a series has several: out
        of order first, then no C{__name__}, then an invalid name, then an
        empty C{__name__}, as L{remote_write.validate} looks for them.
        """
        good = series(("__name__", "up"), ("job", "a"))
        for labels, problem, name in [
            ([("__name__", "up"), ("job", "a"), ("job", "b")], DUPLICATE_NAME, b"job"),
            ([("job", "a"), ("__name__", "up")], UNSORTED, b"__name__"),
            ([("0a", "x"), ("__name__", "up"), ("b", "1"), ("b", "2")], DUPLICATE_NAME, b"b"),
            ([("0a", "x"), ("z", "up"), ("b", "1"), ("b", "1")], UNSORTED, b"b"),
            ([("__name__", "up"), ("__name__", "")], DUPLICATE_NAME, b"__name__"),
            ([("a-b", "x"), ("job", "a")], NO_METRIC_NAME, b""),
            ([], NO_METRIC_NAME, b""),
            ([("0a", "x"), ("__name__", "")], INVALID_NAME, b"0a"),
            ([("__name__", "up"), ("a", "x"), ("b.c", "1"), ("jöb", "1")], INVALID_NAME, b"b.c"),
            ([("__name__", "up"), ("x" * 200 + "-", "1")], INVALID_NAME, b"x" * 200 + b"-"),
            ([("__name__", ""), ("job", "a")], EMPTY_METRIC_NAME, b"__name__"),
        ]:
            request = WriteRequest(timeseries=[good, series(*labels), good])
            raw = request.SerializeToString()
            verdict = _python(raw)
            self.assertEqual(verdict, (1, problem, name), labels)
            assert verdict is not None
            self.assertEqual(verdict_message(verdict), objects_message(request))

    def test_valid(self) -> None:
        """
        Valid series, with reserved and long names and every other field,
        counted; a body with no series at all is valid too.
        """
        request = WriteRequest(
            timeseries=[
                series(("__name__", "up"), ("__reserved__", "x"), ("_" + "a9" * 100, "")),
                series(("__name__", "m" * 300), ("a" * 200, "v" * 200), samples=3),
            ]
        )
        request.timeseries[0].exemplars.add(value=1.0).labels.add(name="0-not-checked")
        request.timeseries[1].histograms.add(timestamp=9)
        request.metadata.add(metric_family_name="up", help="h")
        self.assertEqual(objects_message(request), None)
        self.assertEqual(_python(request.SerializeToString()), (2, FINE, b""))
        self.assertEqual(_python(b""), (0, FINE, b""))
        self.assertEqual(
            _python(WriteRequest(metadata=request.metadata).SerializeToString()), (0, FINE, b"")
        )

    def test_empty_values(self) -> None:
        """
        An empty value is an empty value whether its field is left out, as
        protobuf writes it, or there with a zero length.
        """
        for metric in (encoded_label(b"__name__", None), encoded_label(b"__name__", b"")):
            self.assertEqual(
                _python(encoded_series(metric, encoded_label(b"a", b""))),
                (0, EMPTY_METRIC_NAME, b"__name__"),
            )
            self.assertEqual(
                _python(encoded_series(encoded_label(b"0"), metric, encoded_label(b"a", None))),
                (0, INVALID_NAME, b"0"),
            )

    def test_empty_name_field(self) -> None:
        """
        A label whose name field is there but empty is judged (an invalid
        name); one whose name field is missing is not the shape.
        """
        metric = encoded_label(b"__name__")
        self.assertEqual(
            _python(encoded_series(encoded_label(b""), metric)), (0, INVALID_NAME, b"")
        )
        self.assertIsNone(_python(encoded_series(b"\x0a\x03\x12\x01v", metric)))

    def test_stops_at_the_first_bad_series(self) -> None:
        """
        What follows the first bad series is not read: its shape does not
        matter.
        """
        bad = encoded_series(encoded_label(b"job"))
        out_of_shape = b"\x0a\x05\x0a\x03\x12\x01v"
        self.assertEqual(_python(bad + out_of_shape), (0, NO_METRIC_NAME, b""))
        self.assertIsNone(_python(out_of_shape + bad))

    def test_steps_aside(self) -> None:
        """
        Bodies out of the shape: L{None}.
        """
        metric = encoded_label(b"__name__")
        for raw in [
            b"\x08\x01",  # a varint field
            b"\x82\x01\x00",  # a two-byte tag
            b"\x0a\xff",  # a truncated length
            b"\x0a\x09\x0a\x07\x12\x02bb\x0a\x01a",  # the value first
            b"\x0a\x02\x0a\x00",  # an empty label
            encoded_series(metric + b"\x12\x00" + encoded_label(b"a")),  # a label after a sample
            encoded_series(metric + b"\x10\x01"),  # a varint field in the series
            encoded_series(b"\x0a\x0f\x0a\x08__name__\x12\x01v\x18\x01"),  # a third label field
        ]:
            self.assertIsNone(_python(raw), raw)

    def test_name_bytes(self) -> None:
        """
        The name rule on bytes is the rule on strings, for every byte first
        and after the first (a character's UTF-8 for those past ASCII).
        """
        for request in name_byte_requests():
            [name] = [
                label.name for label in request.timeseries[0].labels if label.name != "__name__"
            ]
            verdict = _python(request.SerializeToString())
            expected = (
                (1, FINE, b"") if valid_label_name(name) else (0, INVALID_NAME, name.encode())
            )
            self.assertEqual(verdict, expected, name)
            self.assertEqual(verdict_message(expected), objects_message(request))


class CompareTests(SynchronousTestCase):
    """
    C against the Python reference: the same answer on any bytes.
    """

    def setUp(self) -> None:
        _needs_extension(self)

    def both(self, raw: bytes) -> Optional[Verdict]:
        """
        Both readers on C{raw}: their common answer, which does not change
        with what lies past the end of C{raw}; and when C{raw} parses and
        they judge it, their message is the objects'.
        """
        got = _relabel_c.check_labels(raw)
        self.assertEqual(got, _python(raw))
        for after in _AFTER:
            view = memoryview(raw + after)[: len(raw)]
            self.assertEqual(_relabel_c.check_labels(view), got)
        if got is not None:
            request = _parse(raw)
            if request is not None:
                try:
                    message = verdict_message(got)
                except UnicodeDecodeError:
                    pass  # protobuf refuses that before the check
                else:
                    self.assertEqual(message, objects_message(request))
        return got

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests())
    def test_requests(self, request: WriteRequest) -> None:
        self.both(request.SerializeToString())

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    @example(b"\x0a" + b"\xff" * 10 + b"\x01")
    @example(b"\x0a" + b"\x80" * 9 + b"\x02")
    @example(b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00")
    @example(b"\x0a\x0c\x0a\x0a\x0a\x08__name__")
    @example(b"\x0a\x04\x0a\x02\x0a\x00")
    def test_random_bytes(self, raw: bytes) -> None:
        self.both(raw)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(), st.data())
    def test_truncated(self, request: WriteRequest, data: st.DataObject) -> None:
        raw = request.SerializeToString()
        assume(raw)
        cut = data.draw(st.integers(0, len(raw) - 1))
        self.both(raw[:cut])

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(), st.randoms(use_true_random=False))
    def test_mutated(self, request: WriteRequest, rng: random.Random) -> None:
        """
        Bytes changed, inserted or deleted anywhere, length prefixes and
        names included; those protobuf still parses are judged as the
        objects judge them.
        """
        raw = bytearray(request.SerializeToString())
        assume(raw)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(raw) + 1)
            what = rng.random()
            if what < 0.5 and at < len(raw):
                raw[at] = rng.choice(
                    [0x00, 0x01, 0x0A, 0x12, 0x2D, 0x30, 0x5F, 0x7F, 0x80, 0xFF, rng.randrange(256)]
                )
            elif what < 0.75:
                raw[at:at] = bytes([rng.randrange(256)])
            elif at < len(raw):
                del raw[at]
        self.both(bytes(raw))

    def test_examples(self) -> None:
        """
        The reference's examples, in C.
        """
        metric = encoded_label(b"__name__")
        for raw in [
            b"",
            encoded_series(),
            encoded_series(encoded_label(b""), metric),
            encoded_series(metric, encoded_label(b"a" * 100 + b"\xc3\xa9")),
            encoded_series(metric, encoded_label(b"a", b""), encoded_label(b"a")),
            encoded_series(encoded_label(b"__name__", b"")) + b"\x0a\x05\x0a\x03\x12\x01v",
            encoded_series(encoded_label(b"__name__", None)),
            encoded_series(encoded_label(b"__name__", b"\x00")),
            encoded_series(encoded_label(b"b"), metric),
            b"\x0a\x05\x0a\x03\x12\x01v",
        ]:
            self.both(raw)

    def test_name_bytes(self) -> None:
        """
        Every byte in a name, first, last and alone.
        """
        for request in name_byte_requests():
            self.both(request.SerializeToString())

    def test_buffers(self) -> None:
        """
        The C function takes any bytes-like body, and nothing else.
        """
        raw = encoded_series(encoded_label(b"0"), encoded_label(b"__name__"))
        expected = _relabel_c.check_labels(raw)
        self.assertEqual(expected, (0, INVALID_NAME, b"0"))
        for other in (bytearray(raw), memoryview(raw), memoryview(b"xx" + raw)[2:]):
            self.assertEqual(_relabel_c.check_labels(other), expected)
        for bad in ("text", 1, None):
            with self.assertRaises(TypeError):
                _relabel_c.check_labels(bad)
        with self.assertRaises(TypeError):
            _relabel_c.check_labels()
        with self.assertRaises(TypeError):
            _relabel_c.check_labels(raw, raw)

    def test_implementation(self) -> None:
        self.assertEqual(_labelcheck.IMPLEMENTATION, "c")
        self.assertIs(_labelcheck.check_labels, _relabel_c.check_labels)


class ValidateEncodedTests(SynchronousTestCase):
    """
    L{remote_write.validate_encoded}: the message of L{remote_write.validate},
    or L{False} for the objects to judge.
    """

    def setUp(self) -> None:
        _needs_extension(self)

    def test_messages(self) -> None:
        for labels, message in [
            ([("__name__", "up"), ("job", "a"), ("job", "b")], "duplicate label name 'job'"),
            ([("job", "a"), ("__name__", "up")], "labels not sorted by name"),
            ([("job", "a")], "no __name__ label"),
            ([("__name__", "up"), ("jöb", "x")], "invalid label name 'jöb'"),
            ([("__name__", "up"), ("x" * 99 + "-", "x")], f"invalid label name {'x' * 64!r}..."),
            ([("__name__", "")], "empty __name__"),
        ]:
            request = WriteRequest(timeseries=[series(("__name__", "up")), series(*labels)])
            raw = request.SerializeToString()
            error = self.assertRaises(DecodeError, remote_write.validate_encoded, raw)
            self.assertEqual(error.message, f"remote write: timeseries[1]: {message}")
            self.assertEqual(objects_message(request), error.message)

    def test_valid(self) -> None:
        raw = WriteRequest(timeseries=[series(("__name__", "up"))]).SerializeToString()
        self.assertTrue(remote_write.validate_encoded(raw))

    def test_not_the_shape(self) -> None:
        self.assertFalse(remote_write.validate_encoded(b"\x0a\x05\x0a\x03\x12\x01v"))

    def test_not_utf8(self) -> None:
        """
        A name that is not UTF-8 (which L{remote_write.decode} refuses
        first) is left to the objects, not made a message.
        """
        raw = encoded_series(encoded_label(b"__name__"), encoded_label(b"\xff"))
        self.assertEqual(_relabel_c.check_labels(raw), (0, INVALID_NAME, b"\xff"))
        self.assertFalse(remote_write.validate_encoded(raw))

    def test_python_reader_not_used(self) -> None:
        """
        Without the C reader the objects judge: the Python reading is
        slower than they are.
        """
        self.patch(_labelcheck, "IMPLEMENTATION", "python")
        self.patch(_labelcheck, "check_labels", _python)
        raw = WriteRequest(timeseries=[series(("job", "a"))]).SerializeToString()
        self.assertFalse(remote_write.validate_encoded(raw))


class IntakeTests(SynchronousTestCase):
    """
    C{check: labels} in L{intake.remote_write_pushes}: the bytes judged
    where they can be, the objects otherwise, the same answer either way.
    """

    facts = intake.RequestFacts(content_type="application/x-protobuf", content_encoding="snappy")

    def setUp(self) -> None:
        _needs_extension(self)

    def message(self, raw: bytes, **kw: Any) -> Optional[str]:
        options: dict[str, Any] = dict(add={}, remove=frozenset(), limit=1 << 24)
        options.update(kw)
        try:
            intake.remote_write_pushes(snappy_compress(raw), self.facts, check="labels", **options)
        except LimitExceeded:
            # Past the label rules: every series over a sample limit
            # (tests.test_samplecheck), which is judged after them.
            return None
        except DecodeError as e:
            return e.message
        return None

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(write_requests(), st.booleans())
    def test_same_as_objects(self, request: WriteRequest, actions: bool) -> None:
        """
        The objects' message, with the byte check or without it, label
        actions or not.
        """
        raw = request.SerializeToString()
        kw: dict[str, Any] = {"add": {"tenant": "t"}} if actions else {}
        expected = objects_message(request)
        self.assertEqual(self.message(raw, **kw), expected)
        original = remote_write.validate_encoded
        try:
            remote_write.validate_encoded = lambda raw: False  # type: ignore[assignment]
            self.assertEqual(self.message(raw, **kw), expected)
        finally:
            remote_write.validate_encoded = original  # type: ignore[assignment]

    def test_objects_not_asked(self) -> None:
        """
        A body of the shape is judged on its bytes alone, valid or not.
        """
        self.patch(remote_write, "validate", _never)
        good = WriteRequest(timeseries=[series(("__name__", "up"), ("job", "a"))])
        self.assertIsNone(self.message(good.SerializeToString()))
        bad = WriteRequest(timeseries=[series(("job", "a"), ("__name__", "up"))])
        self.assertEqual(
            self.message(bad.SerializeToString()),
            "remote write: timeseries[0]: labels not sorted by name",
        )

    def test_objects_judge_other_shapes(self) -> None:
        """
        A body out of the shape (a label with no name field) is judged by
        the objects.
        """
        called: list[WriteRequest] = []
        validate = remote_write.validate

        def spy(request: WriteRequest) -> None:
            called.append(request)
            validate(request)

        self.patch(remote_write, "validate", spy)
        request = WriteRequest(timeseries=[series(("", "x"), ("__name__", "up"))])
        self.assertEqual(
            self.message(request.SerializeToString()),
            "remote write: timeseries[0]: invalid label name ''",
        )
        self.assertEqual(called, [request])

    def test_still_parsed(self) -> None:
        """
        The protobuf parse still runs first: a body of the shape whose
        sample is broken, or whose name is not UTF-8, is not a
        C{WriteRequest}.
        """
        metric = encoded_label(b"__name__")
        for raw in [
            encoded_series(metric, b"\x12\x02\x09\x00"),
            encoded_series(metric, encoded_label(b"\xff")),
        ]:
            self.assertEqual(
                self.message(raw), "remote write: body is not a valid WriteRequest protobuf"
            )


def _never(*args: object) -> None:
    raise AssertionError("the objects were asked")
