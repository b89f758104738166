"""
Label actions on the encoded bytes of a remote-write request, without
building protobuf objects.

Setting one label on every series of a 2,000-series batch through the
protobuf objects costs about 11 µs a series (a Python object and a string
per label read, a rebuilt label list per series).  Here a series costs a
few slices: its labels are found by their length prefixes, the added ones
spliced in at their sorted place as bytes encoded once, and the series'
and request's length prefixes rewritten.  In Python (L{_relabel_python})
that is still about 7 µs a series, 14 ms a batch: far more than the rest
of the request.  The same loop in C (C{sealgw.signals._relabel_c}, compiled at
install time when there is a compiler) takes under 0.1 µs a series, 0.15
ms a batch.  L{relabel} uses the C one when it was built, and
L{IMPLEMENTATION} says which one that is; they give the same answer on any
body (C{tests.test_relabel_c}).

Only the shape every remote-write sender produces is handled: each
series' labels first, sorted and unique, each label a name and then its
value and nothing else, every field one the schema puts there with a
one-byte tag, every length within the message that holds it.  Anything
else returns L{None}, and the caller falls back to the objects; so
whatever bytes this returns decode to what the objects would make of the
same request.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Optional

from sealgw.signals._wire import label, varint

_LABELS = 0x0A  # TimeSeries.labels: field 1, length-delimited
_TIMESERIES = 0x0A  # WriteRequest.timeseries: field 1, length-delimited
_LABEL_NAME = 0x0A  # Label.name: field 1
_LABEL_VALUE = 0x12  # Label.value: field 2

#: The added labels, sorted by name: each name (UTF-8) and its whole
#: encoded C{TimeSeries.labels} field.
Adds = tuple[tuple[bytes, bytes], ...]


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """
    The varint at C{pos}, read no further than C{end}, and where it ends.

    @raise IndexError: when it runs into C{end}.
    @raise ValueError: when it is longer than ten bytes.
    """
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise IndexError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _read_length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """
    The length prefix at C{pos} and where the bytes it counts start, which
    must end by C{end}.

    @raise IndexError: when they do not.
    """
    if pos < end and data[pos] < 0x80:
        # One byte: the rule for a label (under 128 bytes).
        length, start = data[pos], pos + 1
    else:
        length, start = _read_varint(data, pos, end)
    if length > end - start:
        raise IndexError("past the end of the message")
    return length, start


def read_label(raw: bytes, pos: int, stop: int) -> Optional[tuple[bytes, bool, int]]:
    """
    The C{TimeSeries.labels} field whose tag is at C{pos}: its name,
    whether it has a value that is not empty, and where it ends; L{None}
    when it is not a name and then, optionally, a value and nothing else.

    @raise IndexError: for a length past C{stop}.
    @raise ValueError: for a varint longer than ten bytes.
    """
    length, inner = _read_length(raw, pos + 1, stop)
    label_end = inner + length
    if inner >= label_end or raw[inner] != _LABEL_NAME:
        return None
    name_length, name_start = _read_length(raw, inner + 1, label_end)
    value_at = name_start + name_length
    if value_at == label_end:
        return raw[name_start:value_at], False, label_end  # no value at all
    # The value, and nothing after it.
    if raw[value_at] != _LABEL_VALUE:
        return None
    value_length, value_start = _read_length(raw, value_at + 1, label_end)
    if value_start + value_length != label_end:
        return None
    return raw[name_start:value_at], value_length > 0, label_end


def rest_in_shape(raw: bytes, pos: int, stop: int) -> bool:
    """
    Whether C{raw[pos:stop]}, what follows a series' labels (samples,
    exemplars, histograms), has length-delimited fields only, and no label
    among them.

    @raise IndexError: for a length past C{stop}.
    @raise ValueError: for a varint longer than ten bytes.
    """
    while pos < stop:
        tag = raw[pos]
        if tag == _LABELS or tag & 0x87 != 0x02:
            return False
        length, body = _read_length(raw, pos + 1, stop)
        pos = body + length
    return True


def prepare(add: Mapping[str, str], remove: frozenset[str]) -> tuple[Adds, tuple[bytes, ...]]:
    """
    The label actions as both implementations take them: the labels to set
    (encoded once, sorted by name) and the names whose labels go (those in
    C{remove}, and those C{add} sets to the empty string).
    """
    drop = {name.encode("utf-8") for name in remove}
    drop.update(name.encode("utf-8") for name, value in add.items() if not value)
    adds = tuple(
        sorted(
            (name.encode("utf-8"), label(name.encode("utf-8"), value.encode("utf-8")))
            for name, value in add.items()
            if value and name not in remove
        )
    )
    return adds, tuple(sorted(drop))


def _relabel_python(raw: bytes, adds: Adds, drop: Collection[bytes]) -> Optional[bytes]:
    """
    The reference implementation of C{relabel_encoded}, what
    C{sealgw.signals._relabel_c} does in C: C{raw} with the prepared
    actions (L{prepare}) applied, or L{None} when not of the shape.
    """
    drop = frozenset(drop)
    out: list[bytes] = []
    pos = 0
    end = len(raw)
    try:
        while pos < end:
            tag = raw[pos]
            if tag & 0x87 != 0x02:
                return None  # only length-delimited fields 1 to 15 are expected here
            length, start = _read_length(raw, pos + 1, end)
            stop = start + length
            if tag != _TIMESERIES:
                out.append(raw[pos:stop])
                pos = stop
                continue
            series = _relabel_series(raw, start, stop, adds, drop)
            if series is None:
                return None
            out.append(bytes([_TIMESERIES]) + varint(len(series)) + series)
            pos = stop
    except (IndexError, ValueError):
        return None
    return b"".join(out)


def _relabel_series(
    raw: bytes, start: int, stop: int, adds: Adds, drop: frozenset[bytes]
) -> Optional[bytes]:
    pieces: list[bytes] = []
    append = pieces.append
    pending = 0
    waiting = len(adds)
    next_name = adds[0][0] if adds else None
    pos = start
    previous: Optional[bytes] = None
    while pos < stop and raw[pos] == _LABELS:
        label = read_label(raw, pos, stop)
        if label is None:
            return None
        name, filled, label_end = label
        if previous is not None and name <= previous:
            return None  # unsorted or repeated: leave the judgement to the slow path
        previous = name
        while next_name is not None and next_name < name:
            append(adds[pending][1])
            pending += 1
            next_name = adds[pending][0] if pending < waiting else None
        if next_name == name:
            append(adds[pending][1])  # replaces the series' own value
            pending += 1
            next_name = adds[pending][0] if pending < waiting else None
        elif filled and name not in drop:
            append(raw[pos:label_end])
        # else: deleted, or an empty value, which is no label, as Prometheus reads it
        pos = label_end
    for _, encoded in adds[pending:]:
        append(encoded)
    # The other fields (samples, exemplars, histograms) pass as they are;
    # a label after them would be out of this shape.
    if not rest_in_shape(raw, pos, stop):
        return None
    append(raw[pos:stop])
    return b"".join(pieces)


def _implementation() -> tuple[str, Callable[[bytes, Adds, tuple[bytes, ...]], Optional[bytes]]]:
    try:
        from sealgw.signals._relabel_c import relabel_encoded
    except ImportError:  # installed without a compiler: the same results, slower
        return "python", _relabel_python
    return "c", relabel_encoded


#: C{"c"} when the C loop was built and is used, C{"python"} otherwise; and
#: that loop, C{relabel_encoded(raw, adds, drop)} with the actions as
#: L{prepare} makes them.
IMPLEMENTATION, relabel_encoded = _implementation()


def relabel(raw: bytes, add: Mapping[str, str], remove: frozenset[str]) -> Optional[bytes]:
    """
    C{raw} (an uncompressed C{WriteRequest}) with C{add} set on every
    series and the labels named in C{remove} deleted, labels kept sorted;
    a label set to the empty string is deleted too.

    @return: the new encoding, or L{None} when C{raw} is not in the shape
        handled here (the caller then uses the protobuf objects).
    """
    adds, drop = prepare(add, remove)
    return relabel_encoded(raw, adds, drop)
