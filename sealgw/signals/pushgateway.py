"""
Pushgateway pushes: what C{prometheus_client.push_to_gateway} and every
other Pushgateway client send, turned into remote-write series.

The grouping key comes from the URL (C{/metrics/job/<job>{/<label>/<value>}},
a value that holds C{/} or is empty sent as C{<label>@base64/<urlsafe
base64>}); the body is the text exposition format, read with
C{prometheus_client}'s own parser, or delimited C{MetricFamily} protobuf,
read as seal pushes are.  Unlike a Pushgateway nothing is kept for
scraping: the series are forwarded at once, timestamped when they arrive.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Optional
from urllib.parse import unquote

from prometheus_client.parser import text_string_to_metric_families

from sealgw.signals import _wire as wire
from sealgw.signals import seal
from sealgw.signals._floats import format_bound
from sealgw.signals._labels import METRIC_NAME, valid_label_name
from sealgw.signals._media import parse_media_type
from sealgw.signals.errors import DecodeError, UnsupportedMediaType, quote
from sealgw.signals.limits import LimitExceeded, check_series_count, timestamp_ms

PREFIXES = ("/metrics/job/", "/metrics/job@base64/")
TEXT_TYPES = ("", "text/plain", "application/openmetrics-text")


def grouping_key(path: str) -> dict[str, str]:
    """
    The labels a push URL's path names: C{job} and any further pairs.

    @param path: the request's path, percent-encoded as it came.
    @raise DecodeError: for a path that is not C{/metrics/job/<job>...},
        an odd number of segments, a bad label name or bad base64.
    @raise LimitExceeded: for a reserved label name (C{__tenant__}): its
        value would be set on every series.
    """
    if not path.startswith(PREFIXES):
        raise DecodeError("pushgateway: the path must start with /metrics/job/")
    parts = path[len("/metrics/"):].split("/")
    if len(parts) % 2:
        raise DecodeError("pushgateway: the grouping key needs a value for every label")
    labels: dict[str, str] = {}
    for name, value in zip(parts[::2], parts[1::2], strict=True):
        name = unquote(name)
        if name.endswith("@base64"):
            name = name[: -len("@base64")]
            value = _base64(value, name)
        else:
            value = unquote(value)
        if not valid_label_name(name) or name == METRIC_NAME:
            raise DecodeError(f"pushgateway: invalid label name {quote(name)} in the path")
        if name.startswith("__"):
            raise LimitExceeded(
                f"pushgateway: label name {quote(name)} in the path is reserved (names "
                "starting with __ are Prometheus's own)",
                "reserved_label_name",
            )
        if name in labels:
            raise DecodeError(f"pushgateway: label {quote(name)} twice in the path")
        labels[name] = value
    if not labels.get("job"):
        raise DecodeError("pushgateway: job must not be empty")
    return labels


def _base64(value: str, name: str) -> str:
    if value == "=":
        return ""  # how clients send an empty value
    try:
        padded = value + "=" * (-len(value) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise DecodeError(f"pushgateway: {quote(name)}: the value is not valid base64") from None


def to_series(
    body: bytes,
    content_type: Optional[str],
    grouping: Mapping[str, str],
    *,
    add: Mapping[str, str],
    remove: frozenset[str],
    now_ms: int,
    max_series: Optional[int] = None,
) -> list[bytes]:
    """
    Every sample of a push body as a series (an encoded C{TimeSeries}
    with one sample): its own labels, then the
    grouping key's (which win, as they name the group), then C{add}; the
    labels in C{remove} deleted.

    A sample's own timestamp is kept; one that is C{NaN}, infinite or
    past int64 milliseconds is refused, never wrapped.

    @param max_series: refuse a body with more samples than this before
        converting them.
    @raise UnsupportedMediaType: for a body in neither format.
    @raise DecodeError: for a body that does not parse.
    @raise LimitExceeded: for a bad timestamp, or more than C{max_series}
        samples (as L{sealgw.signals.limits.SampleLimits} names it).
    """
    if seal.is_sui_content_type(content_type):
        families = seal.decode_delimited(body)
        if max_series is not None:
            check_series_count(
                "pushgateway", sum(len(family.metric) for family in families), max_series
            )
        return seal.to_series(
            families,
            client_labels=grouping,
            add=add,
            remove=remove,
            node_name=None,
            client_ip=None,
            now_ms=now_ms,
        )
    essence, _ = parse_media_type(content_type)
    if essence not in TEXT_TYPES:
        raise UnsupportedMediaType(
            f"pushgateway: Content-Type {quote(essence)} is not supported (send the text "
            "format, or delimited protobuf MetricFamily)"
        )
    try:
        text = body.decode("utf-8")
        parsed = list(text_string_to_metric_families(text))
    except (UnicodeDecodeError, ValueError, TypeError, IndexError) as e:
        raise DecodeError(f"pushgateway: the body is not in the text format: {e}") from None
    if max_series is not None:
        check_series_count(
            "pushgateway", sum(len(family.samples) for family in parsed), max_series
        )
    overlay = {**grouping, **add}
    out: list[bytes] = []
    encode = wire.LabelCache()
    for family in parsed:
        for sample in family.samples:
            labels = {**sample.labels, **overlay}
            for gone in remove:
                labels.pop(gone, None)
            for bound in ("le", "quantile"):
                if bound in sample.labels:
                    labels[bound] = _bound(sample.labels[bound], sample.name)
            labels[METRIC_NAME] = sample.name
            timestamp = (
                timestamp_ms(float(sample.timestamp), f"pushgateway: {quote(sample.name)}")
                if sample.timestamp is not None
                else now_ms
            )
            out.append(wire.series(labels, float(sample.value), timestamp, encode))
    return out


def _bound(text: str, name: str) -> str:
    try:
        return format_bound(float(text))
    except ValueError:
        raise DecodeError(f"pushgateway: {quote(name)}: {quote(text)} is not a number") from None
