"""
Remote write 2.0 on the protobuf objects: the conversion to 1.0 and the
label actions through the symbols table, as plain Python.

They are the reference the C walks of C{sealgw.signals._relabel_c}
(C{convert_v2}, C{relabel_v2}) are tested against, and what runs for a
request those step aside from (another shape, or a problem the objects
then name) or when the extension was not built; about 10 to 35 times
slower, since every reference read from Python is an object.
L{sealgw.signals.remote_write2} chooses between them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from sealgw.signals._wire import field, sample, varint
from sealgw.signals.proto.remote_v2_pb2 import Exemplar, Metadata, Request, TimeSeries

__all__ = ["apply_labels", "to_v1"]

# The fields of the 1.0 request to_v1 writes.
_V1_TIMESERIES = 0x0A  # WriteRequest.timeseries: field 1
_V1_METADATA = 0x1A  # WriteRequest.metadata: field 3
_V1_LABELS = 0x0A  # TimeSeries.labels: field 1
_V1_EXEMPLARS = 0x1A  # TimeSeries.exemplars: field 3
_V1_HISTOGRAMS = 0x22  # TimeSeries.histograms: field 4, the same fields 1 to 15 as 2.0's
_V1_NAME = 0x0A  # Label.name: field 1
_V1_VALUE = 0x12  # Label.value: field 2
_V1_EXEMPLAR_VALUE = 0x11  # Exemplar.value: field 2, 64-bit
_V1_EXEMPLAR_TIMESTAMP = 0x18  # Exemplar.timestamp: field 3, varint
_V1_METADATA_TYPE = 0x08  # MetricMetadata.type: field 1, varint (the same numbers)
_V1_METADATA_FAMILY = 0x12  # MetricMetadata.metric_family_name: field 2
_V1_METADATA_HELP = 0x22  # MetricMetadata.help: field 4
_V1_METADATA_UNIT = 0x2A  # MetricMetadata.unit: field 5
_METRIC_NAME = "__name__"

_DOUBLE = struct.Struct("<d")
_INT64 = (1 << 64) - 1



def to_v1(request: Request) -> bytes:
    """
    The uncompressed remote-write 1.0 C{WriteRequest} C{request} says:
    one 1.0 series per 2.0 series, in order, its labels sorted by name
    (a label with an empty value left out, as Prometheus reads it), its
    samples, exemplars and native histograms (field for field: 1.0's
    histogram has 2.0's field numbers); then one C{MetricMetadata} per
    metric family the series describe.  A series' created timestamp has
    no place in 1.0 and is left out.

    Call after L{check_references} and L{expanded_size}.
    """
    symbols = list(request.symbols)
    encoded = [symbol.encode("utf-8") for symbol in symbols]
    labels: dict[tuple[int, int], bytes] = {}
    out = []
    metadata: dict[bytes, None] = {}
    for series in request.timeseries:
        refs = series.labels_refs
        pairs = sorted(zip(refs[0::2], refs[1::2], strict=True), key=lambda p: symbols[p[0]])
        parts = []
        for pair in pairs:
            one = labels.get(pair)
            if one is None:
                name, value = encoded[pair[0]], encoded[pair[1]]
                one = labels[pair] = (
                    field(_V1_LABELS, field(_V1_NAME, name) + field(_V1_VALUE, value))
                    if value
                    else b""
                )
            parts.append(one)
        for one_sample in series.samples:
            parts.append(sample(one_sample.value, one_sample.timestamp))
        for exemplar in series.exemplars:
            parts.append(field(_V1_EXEMPLARS, _exemplar(exemplar, encoded)))
        for histogram in series.histograms:
            parts.append(field(_V1_HISTOGRAMS, histogram.SerializeToString()))
        out.append(field(_V1_TIMESERIES, b"".join(parts)))
        if series.HasField("metadata"):
            one_metadata = _metadata(series, symbols, encoded)
            if one_metadata:
                metadata[one_metadata] = None
    out.extend(metadata)
    return b"".join(out)


def _exemplar(exemplar: Exemplar, encoded: Sequence[bytes]) -> bytes:
    refs = exemplar.labels_refs
    parts = [
        field(_V1_LABELS, field(_V1_NAME, encoded[name]) + field(_V1_VALUE, encoded[value]))
        for name, value in zip(refs[0::2], refs[1::2], strict=True)
    ]
    parts.append(bytes([_V1_EXEMPLAR_VALUE]) + _DOUBLE.pack(exemplar.value))
    parts.append(bytes([_V1_EXEMPLAR_TIMESTAMP]) + varint(exemplar.timestamp & _INT64))
    return b"".join(parts)


def _metadata(series: TimeSeries, symbols: Sequence[str], encoded: Sequence[bytes]) -> bytes:
    """
    The 1.0 metadata record of C{series}' metric family (its
    C{__name__}), or C{b""} when it says nothing or names no family.
    """
    metadata = series.metadata
    if metadata.type == Metadata.METRIC_TYPE_UNSPECIFIED and not (
        metadata.help_ref or metadata.unit_ref
    ):
        return b""
    refs = series.labels_refs
    family = next(
        (value for name, value in zip(refs[0::2], refs[1::2], strict=True)
         if symbols[name] == _METRIC_NAME),
        0,
    )
    if not family:
        return b""
    parts = [
        bytes([_V1_METADATA_TYPE]) + varint(metadata.type & _INT64),
        field(_V1_METADATA_FAMILY, encoded[family]),
    ]
    if metadata.help_ref:
        parts.append(field(_V1_METADATA_HELP, encoded[metadata.help_ref]))
    if metadata.unit_ref:
        parts.append(field(_V1_METADATA_UNIT, encoded[metadata.unit_ref]))
    return field(_V1_METADATA, b"".join(parts))


def apply_labels(request: Request, add: Mapping[str, str], remove: frozenset[str]) -> bool:
    """
    L{sealgw.signals.remote_write.apply_labels} through the symbols
    table: every label in C{add} set on every series (its value replacing
    the client's), then every label named in C{remove} deleted, labels
    kept sorted by name and those with an empty value dropped.  Symbols
    are only ever appended, so every other reference (exemplars,
    metadata) still names what it named.

    @return: whether any series changed.
    """
    if not add and not remove:
        return False
    symbols = request.symbols
    index: dict[str, int] = {}

    def ref(text: str) -> int:
        found = index.get(text)
        if found is None:
            symbols.append(text)
            found = index[text] = len(symbols) - 1
        return found

    table = list(symbols)
    for position, symbol in enumerate(table):
        index.setdefault(symbol, position)
    if not table:
        ref("")  # symbols[0] is the empty string
    added = {name: (ref(name), ref(value)) for name, value in add.items() if value}
    cleared = frozenset(name for name, value in add.items() if not value) | remove
    changed = False
    for series in request.timeseries:
        refs = series.labels_refs
        pairs = {table[name]: (name, value) for name, value in zip(refs[0::2], refs[1::2], strict=True)}
        current = {name: pair for name, pair in pairs.items() if table[pair[1]]}
        current.update(added)
        for name in cleared:
            current.pop(name, None)
        new = [ref_ for name in sorted(current) for ref_ in current[name]]
        if new != list(refs):
            del refs[:]
            refs.extend(new)
            changed = True
    return changed
