"""
The sample limits: what one push's series may hold before they reach a
store, modelled on Mimir's per-tenant distributor limits.

A store shared by tenants (a Prometheus behind C{tenancy: {label: ...}})
pays for one tenant's bad sample with every tenant's data: a sample ten
years ahead moves its head block forward, and from then on it refuses
every ordinary sample as "out of bounds" until its storage is wiped.
Mimir and Loki judge each tenant apart and do not need this; sealgw does
it wherever it decodes series (see docs/limits.rst).

A series over a limit is dropped and the rest relayed, as Mimir's
distributor does: L{judge_encoded} and L{judge_objects} say which
series, L{SeriesRefused} says so to the client.  Only the number of
series is about the whole push (L{LimitExceeded}).  Everything here is
pure: the time comes in as an argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Optional

import attr

from sealgw.signals import _samplecheck
from sealgw.signals._samplecheck import (
    FINE,
    NAME_TOO_LONG,
    RESERVED_NAME,
    TOO_MANY_LABELS,
    TOO_NEW,
    TOO_OLD,
    VALUE_TOO_LONG,
)
from sealgw.signals.errors import PayloadError, quote
from sealgw.signals.proto.remote_pb2 import TimeSeries, WriteRequest

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: Every reason a series or a push is refused for, as the
#: C{sealgw_series_refused_total} metric's C{reason} label names it.
REASONS = {
    TOO_MANY_LABELS: "max_labels_per_series",
    RESERVED_NAME: "reserved_label_name",
    NAME_TOO_LONG: "max_label_name_length",
    VALUE_TOO_LONG: "max_label_value_length",
    TOO_NEW: "max_future",
    TOO_OLD: "max_past",
}
#: The reasons that refuse a whole push.
TOO_MANY_SERIES = "max_series_per_push"
BAD_TIMESTAMP = "invalid_timestamp"

#: The most of one series' labels quoted back to the client.
_EXAMPLE_MAX = 256


@attr.frozen
class SampleLimits:
    """
    The limits one push is judged by (an identity's, from
    C{auth.default_limits.samples} or its own C{limits.samples}).

    @ivar max_future: seconds a timestamp may be ahead of the gateway's
        clock; 0 for no limit.
    @ivar max_past: seconds it may be behind; 0 for no limit.
    """

    max_future: float = 600.0
    max_past: float = 0.0
    max_labels_per_series: int = 30
    max_label_name_length: int = 1024
    max_label_value_length: int = 2048
    max_series_per_push: int = 50_000

    def window(self, now: float) -> tuple[int, int]:
        """
        The timestamps (ms, int64) accepted at C{now} (seconds).
        """
        now_ms = int(now * 1000)
        high = now_ms + int(self.max_future * 1000) if self.max_future > 0 else INT64_MAX
        low = now_ms - int(self.max_past * 1000) if self.max_past > 0 else INT64_MIN
        return max(low, INT64_MIN), min(high, INT64_MAX)

    def bounds(self, now: float) -> tuple[int, int, int, int, int]:
        """
        The arguments of C{check_samples} after the body.
        """
        low, high = self.window(now)
        return (
            self.max_labels_per_series,
            self.max_label_name_length,
            self.max_label_value_length,
            low,
            high,
        )

    def value_of(self, reason: str) -> str:
        """
        The limit named C{reason}, as the configuration writes it.
        """
        if reason in ("max_future", "max_past"):
            return _duration(getattr(self, reason))
        if reason == "reserved_label_name":
            return "names starting with __ other than __name__"
        return str(getattr(self, reason))


class LimitExceeded(PayloadError):
    """
    A push refused as a whole by a limit: 400, with the limit's
    C{reason} for the metric and the log.
    """

    status = 400

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@attr.frozen
class SeriesRefused:
    """
    The series of one push that were dropped for a limit, told to the
    client once the others are accepted.

    @ivar what: the push's format, as messages name it (C{remote write},
        C{seal push}, C{pushgateway}).
    @ivar total: series in the push.
    @ivar by_reason: how many were dropped for each reason, in the order
        of L{REASONS}.
    @ivar example: the first one dropped and what is wrong with it.
    """

    what: str
    total: int
    by_reason: tuple[tuple[str, int], ...]
    example: str

    @property
    def dropped(self) -> int:
        return sum(count for _, count in self.by_reason)

    @property
    def message(self) -> str:
        reasons = ", ".join(f"{count} by {reason}" for reason, count in self.by_reason)
        if self.dropped == self.total:
            head = f"all {self.total} series refused, nothing relayed"
        else:
            head = (
                f"{self.dropped} of {self.total} series refused and not relayed, "
                f"the other {self.total - self.dropped} accepted"
            )
        return f"{self.what}: {head} ({reasons}); the first: {self.example}"


def check_series_count(what: str, count: int, max_series: int) -> None:
    """
    @raise LimitExceeded: when C{count} series are more than one push may
        hold, C{max_series} (C{max_series_per_push}).
    """
    if count > max_series:
        raise LimitExceeded(
            f"{what}: {count} series in one push, more than max_series_per_push "
            f"({max_series}); send smaller batches",
            TOO_MANY_SERIES,
        )


def judge_encoded(raw: bytes, limits: SampleLimits, now: float) -> Optional[tuple[int, bytes]]:
    """
    Every series of C{raw} (an uncompressed C{WriteRequest}) against
    C{limits} at C{now}, on the bytes, in C: C{(series, codes)} as
    L{sealgw.signals._samplecheck} gives them, or L{None} for a body that
    is not of the shape read there, and whenever the C reader was not
    built (the Python reading, 24 ms for 2,000 series, is slower than the
    objects, 13 ms): judge the objects instead, L{judge_objects}.
    """
    if _samplecheck.IMPLEMENTATION != "c":
        return None
    return _samplecheck.check_samples(raw, *limits.bounds(now))


def judge_objects(request: WriteRequest, limits: SampleLimits, now: float) -> tuple[int, bytes]:
    """
    L{judge_encoded} on the protobuf objects: the same codes for any
    request the byte reader judges.
    """
    bounds = limits.bounds(now)
    codes = bytes(_series_problem(series, *bounds) for series in request.timeseries)
    return len(codes), codes if any(codes) else b""


def _series_problem(
    series: TimeSeries, max_labels: int, max_name: int, max_value: int, low: int, high: int
) -> int:
    problems = set()
    if len(series.labels) > max_labels:
        problems.add(TOO_MANY_LABELS)
    for label in series.labels:
        name = label.name.encode("utf-8")
        if name[:2] == b"__" and name != b"__name__":
            problems.add(RESERVED_NAME)
        if len(name) > max_name:
            problems.add(NAME_TOO_LONG)
        if len(label.value.encode("utf-8")) > max_value:
            problems.add(VALUE_TOO_LONG)
    for when in [s.timestamp for s in series.samples] + [h.timestamp for h in series.histograms]:
        if when > high:
            problems.add(TOO_NEW)
        elif when < low:
            problems.add(TOO_OLD)
    return min(problems, default=FINE)


def refused(
    what: str,
    codes: bytes,
    series: Sequence[TimeSeries] | Sequence[bytes],
    limits: SampleLimits,
    now: float,
    where: Optional[str] = "timeseries",
) -> SeriesRefused:
    """
    What L{SeriesRefused} tells of the push whose series got C{codes}
    (one problem code a series, some not L{FINE}).

    @param series: the push's series, as objects or encoded; only the
        first refused one is read.
    @param where: how the message names the series by index (the
        request's field), or L{None} for series sealgw built, whose index
        the client never saw.
    """
    counts: dict[int, int] = {}
    for code in codes:
        if code != FINE:
            counts[code] = counts.get(code, 0) + 1
    by_reason = tuple((REASONS[code], counts[code]) for code in sorted(counts))
    first = next(index for index, code in enumerate(codes) if code != FINE)
    one = series[first]
    if isinstance(one, bytes):
        one = TimeSeries.FromString(one)
    at = f"{where}[{first}] " if where is not None else ""
    example = f"{at}{describe(one)}: {_problem(one, codes[first], limits, now)}"
    return SeriesRefused(what, len(codes), by_reason, example)


def describe(series: TimeSeries) -> str:
    """
    C{series}' labels as PromQL writes a selector, shortened.
    """
    pairs = []
    for label in series.labels[:8]:
        name = label.name if len(label.name) <= 64 else label.name[:64] + "..."
        value = label.value if len(label.value) <= 64 else label.value[:64] + "..."
        pairs.append(f"{name}={_quoted(value)}")
    if len(series.labels) > 8:
        pairs.append(f"... {len(series.labels) - 8} more")
    text = "{" + ", ".join(pairs) + "}"
    return text if len(text) <= _EXAMPLE_MAX else text[:_EXAMPLE_MAX] + "...}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _problem(series: TimeSeries, code: int, limits: SampleLimits, now: float) -> str:
    """
    What is wrong with C{series}, for the reason C{code}, naming the
    limit and its value.
    """
    reason = REASONS[code]
    limit = f"{reason} ({limits.value_of(reason)})"
    if code == TOO_MANY_LABELS:
        return f"{len(series.labels)} labels, more than {limit}"
    names = [label.name for label in series.labels]
    if code == RESERVED_NAME:
        name = next(n for n in names if n.startswith("__") and n != "__name__")
        return f"label name {quote(name)} is reserved ({limits.value_of(reason)})"
    if code == NAME_TOO_LONG:
        name = next(n for n in names if len(n.encode("utf-8")) > limits.max_label_name_length)
        return f"label name {quote(name)} is {len(name.encode('utf-8'))} bytes, longer than {limit}"
    if code == VALUE_TOO_LONG:
        label = next(
            one
            for one in series.labels
            if len(one.value.encode("utf-8")) > limits.max_label_value_length
        )
        size = len(label.value.encode("utf-8"))
        return f"the value of {quote(label.name)} is {size} bytes, longer than {limit}"
    low, high = limits.window(now)
    times = [s.timestamp for s in series.samples] + [h.timestamp for h in series.histograms]
    if code == TOO_NEW:
        when = max(times)
        return f"a sample at {_time(when)} is more than {limit} ahead of the gateway's clock"
    when = min(times)
    return f"a sample at {_time(when)} is more than {limit} behind the gateway's clock"


def _time(ms: int) -> str:
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}Z ({ms} ms)"


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "off"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def timestamp_ms(seconds: float, what: str) -> int:
    """
    A timestamp written in seconds (the text format's, as
    C{prometheus_client} parses it), as int64 milliseconds.

    @raise LimitExceeded: for C{NaN}, an infinity, or one past int64:
        never wrapped (a wrapped one lands anywhere in time).
    """
    if not math.isfinite(seconds):
        raise LimitExceeded(f"{what}: timestamp {seconds} is not a time", BAD_TIMESTAMP)
    ms = round(seconds * 1000)
    if not INT64_MIN <= ms <= INT64_MAX:
        raise LimitExceeded(
            f"{what}: timestamp {seconds * 1000:.0f} ms is outside int64", BAD_TIMESTAMP
        )
    return ms
