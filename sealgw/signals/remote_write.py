"""
Prometheus remote write 1.0: decode, validate, relabel and re-encode a
C{WriteRequest}.

Bodies that need no change are not re-encoded: L{validate} only reads, and
L{apply_labels} reports whether it changed anything, so the relay can send
the client's own bytes on.  L{validate_encoded} judges the same rules on
the encoded request, in C, where its shape allows.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from sealgw.signals import _labelcheck
from sealgw.signals._labelcheck import (
    DUPLICATE_NAME,
    EMPTY_METRIC_NAME,
    FINE,
    INVALID_NAME,
    NO_METRIC_NAME,
    UNSORTED,
)
from sealgw.signals._labels import METRIC_NAME, all_valid_label_names, valid_label_name
from sealgw.signals.compression import snappy_compress
from sealgw.signals.errors import DecodeError, quote
from sealgw.signals.proto.remote_pb2 import Label, TimeSeries, WriteRequest

__all__ = [
    "Label",
    "TimeSeries",
    "WriteRequest",
    "apply_labels",
    "batches",
    "decode",
    "encode",
    "json_float",
    "to_records",
    "validate",
    "validate_encoded",
]


def decode(raw: bytes) -> WriteRequest:
    """
    Parse an uncompressed C{WriteRequest}.  Fields this module does not
    declare (native histogram details, newer additions) are kept and
    re-encoded unchanged.

    @raise DecodeError: if C{raw} is not a C{WriteRequest}.
    """
    request = WriteRequest()
    try:
        request.ParseFromString(raw)
    except ProtobufDecodeError as e:
        raise DecodeError("remote write: body is not a valid WriteRequest protobuf") from e
    return request


def validate(request: WriteRequest) -> None:
    """
    Check what a receiver would otherwise refuse: every series has a
    C{__name__}, its labels are sorted by name, unique and validly named.

    @raise DecodeError: naming the first bad series by its index.
    """
    for index, series in enumerate(request.timeseries):
        names = [label.name for label in series.labels]
        # sorted(set(...)) equals the list only if it is sorted and unique;
        # both steps run in C.
        if sorted(set(names)) != names:
            raise _series_error(index, *_order_problem(names))
        if METRIC_NAME not in names:
            raise _series_error(index, NO_METRIC_NAME)
        if not all_valid_label_names(names):
            bad = next(name for name in names if not valid_label_name(name))
            raise _series_error(index, INVALID_NAME, bad)
        if not series.labels[names.index(METRIC_NAME)].value:
            raise _series_error(index, EMPTY_METRIC_NAME)


def validate_encoded(raw: bytes) -> bool:
    """
    L{validate} on the encoded request C{raw}, already parsed by L{decode}
    (which checked its schema and UTF-8), without its objects: in C when
    the extension was built (L{sealgw.signals._labelcheck}), with the same
    verdict and message as L{validate}.

    @return: whether C{raw} was judged (and valid): L{False} when it is not
        in the shape read on the bytes, or the C reader was not built (the
        Python one is slower than the objects); the caller then calls
        L{validate}.
    @raise DecodeError: naming the first bad series by its index.
    """
    if _labelcheck.IMPLEMENTATION != "c":
        return False
    verdict = _labelcheck.check_labels(raw)
    if verdict is None:
        return False
    index, problem, name = verdict
    if problem == FINE:
        return True
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:  # not from a body decode accepted
        return False
    raise _series_error(index, problem, text)


_PROBLEMS = {
    DUPLICATE_NAME: "duplicate label name {name}",
    UNSORTED: "labels not sorted by name",
    NO_METRIC_NAME: f"no {METRIC_NAME} label",
    INVALID_NAME: "invalid label name {name}",
    EMPTY_METRIC_NAME: f"empty {METRIC_NAME}",
}


def _series_error(index: int, problem: int, name: str = "") -> DecodeError:
    what = _PROBLEMS[problem].format(name=quote(name))
    return DecodeError(f"remote write: timeseries[{index}]: {what}")


def _order_problem(names: list[str]) -> tuple[int, str]:
    for before, after in pairwise(names):
        if before == after:
            return DUPLICATE_NAME, after
        if before > after:
            return UNSORTED, after
    return UNSORTED, ""  # pragma: no cover


def apply_labels(request: WriteRequest, add: Mapping[str, str], remove: frozenset[str]) -> bool:
    """
    Set every label in C{add} on every series (overriding the series' own
    value), then delete every label named in C{remove}, keeping labels
    sorted.  A label whose value ends up empty is dropped, as Prometheus
    treats an empty value as no label.

    @return: whether any series changed; when not, the request's original
        bytes are still an exact encoding of it.
    """
    if not add and not remove:
        return False
    changed = False
    for series in request.timeseries:
        labels = series.labels
        # Reading a label's value costs as much as its name: read only the
        # names, and the values of labels that add might change.
        names = [label.name for label in labels]
        if _unchanged(labels, names, add, remove):
            continue
        current = {label.name: label.value for label in labels}
        current.update(add)
        del labels[:]
        for name in sorted(current):
            if name not in remove and current[name]:
                labels.add(name=name, value=current[name])
        changed = True
    return changed


def _unchanged(
    labels: Sequence[Label], names: list[str], add: Mapping[str, str], remove: frozenset[str]
) -> bool:
    if not remove.isdisjoint(names):
        return False
    if not all(label.value for label in labels):
        return False  # an empty value is dropped when labels are rewritten
    for name, value in add.items():
        if name in names:
            if labels[names.index(name)].value != value:
                return False
        elif value:
            return False
    return True


def encode(request: WriteRequest) -> bytes:
    """
    The snappy-compressed serialisation of C{request}, as a remote-write
    body.
    """
    return snappy_compress(request.SerializeToString())


def json_float(value: float) -> float | str:
    """
    C{value} as JSON can carry it: finite numbers as they are, C{NaN},
    C{+Inf} and C{-Inf} as the strings Prometheus writes for them.
    """
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def to_records(request: WriteRequest) -> list[dict[str, Any]]:
    """
    One JSON-able record per series, for the file upstream::

        {"labels": {"__name__": "up", ...}, "samples": [[ts_ms, value], ...]}

    with C{"exemplars"} (C{{"labels", "value", "timestamp"}}) and
    C{"histograms"} (C{{"timestamp", "protobuf"}}: the native histogram's
    serialisation, base64) added when the series has any.  Metadata is not
    recorded.
    """

    records = []
    for series in request.timeseries:
        record: dict[str, Any] = {
            "labels": {label.name: label.value for label in series.labels},
            "samples": [[sample.timestamp, json_float(sample.value)] for sample in series.samples],
        }
        if series.exemplars:
            record["exemplars"] = [
                {
                    "labels": {label.name: label.value for label in exemplar.labels},
                    "value": json_float(exemplar.value),
                    "timestamp": exemplar.timestamp,
                }
                for exemplar in series.exemplars
            ]
        if series.histograms:
            record["histograms"] = [
                {
                    "timestamp": histogram.timestamp,
                    "protobuf": base64.b64encode(histogram.SerializeToString()).decode("ascii"),
                }
                for histogram in series.histograms
            ]
        records.append(record)
    return records


def _weight(series: TimeSeries) -> int:
    return len(series.samples) + len(series.histograms)


def batches(series: list[TimeSeries], size: int) -> Iterator[WriteRequest]:
    """
    Group C{series} into requests of at most C{size} samples each (native
    histograms count as samples).  A series with more than C{size} samples
    is split across requests, its labels repeated and its exemplars sent
    with the first part.  A series with no samples at all still goes out,
    counted as one.

    @raise ValueError: if C{size} is less than 1.
    """
    if size < 1:
        raise ValueError("batch size must be at least 1")
    request = WriteRequest()
    used = 0
    for one in series:
        weight = _weight(one)
        if weight > size:
            for part in _split(one, size):
                if used + _weight(part) > size:
                    yield request
                    request, used = WriteRequest(), 0
                request.timeseries.append(part)
                used += _weight(part)
            continue
        weight = max(weight, 1)
        if used + weight > size and used:
            yield request
            request, used = WriteRequest(), 0
        request.timeseries.append(one)
        used += weight
    if used:
        yield request


def _split(series: TimeSeries, size: int) -> Iterator[TimeSeries]:
    samples = list(series.samples)
    histograms = list(series.histograms)
    first = True
    while samples or histograms:
        part = TimeSeries(labels=series.labels)
        if first:
            part.exemplars.extend(series.exemplars)
            first = False
        room = size
        taken, samples = samples[:room], samples[room:]
        part.samples.extend(taken)
        room -= len(taken)
        if room:
            taken_h, histograms = histograms[:room], histograms[room:]
            part.histograms.extend(taken_h)
        yield part
