"""
The seal-proxy push (C{POST /publish/metrics}) and its older sui-proxy
variant: Prometheus C{MetricFamily} messages in the delimited encoding,
turned into remote-write series.

seal-proxy kept only counters and gauges; here every type becomes the
series Prometheus itself would scrape from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Optional

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError as ProtobufDecodeError

from sealgw.signals import _wire as wire
from sealgw.signals._floats import format_bound
from sealgw.signals._labels import METRIC_NAME, is_utf8_text, valid_label_name
from sealgw.signals._media import parse_media_type
from sealgw.signals._wire import LabelCache
from sealgw.signals.compression import decode_body, snappy_decompress
from sealgw.signals.errors import DecodeError, PayloadTooLarge, quote
from sealgw.signals.proto.metrics_pb2 import (
    COUNTER,
    GAUGE,
    GAUGE_HISTOGRAM,
    HISTOGRAM,
    SUMMARY,
    UNTYPED,
    Metric,
    MetricFamily,
)

__all__ = [
    "MetricFamily",
    "SUI_CONTENT_TYPE",
    "decode_delimited",
    "decode_seal_json",
    "decode_sui_body",
    "is_sui_content_type",
    "to_series",
]

SUI_CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

_MAX_VARINT = 10


def decode_seal_json(raw: bytes) -> tuple[dict[str, str], bytes]:
    """
    Read a seal-proxy body (already snappy-decompressed)::

        {"labels": {"k": "v"}, "buf": [10, 4, ...]}

    C{labels} may be left out or C{null}; other keys are ignored, as
    seal-proxy ignores them.

    @return: the client's labels and the delimited C{MetricFamily} stream.
    @raise DecodeError: if the body has any other shape.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise DecodeError("seal push: body is not valid JSON") from e
    if not isinstance(doc, dict):
        raise DecodeError("seal push: body is not a JSON object")
    labels = doc.get("labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict) or not all(
        isinstance(v, str) and is_utf8_text(v) for v in labels.values()
    ):
        raise DecodeError("seal push: labels: must be an object of strings")
    for name in labels:
        if not valid_label_name(name):
            raise DecodeError(f"seal push: labels: invalid label name {quote(name)}")
    values = doc.get("buf")
    if not isinstance(values, list):
        raise DecodeError("seal push: buf: must be an array of byte values")
    # map(type) and set() run in C: no per-byte Python code on large bodies.
    if not set(map(type, values)) <= {int}:
        raise DecodeError("seal push: buf: values must be integers from 0 to 255")
    try:
        buf = bytes(values)
    except ValueError as e:
        raise DecodeError("seal push: buf: values must be integers from 0 to 255") from e
    return labels, buf


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for i in range(_MAX_VARINT):
        if pos + i >= len(buf):
            raise DecodeError(f"seal push: metric stream ends inside a length prefix at byte {pos}")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result, pos + i + 1
    raise DecodeError(f"seal push: length prefix at byte {pos} is longer than 10 bytes")


#: The most metric families one push may carry.  seal's clients send a
#: handful; a stream of thousands is a mistake or an attack, and parsing
#: each one costs far more than the bytes that declare it.
MAX_FAMILIES = 10_000


def decode_delimited(buf: bytes, max_families: int = MAX_FAMILIES) -> list[MetricFamily]:
    """
    Split a stream of C{MetricFamily} messages, each preceded by its length
    as a varint, and parse them.  Empty messages carry nothing and are
    skipped without being built.

    @raise DecodeError: naming the family and byte offset of a truncated or
        malformed message.
    @raise PayloadTooLarge: past C{max_families} families.
    """
    families: list[MetricFamily] = []
    view = memoryview(buf)
    pos = 0
    index = 0
    while pos < len(buf):
        start = pos
        length, pos = _read_varint(buf, pos)
        end = pos + length
        if end > len(buf):
            raise DecodeError(
                f"seal push: metric family {index} at byte {start} is truncated"
                f" ({length} bytes declared, {len(buf) - pos} present)"
            )
        index += 1
        if length == 0:
            continue
        if len(families) >= max_families:
            raise PayloadTooLarge(
                f"seal push: more than {max_families} metric families in one push"
            )
        family = MetricFamily()
        try:
            family.ParseFromString(view[pos:end])
        except ProtobufDecodeError as e:
            raise DecodeError(
                f"seal push: metric family {index - 1} at byte {start}"
                " is not a valid MetricFamily protobuf"
            ) from e
        families.append(family)
        pos = end
    return families


def is_sui_content_type(content_type: Optional[str]) -> bool:
    """
    Whether C{content_type} is the sui-proxy one, L{SUI_CONTENT_TYPE}
    (parameters in any order, names and values in any case).
    """
    essence, params = parse_media_type(content_type)
    return (
        essence == "application/vnd.google.protobuf"
        and params.get("proto", "").lower() == "io.prometheus.client.metricfamily"
        and params.get("encoding", "").lower() == "delimited"
    )


def decode_sui_body(body: bytes, content_encoding: Optional[str], limit: int) -> list[MetricFamily]:
    """
    Read a sui-proxy body: the bare delimited stream, snappy-compressed or
    not.  With C{Content-Encoding} set, it decides; without, a body that is
    a valid snappy block is decompressed, and any other body is read as it
    is.

    @raise PayloadTooLarge: if the body, or the snappy block it is, is larger
        than C{limit}.
    @raise DecodeError: if it is neither form of a valid stream.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding != "identity":
        return decode_delimited(decode_body(body, content_encoding, limit))
    try:
        raw = snappy_decompress(body, limit)
    except DecodeError:
        pass
    else:
        try:
            return decode_delimited(raw)
        except DecodeError:
            pass  # a raw stream that happens to read as snappy: take it as it is
    return decode_delimited(decode_body(body, None, limit))


def _text(value: Any, where: str) -> str:
    # proto2 strings that are not UTF-8 come back as bytes.
    if not isinstance(value, str):
        raise DecodeError(f"seal push: {where}: not valid UTF-8")
    return value


def _family_type(family: MetricFamily, where: str) -> int:
    if not family.HasField("type"):
        # An enum value this file does not know lands in the unknown fields.
        if any(field.field_number == 3 for field in unknown_fields.UnknownFieldSet(family)):
            raise DecodeError(f"seal push: {where}: unknown metric type")
    return family.type


def to_series(
    families: list[MetricFamily],
    *,
    client_labels: Mapping[str, str],
    add: Mapping[str, str],
    remove: frozenset[str],
    node_name: Optional[str],
    client_ip: Optional[str],
    now_ms: int,
) -> list[bytes]:
    """
    Convert every metric of C{families} to remote-write series, each an
    encoded C{TimeSeries} with one sample, named as Prometheus names them:

      - counter, gauge, untyped: C{<name>};
      - histogram and gauge histogram: C{<name>_bucket{le="..."}} for each
        cumulative bucket up to C{+Inf} (added from the sample count when
        the client left it out), C{<name>_sum}, C{<name>_count}.  Gauge
        histograms get the same names, as Prometheus gives them when it
        scrapes protobuf (not OpenMetrics' C{_gsum}/C{_gcount});
      - summary: C{<name>{quantile="..."}}, C{<name>_sum}, C{<name>_count}.

    Native-histogram fields and exemplars are ignored.

    Labels, lowest precedence first: the metric's own, the client's
    C{labels}, C{node_name} and C{client_ip} (so a client cannot pose as
    another node), then C{add}; every label named in C{remove} is then
    deleted, and labels with empty values dropped.  C{__name__}, C{le} and
    C{quantile} are set last and always kept.

    @param now_ms: the timestamp of metrics that carry none (or 0, which
        Prometheus reads as none).
    @raise DecodeError: naming the family and metric that cannot be
        converted.
    """
    for name in client_labels:
        if not valid_label_name(name):
            raise DecodeError(f"seal push: labels: invalid label name {quote(name)}")
    overlay = dict(client_labels)
    if node_name is not None:
        overlay["node_name"] = node_name
    if client_ip is not None:
        overlay["client_ip"] = client_ip
    overlay.update(add)

    out: list[bytes] = []
    encode = LabelCache()
    for f_index, family in enumerate(families):
        if not family.metric:
            continue
        where = f"metric family {f_index}"
        name = _text(family.name, where + ": name")
        if not name:
            raise DecodeError(f"seal push: {where}: no name")
        where = f"metric family {quote(name)}"
        kind = _family_type(family, where)
        for m_index, metric in enumerate(family.metric):
            here = f"{where}: metric[{m_index}]"
            labels = _metric_labels(metric, here)
            labels.update(overlay)
            for gone in remove:
                labels.pop(gone, None)
            timestamp = metric.timestamp_ms or now_ms
            emit = _Emitter(out, labels, timestamp, encode)
            if kind == COUNTER:
                emit(name, metric.counter.value)
            elif kind == GAUGE:
                emit(name, metric.gauge.value)
            elif kind == UNTYPED:
                emit(name, metric.untyped.value)
            elif kind == SUMMARY:
                _summary(emit, name, metric, here)
            elif kind in (HISTOGRAM, GAUGE_HISTOGRAM):
                _histogram(emit, name, metric, here)
            else:  # pragma: no cover - every MetricType value is handled above
                raise DecodeError(f"seal push: {where}: unknown metric type")
    return out


def _metric_labels(metric: Metric, where: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in metric.label:
        name = pair.name
        value = pair.value
        # proto2 strings that are not UTF-8 come back as bytes.  The
        # messages are only written when needed: this runs per label.
        if not isinstance(name, str):
            _text(name, where + ": label name")
        if not isinstance(value, str):
            _text(value, where + f": label {quote(name)}")
        if not valid_label_name(name):
            raise DecodeError(f"seal push: {where}: invalid label name {quote(name)}")
        if name in labels:
            raise DecodeError(f"seal push: {where}: duplicate label name {quote(name)}")
        labels[name] = value
    return labels


class _Emitter:
    """
    Appends one encoded series per call, with the metric's labels plus
    C{__name__} and an optional C{le} or C{quantile}.
    """

    def __init__(
        self, out: list[bytes], labels: dict[str, str], timestamp: int, encode: LabelCache
    ) -> None:
        self._out = out
        self._labels = {k: v for k, v in labels.items() if v}
        self._timestamp = timestamp
        self._encode = encode

    def __call__(self, name: str, value: float, extra: Optional[tuple[str, str]] = None) -> None:
        labels = dict(self._labels)
        labels[METRIC_NAME] = name
        if extra is not None:
            labels[extra[0]] = extra[1]
        self._out.append(wire.series(labels, value, self._timestamp, self._encode))


def _count(as_float: float, as_int: int) -> float:
    # The float field, when used, overrides the integer one.
    return as_float if as_float > 0 else float(as_int)


def _histogram(emit: _Emitter, name: str, metric: Metric, where: str) -> None:
    histogram = metric.histogram
    count = _count(histogram.sample_count_float, histogram.sample_count)
    previous = -math.inf
    for bucket in histogram.bucket:
        bound = bucket.upper_bound
        if math.isnan(bound) or bound <= previous:
            raise DecodeError(f"seal push: {where}: bucket upper bounds are not increasing")
        previous = bound
        emit(
            name + "_bucket",
            _count(bucket.cumulative_count_float, bucket.cumulative_count),
            ("le", format_bound(bound)),
        )
        if bound == math.inf:
            break
    if previous != math.inf:
        emit(name + "_bucket", count, ("le", "+Inf"))
    emit(name + "_sum", histogram.sample_sum)
    emit(name + "_count", count)


def _summary(emit: _Emitter, name: str, metric: Metric, where: str) -> None:
    summary = metric.summary
    seen = set()
    for quantile in summary.quantile:
        label = format_bound(quantile.quantile)
        if label in seen:
            raise DecodeError(f"seal push: {where}: quantile {label} given twice")
        seen.add(label)
        emit(name, quantile.value, ("quantile", label))
    emit(name + "_sum", summary.sample_sum)
    emit(name + "_count", float(summary.sample_count))
