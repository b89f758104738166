"""
Remote write 2.0 requests built for tests as the specification says a
sender builds them: every string once in the symbols table (the empty
string first), series referring to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

from sealgw.signals import snappy_compress
from sealgw.signals.proto import remote_v2_pb2 as v2

#: The request headers of a 2.0 push, as Prometheus 3 sends them.
RW2_HEADERS = {
    "Content-Type": ["application/x-protobuf;proto=io.prometheus.write.v2.Request"],
    "Content-Encoding": ["snappy"],
    "X-Prometheus-Remote-Write-Version": ["2.0.0"],
}


class Symbols:
    """
    A request's symbols table, each string added once.
    """

    def __init__(self, request: v2.Request) -> None:
        self.request = request
        self.index: dict[str, int] = {}
        self("")

    def __call__(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            self.request.symbols.append(text)
            found = self.index[text] = len(self.request.symbols) - 1
        return found

    def refs(self, labels: Mapping[str, str] | Sequence[tuple[str, str]]) -> list[int]:
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        return [ref for name, value in pairs for ref in (self(name), self(value))]


def request_v2(
    series: Sequence[tuple[Mapping[str, str] | Sequence[tuple[str, str]], Sequence[tuple[float, int]]]],
    *,
    histograms: Sequence[tuple[Mapping[str, str], int]] = (),
    exemplar: Optional[tuple[Mapping[str, str], float, int]] = None,
    metadata: Optional[tuple[int, str, str]] = None,
) -> v2.Request:
    """
    A 2.0 request of C{series} (labels, C{[(value, timestamp_ms)]}), then
    one native histogram series per C{histograms} entry (labels,
    timestamp: a count of 3 in buckets 0 and 1 of schema 0); the first
    series gets C{exemplar} (labels, value, timestamp) and C{metadata}
    (type, help, unit) if given.
    """
    request = v2.Request()
    symbols = Symbols(request)
    for labels, samples in series:
        one = request.timeseries.add(labels_refs=symbols.refs(labels))
        for value, timestamp in samples:
            one.samples.add(value=value, timestamp=timestamp)
    for labels, timestamp in histograms:
        one = request.timeseries.add(labels_refs=symbols.refs(labels))
        one.histograms.append(native_histogram(timestamp))
    if exemplar is not None:
        labels, value, timestamp = exemplar
        request.timeseries[0].exemplars.add(
            labels_refs=symbols.refs(labels), value=value, timestamp=timestamp
        )
    if metadata is not None:
        kind, help_text, unit = metadata
        request.timeseries[0].metadata.type = kind  # type: ignore[assignment]
        request.timeseries[0].metadata.help_ref = symbols(help_text)
        request.timeseries[0].metadata.unit_ref = symbols(unit) if unit else 0
    return request


def native_histogram(timestamp: int) -> v2.Histogram:
    """
    An integer native histogram: 3 observations summing to 4.5, one in
    bucket 0 and two in bucket 1 of schema 0 (the buckets (0.5, 1] and
    (1, 2]).
    """
    return v2.Histogram(
        count_int=3,
        sum=4.5,
        schema=0,
        zero_threshold=1e-128,
        zero_count_int=0,
        positive_spans=[v2.BucketSpan(offset=0, length=2)],
        positive_deltas=[1, 1],
        timestamp=timestamp,
    )


def body_v2(request: v2.Request) -> bytes:
    """
    C{request} as a 2.0 push body.
    """
    return snappy_compress(request.SerializeToString())
