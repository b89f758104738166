"""
A C{prometheus_client} registry as the two bodies sealgw takes: Prometheus
C{MetricFamily} protobufs (seal-proxy's push) and, through the same
conversion the gateway applies to seal pushes
(L{sealgw.signals.seal.to_series}), a remote-write request.

Both ways a metric becomes the series Prometheus would scrape from it.
The C{_created} samples C{prometheus_client} adds to counters, histograms
and summaries are left out: Prometheus reads them from a protobuf scrape
as a creation time, not as series of their own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from prometheus_client.registry import Collector
from prometheus_client.samples import Sample, Timestamp

from sealgw.signals import _wire as wire
from sealgw.signals import snappy_compress
from sealgw.signals.proto import metrics_pb2, remote_pb2
from sealgw.signals.seal import to_series

_KINDS = {
    "counter": metrics_pb2.COUNTER,
    "gauge": metrics_pb2.GAUGE,
    "info": metrics_pb2.GAUGE,
    "stateset": metrics_pb2.GAUGE,
    "unknown": metrics_pb2.UNTYPED,
    "untyped": metrics_pb2.UNTYPED,
    "summary": metrics_pb2.SUMMARY,
    "histogram": metrics_pb2.HISTOGRAM,
    "gaugehistogram": metrics_pb2.GAUGE_HISTOGRAM,
}

_METADATA_TYPES = {
    "counter": remote_pb2.MetricMetadata.COUNTER,
    "gauge": remote_pb2.MetricMetadata.GAUGE,
    "info": remote_pb2.MetricMetadata.INFO,
    "stateset": remote_pb2.MetricMetadata.STATESET,
    "summary": remote_pb2.MetricMetadata.SUMMARY,
    "histogram": remote_pb2.MetricMetadata.HISTOGRAM,
    "gaugehistogram": remote_pb2.MetricMetadata.GAUGEHISTOGRAM,
}

# Samples that carry a histogram's or summary's totals, by suffix.
_COUNT = ("_count", "_gcount")
_SUM = ("_sum", "_gsum")

LabelKey = tuple[tuple[str, str], ...]


def families(registry: Collector) -> list[metrics_pb2.MetricFamily]:
    """
    Every metric of C{registry}, collected now, as C{MetricFamily}
    messages named as a Prometheus protobuf scrape names them (a counter's
    family is C{<name>_total}, an info metric's C{<name>_info}).
    """
    out: list[metrics_pb2.MetricFamily] = []
    for metric in registry.collect():
        kind = _KINDS.get(metric.type, metrics_pb2.UNTYPED)
        samples = [s for s in metric.samples if not s.name.endswith("_created")]
        if not samples:
            continue
        if kind in (metrics_pb2.HISTOGRAM, metrics_pb2.GAUGE_HISTOGRAM):
            out.append(_histogram(metric.name, metric.documentation, kind, samples))
        elif kind == metrics_pb2.SUMMARY:
            out.append(_summary(metric.name, metric.documentation, samples))
        else:
            out.extend(_simple(metric.documentation, kind, samples))
    return out


def _family(name: str, documentation: str, kind: Any) -> metrics_pb2.MetricFamily:
    return metrics_pb2.MetricFamily(name=name, help=documentation, type=kind)


def _new_metric(family: metrics_pb2.MetricFamily, labels: Mapping[str, str]) -> Any:
    metric = family.metric.add()
    for name, value in labels.items():
        metric.label.add(name=name, value=value)
    return metric


def _timestamp_ms(timestamp: Optional[float | Timestamp]) -> int:
    if timestamp is None:
        return 0
    return int(round(float(timestamp) * 1000))


def _simple(documentation: str, kind: int, samples: list[Sample]) -> list[Any]:
    # Counters, gauges, info, stateset and untyped: one value per sample.
    # Families are keyed by the sample's name, which is the series' name
    # (a counter's sample is already "<name>_total").
    by_name: dict[str, metrics_pb2.MetricFamily] = {}
    for sample in samples:
        family = by_name.get(sample.name)
        if family is None:
            family = by_name[sample.name] = _family(sample.name, documentation, kind)
        metric = _new_metric(family, sample.labels)
        if kind == metrics_pb2.COUNTER:
            metric.counter.value = sample.value
        elif kind == metrics_pb2.GAUGE:
            metric.gauge.value = sample.value
        else:
            metric.untyped.value = sample.value
        metric.timestamp_ms = _timestamp_ms(sample.timestamp)
    return list(by_name.values())


def _group(samples: list[Sample], drop: str) -> dict[LabelKey, list[Sample]]:
    groups: dict[LabelKey, list[Sample]] = {}
    for sample in samples:
        key = tuple((k, v) for k, v in sample.labels.items() if k != drop)
        groups.setdefault(key, []).append(sample)
    return groups


def _histogram(
    name: str, documentation: str, kind: int, samples: list[Sample]
) -> metrics_pb2.MetricFamily:
    family = _family(name, documentation, kind)
    counts = {name + suffix for suffix in _COUNT}
    sums = {name + suffix for suffix in _SUM}
    for key, group in _group(samples, "le").items():
        metric = _new_metric(family, dict(key))
        histogram = metric.histogram
        for sample in group:
            if sample.name == name + "_bucket":
                bucket = histogram.bucket.add(upper_bound=float(sample.labels["le"]))
                _set_count(bucket, "cumulative_count", sample.value)
            elif sample.name in counts:
                _set_count(histogram, "sample_count", sample.value)
            elif sample.name in sums:
                histogram.sample_sum = sample.value
            metric.timestamp_ms = _timestamp_ms(sample.timestamp)
    return family


def _summary(name: str, documentation: str, samples: list[Sample]) -> metrics_pb2.MetricFamily:
    family = _family(name, documentation, metrics_pb2.SUMMARY)
    for key, group in _group(samples, "quantile").items():
        metric = _new_metric(family, dict(key))
        summary = metric.summary
        for sample in group:
            if sample.name == name and "quantile" in sample.labels:
                summary.quantile.add(quantile=float(sample.labels["quantile"]), value=sample.value)
            elif sample.name == name + "_count":
                summary.sample_count = int(sample.value)
            elif sample.name == name + "_sum":
                summary.sample_sum = sample.value
            metric.timestamp_ms = _timestamp_ms(sample.timestamp)
    return family


def _set_count(message: Any, field: str, value: float) -> None:
    # Counts are integers in the protobuf; a float count (a gauge histogram
    # can have one) goes in the "_float" field that overrides it.
    if value >= 0 and math.isfinite(value) and value == int(value):
        setattr(message, field, int(value))
    else:
        setattr(message, field + "_float", value)


# -- bodies ----------------------------------------------------------------------


def delimited(messages: Iterable[metrics_pb2.MetricFamily]) -> bytes:
    """
    C{messages}, each preceded by its length as a varint.
    """
    out = bytearray()
    for message in messages:
        data = message.SerializeToString()
        length = len(data)
        while length >= 0x80:
            out.append((length & 0x7F) | 0x80)
            length >>= 7
        out.append(length)
        out += data
    return bytes(out)


def seal_body(messages: list[metrics_pb2.MetricFamily], labels: Mapping[str, str]) -> bytes:
    """
    seal-proxy's push body: snappy of C{{"labels": ..., "buf": [bytes]}}.
    """
    doc: dict[str, Any] = {"labels": dict(labels), "buf": list(delimited(messages))}
    return snappy_compress(json.dumps(doc, separators=(",", ":")).encode("utf-8"))


def write_request(
    messages: list[metrics_pb2.MetricFamily],
    labels: Mapping[str, str],
    now_ms: int,
    metadata: Iterable[tuple[str, str, str]] = (),
) -> remote_pb2.WriteRequest:
    """
    The remote-write request of C{messages}, with C{labels} on every series
    (winning over the metric's own, as seal pushes' labels do), and
    C{now_ms} for samples without a timestamp.

    @param metadata: C{(family name, prometheus_client type, help)} to send
        along, as Prometheus does.
    @raise sealgw.signals.DecodeError: for a metric that cannot be
        converted (an invalid label name).
    """
    series = to_series(
        messages,
        client_labels=labels,
        add={},
        remove=frozenset(),
        node_name=None,
        client_ip=None,
        now_ms=now_ms,
    )
    request = remote_pb2.WriteRequest.FromString(wire.write_request(series))
    for name, kind, documentation in metadata:
        request.metadata.add(
            type=_METADATA_TYPES.get(kind, remote_pb2.MetricMetadata.UNKNOWN),
            metric_family_name=name,
            help=documentation,
        )
    return request


def remote_write_body(request: remote_pb2.WriteRequest) -> bytes:
    return snappy_compress(request.SerializeToString())


def metadata_of(messages: list[metrics_pb2.MetricFamily]) -> list[tuple[str, str, str]]:
    """
    The metadata Prometheus would send for C{messages}.
    """
    names = {value: key for key, value in _KINDS.items() if key not in ("info", "stateset")}
    names[metrics_pb2.UNTYPED] = "unknown"
    return [(m.name, names.get(m.type, "unknown"), m.help) for m in messages]
