"""
A remote-write request split by the tenant its series name in a label
(C{tenant_from_label}): one Prometheus scraping many teams sends one
stream, and each team's series go to that team's tenant.

The split reads the request's encoded bytes: a series' labels are found
by their length prefixes and read up to the tenant's label, and each series is kept as the bytes it came as, so the parts
are the request's own bytes regrouped, with nothing decoded into objects
or encoded again.  A request not in the shape senders produce (labels
unsorted, fields of more than one byte of tag) is split through the
protobuf objects instead, with the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import attr

from sealgw.signals._relabel import _read_length, read_label, rest_in_shape
from sealgw.signals._wire import varint
from sealgw.signals.proto.remote_pb2 import TimeSeries, WriteRequest

_TIMESERIES = 0x0A  # WriteRequest.timeseries: field 1
_LABELS = 0x0A  # TimeSeries.labels: field 1


@attr.frozen
class TenantParts:
    """
    A request's series grouped by their tenant label's value.

    @ivar series: by value (C{b""} for series without the label, or with
        it empty, which Prometheus reads as no label), each series' whole
        C{WriteRequest.timeseries} field, in the request's order.
    @ivar first: by value, the index in the request of its first series
        (for messages naming it).
    @ivar other: every field that is not a series (metadata), in order.
    @ivar count: the series in the request.
    """

    series: dict[bytes, list[bytes]]
    first: dict[bytes, int]
    other: bytes
    count: int

    def series_at(self, value: bytes) -> TimeSeries:
        """
        The first series whose tenant label is C{value}, as an object.
        """
        field = self.series[value][0]
        return WriteRequest.FromString(field).timeseries[0]


def split_by_label(raw: bytes, label: str, max_series: int) -> TenantParts:
    """
    C{raw} (an uncompressed C{WriteRequest}) grouped by the value of
    C{label} on each series; the split stops once past C{max_series}
    series (C{count} then says more, and the parts are incomplete: the
    request is to be refused whole, with no more work spent on it).

    @raise google.protobuf.message.DecodeError: for bytes that are not a
        C{WriteRequest} at all.
    """
    name = label.encode("utf-8")
    parts = split_encoded(raw, name, max_series)
    if parts is None:
        request = WriteRequest.FromString(raw)
        if len(request.timeseries) > max_series:
            return TenantParts({}, {}, b"", len(request.timeseries))
        parts = _split_objects(request, name)
    return parts


def _split_c(raw: bytes, name: bytes, max_series: int = 1 << 62) -> Optional[TenantParts]:
    """
    L{_split_encoded} in C: the same parts, from the same bodies.
    """
    split = _c_split(raw, name, max_series)
    if split is None:
        return None
    series, first, other, count = split
    return TenantParts(series, first, b"".join(other), count)


def _split_encoded(
    raw: bytes, name: bytes, max_series: int = 1 << 62
) -> Optional[TenantParts]:
    """
    L{split_by_label} on the bytes, or L{None} when they are not of the
    shape read here: the reference of the C loop.
    """
    series: dict[bytes, list[bytes]] = {}
    first: dict[bytes, int] = {}
    other: list[bytes] = []
    count = 0
    pos = 0
    end = len(raw)
    try:
        while pos < end:
            if count > max_series:
                break  # to be refused whole: no more work on it
            tag = raw[pos]
            if tag & 0x87 != 0x02:
                return None  # only length-delimited fields 1 to 15 are expected here
            length, start = _read_length(raw, pos + 1, end)
            stop = start + length
            if tag != _TIMESERIES:
                other.append(raw[pos:stop])
                pos = stop
                continue
            value = _tenant_value(raw, start, stop, name)
            if value is None:
                return None
            group = series.get(value)
            if group is None:
                series[value] = group = []
                first[value] = count
            group.append(raw[pos:stop])
            count += 1
            pos = stop
    except (IndexError, ValueError):
        return None
    return TenantParts(series, first, b"".join(other), count)


def _tenant_value(raw: bytes, pos: int, stop: int, wanted: bytes) -> Optional[bytes]:
    """
    The value of the label named C{wanted} in the series C{raw[pos:stop]}
    (C{b""} when it has none, or an empty one), or L{None} when its labels
    are not sorted names and values only, or (when it has not the label)
    a label follows its samples.

    @raise IndexError: for a length past C{stop}.
    """
    previous: Optional[bytes] = None
    while pos < stop and raw[pos] == _LABELS:
        label = read_label(raw, pos, stop)
        if label is None:
            return None
        name, filled, label_end = label
        if previous is not None and name <= previous:
            return None  # unsorted or repeated: the objects decide
        previous = name
        if name == wanted:
            if not filled:
                return b""
            # The value ends the label (read_label checked), after its length.
            value_at = pos + 1
            _, inner = _read_length(raw, value_at, stop)
            name_length, name_start = _read_length(raw, inner + 1, label_end)
            value_length, value_start = _read_length(raw, name_start + name_length + 1, label_end)
            return raw[value_start:label_end]
        pos = label_end
    # Not among the labels (each read, for their order: one out of order
    # could hide it), and there must be none after the samples.
    if not rest_in_shape(raw, pos, stop):
        return None
    return b""


def _split_objects(request: WriteRequest, name: bytes) -> TenantParts:
    """
    L{split_by_label} on the protobuf objects, for any request.
    """
    wanted = name.decode("utf-8")
    series: dict[bytes, list[bytes]] = {}
    first: dict[bytes, int] = {}
    for index, one in enumerate(request.timeseries):
        text = next((label.value for label in one.labels if label.name == wanted), "")
        value = text.encode("utf-8")
        encoded = one.SerializeToString()
        if value not in series:
            series[value] = []
            first[value] = index
        series[value].append(bytes([_TIMESERIES]) + varint(len(encoded)) + encoded)
    rest = WriteRequest()
    rest.metadata.extend(request.metadata)
    return TenantParts(series, first, rest.SerializeToString(), len(request.timeseries))


def _implementation() -> tuple[str, Callable[[bytes, bytes, int], Optional[TenantParts]]]:
    if _c_split is None:  # installed without a compiler: the same parts, slower
        return "python", _split_encoded
    return "c", _split_c


try:
    from sealgw.signals._relabel_c import split_by_label as _c_split
except ImportError:
    _c_split = None

#: C{"c"} when the C loop was built and is used, C{"python"} otherwise; and
#: that loop.
IMPLEMENTATION, split_encoded = _implementation()
