"""
Pushgateway pushes: what C{prometheus_client.push_to_gateway} and every
other Pushgateway client send, turned into remote-write series.

The grouping key comes from the URL (C{/metrics/job/<job>{/<label>/<value>}},
a value that holds C{/} or is empty sent as C{<label>@base64/<urlsafe
base64>}); the body is the text exposition format, read with
C{prometheus_client}'s own parser, or delimited C{MetricFamily} protobuf,
read as seal pushes are.  Unlike a Pushgateway nothing is kept for
scraping: the series are forwarded at once, timestamped when they arrive.

What a Pushgateway takes, this takes too, so that its clients (and the
C{curl} line in its README) work unchanged: any body that is not sent as
the delimited protobuf type is read as the text format, whatever its
C{Content-Type} says.  Where the two differ on purpose is said in
docs/push.rst ("Differences from a Pushgateway").
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Optional
from urllib.parse import unquote

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from sealgw.signals import _wire as wire
from sealgw.signals import seal
from sealgw.signals._floats import format_bound
from sealgw.signals._labels import METRIC_NAME, valid_label_name
from sealgw.signals._media import parse_media_type
from sealgw.signals.errors import DecodeError, UnsupportedMediaType, quote
from sealgw.signals.limits import LimitExceeded, check_series_count, describe, timestamp_ms
from sealgw.signals.proto.remote_pb2 import TimeSeries

PREFIXES = ("/metrics/job/", "/metrics/job@base64/")

# A Pushgateway's words for an empty job.  It answers /metrics/job/ with a
# redirect to /metrics/job, its 404; saying what is missing serves better,
# and fails the same clients.
_JOB_REQUIRED = "pushgateway: job name is required (/metrics/job/<job>)"

#: The types that say "text format", or say nothing: what C{curl
#: --data-binary} sends (the form type) is one of them.  A body sent as
#: one of these that does not parse is a bad body (400).  Any other type
#: is read as text too, as a Pushgateway reads it; only when that fails
#: is it the type that is refused (415), as the likelier mistake.
TEXT_TYPES = frozenset(
    {"", "text/plain", "application/openmetrics-text", "application/x-www-form-urlencoded"}
)

#: The label a family type's bound is written in, normalised as Prometheus
#: 3 does when it scrapes (a Pushgateway or anything else); in families of
#: other types C{le} and C{quantile} are labels like any other.
_BOUNDS = {"histogram": "le", "summary": "quantile"}


def grouping_key(path: str) -> dict[str, str]:
    """
    The labels a push URL's path names: C{job} and any further pairs.

    @param path: the request's path, percent-encoded as it came.
    @raise DecodeError: for a path that is not C{/metrics/job/<job>...},
        an odd number of segments, a bad label name or bad base64.
    @raise LimitExceeded: for a reserved label name (C{__tenant__}): its
        value would be set on every series.
    """
    if path in ("/metrics/job", "/metrics/job@base64"):
        raise DecodeError(_JOB_REQUIRED)
    if not path.startswith(PREFIXES):
        raise DecodeError("pushgateway: the path must start with /metrics/job/")
    if "%2f" in path.lower():
        # A Pushgateway decodes the path before it splits it: the "/" ends
        # the value there, and the push is refused or lands in another
        # group.  Never guess which was meant.
        raise DecodeError(
            "pushgateway: a percent-encoded / (%2F) in the path; a Pushgateway would "
            "split the value there: send a value that holds / as "
            "<label>@base64/<urlsafe base64>"
        )
    parts = path[len("/metrics/"):].split("/")
    if len(parts) % 2:
        raise DecodeError("pushgateway: the grouping key needs a value for every label")
    labels: dict[str, str] = {}
    for name, value in zip(parts[::2], parts[1::2], strict=True):
        name = _unquoted(name, name)
        if name.endswith("@base64"):
            name = name[: -len("@base64")]
            value = _base64(value, name)
        else:
            value = _unquoted(value, name)
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
        raise DecodeError(_JOB_REQUIRED)
    return labels


def _unquoted(text: str, name: str) -> str:
    """
    A segment of the path, percent-decoded; its bytes, sent raw or
    percent-encoded, must be UTF-8 (a raw byte that is not comes as a
    surrogate).
    """
    try:
        value = unquote(text, errors="strict")
        value.encode("utf-8")
    except UnicodeError:
        raise DecodeError(
            f"pushgateway: {quote(name)} in the path: bytes that are not UTF-8"
        ) from None
    return value


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

    The body is delimited protobuf when C{content_type} is
    L{seal.SUI_CONTENT_TYPE}, and the text format otherwise, as a
    Pushgateway reads it.  A sample's own timestamp is kept; one that is
    C{NaN}, infinite or past int64 milliseconds is refused, never wrapped.
    The same series twice at one time is refused, as a Pushgateway
    refuses it: the upstream would keep one of the values, or refuse the
    rest of the push after part of it was written.

    @param max_series: refuse a body with more samples than this before
        converting them.
    @raise UnsupportedMediaType: for a body sent as another type (neither
        text nor the protobuf one) that does not parse as text either.
    @raise DecodeError: for a body that does not parse, or holds a series
        twice.
    @raise LimitExceeded: for a bad timestamp, or more than C{max_series}
        samples (as L{sealgw.signals.limits.SampleLimits} names it).
    """
    if seal.is_sui_content_type(content_type):
        families = seal.decode_delimited(body)
        if max_series is not None:
            check_series_count(
                "pushgateway", sum(len(family.metric) for family in families), max_series
            )
        series = seal.to_series(
            families,
            client_labels=grouping,
            add=add,
            remove=remove,
            node_name=None,
            client_ip=None,
            now_ms=now_ms,
        )
    else:
        series = _text_series(
            _text_families(body, content_type),
            grouping,
            add=add,
            remove=remove,
            now_ms=now_ms,
            max_series=max_series,
        )
    _refuse_repeated(series, now_ms)
    return series


def _text_families(body: bytes, content_type: Optional[str]) -> list[Metric]:
    """
    The families of a body read as the text format, whatever
    C{content_type} says.

    @raise DecodeError: when it does not parse and C{content_type} is a
        text type (or none).
    @raise UnsupportedMediaType: when it does not parse and
        C{content_type} names some other format.
    """
    try:
        return list(text_string_to_metric_families(body.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, TypeError, IndexError) as e:
        problem = str(e) or "a line that is neither a sample nor a comment"
        essence, _ = parse_media_type(content_type)
        if essence in TEXT_TYPES:
            raise DecodeError(f"pushgateway: the body is not in the text format: {problem}") from None
        raise UnsupportedMediaType(
            f"pushgateway: Content-Type {quote(essence)} is not supported, and the body "
            f"does not parse as the text format either ({problem}): send the text format, "
            f"or delimited protobuf MetricFamily ({seal.SUI_CONTENT_TYPE})"
        ) from None


def _text_series(
    parsed: list[Metric],
    grouping: Mapping[str, str],
    *,
    add: Mapping[str, str],
    remove: frozenset[str],
    now_ms: int,
    max_series: Optional[int],
) -> list[bytes]:
    if max_series is not None:
        check_series_count(
            "pushgateway", sum(len(family.samples) for family in parsed), max_series
        )
    overlay = {**grouping, **add}
    out: list[bytes] = []
    encode = wire.LabelCache()
    for family in parsed:
        bound = _BOUNDS.get(family.type)
        for sample in family.samples:
            labels = {**sample.labels, **overlay}
            for gone in remove:
                labels.pop(gone, None)
            if bound is not None and bound in sample.labels:
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


def _refuse_repeated(series: list[bytes], now_ms: int) -> None:
    """
    @raise DecodeError: naming the first series that C{series} holds twice
        at one time (its labels and timestamp the same, whatever the
        values).

    Most samples carry the arrival time, C{now_ms}: their key is cut at a
    known length, which keeps the check near 0.3 microseconds a series (a
    thirtieth of what converting one from protobuf costs, a hundredth
    from text); the others' are read back to their timestamp.
    """
    # As wire.sample writes it: an int64, a negative one in two's complement.
    # No other timestamp's field ends in these bytes: a varint's bytes but
    # its last have the high bit set, and the tag does not.
    stamp = bytes([wire.SAMPLE_TIMESTAMP]) + wire.varint(now_ms & ((1 << 64) - 1))
    cut = len(stamp) + 8  # the 64-bit value, then the timestamp
    keys = [
        one[:-cut] + stamp if one.endswith(stamp) else _without_value(one) for one in series
    ]
    if len(set(keys)) == len(keys):
        return
    seen: set[bytes] = set()
    for one, key in zip(series, keys, strict=True):
        if key in seen:
            raise DecodeError(
                f"pushgateway: {describe(TimeSeries.FromString(one))} is in the push more "
                "than once; send each series once (a Pushgateway refuses this too)"
            )
        seen.add(key)


def _without_value(series: bytes) -> bytes:
    """
    An encoded series as L{wire.series} writes it, less its sample's
    value: its labels (sorted, so the same set is the same bytes) and its
    timestamp.

    The sample is the last field, ending with the timestamp's tag and its
    varint; every byte of a varint but its last has the high bit set, and
    the tag does not, so the tag is found walking back from the end, and
    the value is the 8 bytes before it.
    """
    at = len(series) - 2
    while series[at] & 0x80:
        at -= 1
    return series[: at - 8] + series[at:]
