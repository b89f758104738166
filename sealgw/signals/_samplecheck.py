"""
The sample limits (L{sealgw.signals.limits}) judged on the encoded bytes of
a remote-write request, every series at once, without building protobuf
objects.

The label-tenancy route relays about 1.4 million samples a CPU-second; a
Python reading of every label and sample would cost several times what the
route costs now.  In C (C{check_samples} in C{sealgw.signals._relabel_c})
it is one more walk over bytes the relabelling loop reads anyway.
L{_check_samples_python} is the reference the C one is tested against
(C{tests.test_samplecheck}), and L{IMPLEMENTATION} says which one is in
use.

The shape read is the one L{sealgw.signals._relabel} reads (each series'
labels first, each a name then a value; the other fields of a series
length-delimited ones with one-byte tags), and in a sample or a native
histogram any field at all, as long as the timestamp (C{Sample} field 2,
C{Histogram} field 15) is a varint.  A body out of that shape anywhere is
L{None}: the caller judges the protobuf objects instead
(L{sealgw.signals.limits.judge_objects}, the same rules).  Exemplars are
not judged: a store keeps them apart from samples, and an exemplar out of
bounds is dropped by it alone.

The answer is C{(number of series, codes)}: C{codes} is C{b""} when every
series is within the limits (the common case costs no object per series),
else one byte per series, its problem (L{FINE} for a valid one).  A series
with several problems gets the first in the order of the constants below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from sealgw.signals._relabel import _read_length, read_label

FINE = 0
#: More labels than C{max_labels_per_series}.
TOO_MANY_LABELS = 1
#: A label name starting with C{__}, other than C{__name__}.
RESERVED_NAME = 2
#: A label name longer than C{max_label_name_length} bytes.
NAME_TOO_LONG = 3
#: A label value longer than C{max_label_value_length} bytes.
VALUE_TOO_LONG = 4
#: A sample or histogram later than the window's end.
TOO_NEW = 5
#: A sample or histogram earlier than the window's start.
TOO_OLD = 6

#: C{(number of series, codes)}, as above.
Verdicts = tuple[int, bytes]

_TIMESERIES = 0x0A  # WriteRequest.timeseries: field 1, length-delimited
_LABELS = 0x0A  # TimeSeries.labels: field 1
_SAMPLES = 0x12  # TimeSeries.samples: field 2
_HISTOGRAMS = 0x22  # TimeSeries.histograms: field 4
_SAMPLE_TIMESTAMP = 2  # Sample.timestamp, a varint
_HISTOGRAM_TIMESTAMP = 15  # Histogram.timestamp, a varint
_METRIC_NAME = b"__name__"
_INT64 = 1 << 63


class _OutOfShape(Exception):
    pass


def _varint(raw: bytes, pos: int, stop: int) -> tuple[int, int]:
    """
    The varint at C{pos} as 64 bits, and where it ends: what the C reader
    reads (ten bytes at most, the last one 0 or 1).

    @raise _OutOfShape: when truncated or longer.
    """
    result = 0
    for i in range(10):
        if pos >= stop:
            raise _OutOfShape()
        byte = raw[pos]
        pos += 1
        if i == 9 and byte > 1:
            raise _OutOfShape()
        result |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return result, pos
    raise _OutOfShape()  # pragma: no cover - the tenth byte ends it


def _timestamp(raw: bytes, start: int, stop: int, number: int) -> int:
    """
    The timestamp of the message C{raw[start:stop]} (a sample or a
    histogram), its field C{number}: the last one written, as protobuf
    reads it, or 0 when there is none.

    @raise _OutOfShape: for a field that cannot be skipped (a group, an
        unknown wire type) or runs past C{stop}, or a timestamp that is
        not a varint.
    """
    pos = start
    found = 0
    while pos < stop:
        tag, pos = _varint(raw, pos, stop)
        wire, field = tag & 7, tag >> 3
        if field == 0:
            raise _OutOfShape()
        if field == number and wire != 0:
            raise _OutOfShape()
        if wire == 0:
            value, pos = _varint(raw, pos, stop)
            if field == number:
                found = value - (_INT64 << 1) if value >= _INT64 else value
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(raw, pos, stop)
            if length > stop - pos:
                raise _OutOfShape()
            pos += length
        else:
            raise _OutOfShape()
        if pos > stop:
            raise _OutOfShape()
    return found


def _check_series(
    raw: bytes,
    start: int,
    stop: int,
    max_labels: int,
    max_name: int,
    max_value: int,
    min_ts: int,
    max_ts: int,
) -> int:
    """
    The problem of the series C{raw[start:stop]}, or L{FINE}.

    @raise _OutOfShape: when it is not of the shape.
    """
    pos = start
    labels = 0
    worst = 7  # above every problem: none found yet
    while pos < stop and raw[pos] == _LABELS:
        label = read_label(raw, pos, stop)
        if label is None:
            raise _OutOfShape()
        name, _, label_end = label
        labels += 1
        if name[:2] == b"__" and name != _METRIC_NAME:
            worst = min(worst, RESERVED_NAME)
        if len(name) > max_name:
            worst = min(worst, NAME_TOO_LONG)
        # The value is what follows the name's field, less its tag and
        # length prefix: its length is the label's, less what is before.
        value_length = _value_length(raw, pos, label_end, len(name))
        if value_length > max_value:
            worst = min(worst, VALUE_TOO_LONG)
        pos = label_end
    if labels > max_labels:
        worst = TOO_MANY_LABELS
    while pos < stop:
        tag = raw[pos]
        if tag == _LABELS or tag & 0x87 != 0x02:
            raise _OutOfShape()
        length, body = _read_length(raw, pos + 1, stop)
        if tag == _SAMPLES or tag == _HISTOGRAMS:
            number = _SAMPLE_TIMESTAMP if tag == _SAMPLES else _HISTOGRAM_TIMESTAMP
            when = _timestamp(raw, body, body + length, number)
            if when > max_ts:
                worst = min(worst, TOO_NEW)
            elif when < min_ts:
                worst = min(worst, TOO_OLD)
        pos = body + length
    return FINE if worst == 7 else worst


def _value_length(raw: bytes, pos: int, label_end: int, name_length: int) -> int:
    """
    The length of the value of the label field at C{pos} (which
    L{read_label} found in shape), 0 when it has none.
    """
    _, inner = _read_length(raw, pos + 1, label_end)
    _, name_start = _read_length(raw, inner + 1, label_end)
    value_at = name_start + name_length
    if value_at == label_end:
        return 0
    length, _ = _read_length(raw, value_at + 1, label_end)
    return length


def _check_samples_python(
    raw: bytes, max_labels: int, max_name: int, max_value: int, min_ts: int, max_ts: int
) -> Optional[Verdicts]:
    """
    The reference implementation of C{check_samples}, what
    C{sealgw.signals._relabel_c.check_samples} does in C: the verdicts on
    C{raw} (an uncompressed C{WriteRequest}) within the limits given, or
    L{None} when it is not of the shape read here.
    """
    pos = 0
    end = len(raw)
    codes = bytearray()
    bad = False
    try:
        while pos < end:
            tag = raw[pos]
            if tag & 0x87 != 0x02:
                return None
            length, start = _read_length(raw, pos + 1, end)
            stop = start + length
            if tag == _TIMESERIES:
                code = _check_series(
                    raw, start, stop, max_labels, max_name, max_value, min_ts, max_ts
                )
                codes.append(code)
                bad = bad or code != FINE
            pos = stop
    except (IndexError, ValueError, _OutOfShape):
        return None
    return (len(codes), bytes(codes) if bad else b"")


Checker = Callable[[bytes, int, int, int, int, int], Optional[Verdicts]]


def _implementation() -> tuple[str, Checker]:
    try:
        from sealgw.signals._relabel_c import check_samples
    except ImportError:  # installed without a compiler
        return "python", _check_samples_python
    return "c", check_samples


#: C{"c"} when the C reader was built, C{"python"} otherwise; and that
#: reader, C{check_samples(raw, max_labels, max_name, max_value, min_ts,
#: max_ts)}.
IMPLEMENTATION, check_samples = _implementation()
