"""
The label rules of C{check: labels} on the encoded bytes of a remote-write
request, without building protobuf objects.

L{sealgw.signals.remote_write.validate} reads every label name of every
series from the protobuf objects (a Python string per label) and judges
them in Python: about 3.5 µs a series, 6 to 8 ms for a 2,000-series batch,
six times everything else the route does at C{check: decode} (about 1.1
ms, most of it the protobuf parse, which still runs first).  Here the
names stay bytes where they are in the body: UTF-8 orders bytes as Python
orders the strings they encode, so sorted and unique is a byte comparison
with the previous name, and a legacy label name (C{[a-zA-Z_][a-zA-Z0-9_]*})
is ASCII, so its rule is a byte rule.  In C (C{check_labels} in
C{sealgw.signals._relabel_c}, the module of the relabelling loop) a
2,000-series batch takes about 0.1 ms.  The same reading in Python
(L{_check_labels_python}, the reference the C one is tested against in
C{tests.test_labelcheck}) is slower than the objects, about 12 ms a batch,
so without the C module L{sealgw.signals.remote_write.validate_encoded}
leaves the judgement to the objects; L{IMPLEMENTATION} says which one is
there.

Only the shape L{sealgw.signals._relabel} reads is handled: each series'
labels first, each a name and then its value and nothing else, every field
a length-delimited one with a one-byte tag, every length within the
message that holds it.  The names may be in any order here (judging that
is the point).  A body that leaves the shape before the end of its first
bad series is L{None}: not judged, the caller asks the objects (what comes
after the first bad series is not read).  The protobuf parse has run
before (it checks the schema and that names are UTF-8), so these readers
need not check UTF-8; they never read outside the body whatever it holds.

The answer, when judged, is C{(index, problem, name)}: the first bad
series' index, what is wrong with it (L{DUPLICATE_NAME}, L{UNSORTED},
L{NO_METRIC_NAME}, L{INVALID_NAME}, L{EMPTY_METRIC_NAME}: in the order
C{validate} looks for them) and the name at fault (the repeated one, the
first one out of order, the first invalid one; C{b""} for a missing
C{__name__}, C{b"__name__"} for an empty one); or, when every series is
valid, C{(number of series, FINE, b"")}.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Optional

from sealgw.signals._relabel import _read_length, read_label, rest_in_shape

#: Every series is valid.
FINE = 0
#: A label name repeats the one before it.
DUPLICATE_NAME = 1
#: A label name sorts before the one before it.
UNSORTED = 2
#: No C{__name__} label.
NO_METRIC_NAME = 3
#: A name that is not a legacy Prometheus label name.
INVALID_NAME = 4
#: C{__name__} with an empty value.
EMPTY_METRIC_NAME = 5

#: C{(index, problem, name)}, as above.
Verdict = tuple[int, int, bytes]

_TIMESERIES = 0x0A  # WriteRequest.timeseries: field 1, length-delimited
_LABELS = 0x0A  # TimeSeries.labels: field 1
_LABEL_NAME = 0x0A  # Label.name: field 1
_LABEL_VALUE = 0x12  # Label.value: field 2
_METRIC_NAME = b"__name__"

# sealgw.signals._labels.LABEL_NAME, on the UTF-8 bytes: every byte of a
# non-ASCII character is 0x80 or above, which neither class holds.
_VALID_NAME = re.compile(rb"[a-zA-Z_][a-zA-Z0-9_]*")


def _check_labels_python(raw: bytes) -> Optional[Verdict]:
    """
    The reference implementation of C{check_labels}, what
    C{sealgw.signals._relabel_c.check_labels} does in C: the verdict on
    C{raw} (an uncompressed C{WriteRequest}), or L{None} when it is not of
    the shape read here.
    """
    pos = 0
    end = len(raw)
    index = 0
    try:
        while pos < end:
            tag = raw[pos]
            if tag & 0x87 != 0x02:
                return None  # only length-delimited fields 1 to 15 are expected here
            length, start = _read_length(raw, pos + 1, end)
            stop = start + length
            if tag == _TIMESERIES:
                found = _check_series(raw, start, stop)
                if found is None:
                    return None
                if found[0] != FINE:
                    return (index, *found)
                index += 1
            pos = stop
    except (IndexError, ValueError):
        return None
    return (index, FINE, b"")


def _check_series(raw: bytes, start: int, stop: int) -> Optional[tuple[int, bytes]]:
    """
    The problem of the series C{raw[start:stop]} and the name at fault
    (C{FINE} if none), or L{None} when it is not of the shape.

    @raise IndexError: for a length past its message.
    @raise ValueError: for a varint longer than ten bytes.
    """
    pos = start
    previous: Optional[bytes] = None
    order: Optional[tuple[int, bytes]] = None  # the first name out of order
    invalid: Optional[bytes] = None  # the first invalid name
    metric: Optional[bool] = None  # whether __name__ has a value, if there
    while pos < stop and raw[pos] == _LABELS:
        label = read_label(raw, pos, stop)
        if label is None:
            return None
        name, filled, label_end = label
        if order is None and previous is not None and name <= previous:
            order = (DUPLICATE_NAME if name == previous else UNSORTED, name)
        previous = name
        if name == _METRIC_NAME:
            metric = filled
        elif invalid is None and _VALID_NAME.fullmatch(name) is None:
            invalid = name
        pos = label_end
    # The other fields (samples, exemplars, histograms): not read, but a
    # label after them would be out of this shape.
    if not rest_in_shape(raw, pos, stop):
        return None
    if order is not None:
        return order
    if metric is None:
        return (NO_METRIC_NAME, b"")
    if invalid is not None:
        return (INVALID_NAME, invalid)
    if not metric:
        return (EMPTY_METRIC_NAME, _METRIC_NAME)
    return (FINE, b"")


def _implementation() -> tuple[str, Callable[[bytes], Optional[Verdict]]]:
    try:
        from sealgw.signals._relabel_c import check_labels
    except ImportError:  # installed without a compiler
        return "python", _check_labels_python
    return "c", check_labels


#: C{"c"} when the C reader was built, C{"python"} otherwise; and that
#: reader, C{check_labels(raw)}.
IMPLEMENTATION, check_labels = _implementation()
