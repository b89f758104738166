"""
The remote-write bodies the benchmark sends: built once, written to files
that the wrk script posts as they are, over and over.

A real Prometheus must accept the same body thousands of times.  It refuses
a sample older than the newest one of its series (400, out of order), but
takes a sample equal in timestamp *and* value to the newest one without a
word.  So every series carries exactly one sample, at one timestamp shared
by all bodies, with a value that depends only on the series: after the
first push, every repeat is a harmless duplicate.  One sample per series is
also what Prometheus's own remote write usually sends (a shard's batch is
samples from many series at the same scrape), and it is the costly shape
for a gateway, which decodes labels per series.

The bodies of both sizes draw from the same series list, so the bigger one
repeats the smaller one's samples exactly and never contradicts them.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import snappy

from sealgw.signals.proto.remote_pb2 import WriteRequest

BATCH_SIZES = (500, 2000)

# Label sets shaped like an HTTP service scraped on several instances:
# 182 series per instance, as a small real target exposes.
_METHODS = ("GET", "POST", "PUT", "DELETE")
_CODES = ("200", "201", "204", "301", "400", "404", "500")
_HANDLERS = ("/api/v1/query", "/api/v1/push", "/metrics", "/health", "/login")
_LE = ("0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf")


def _label_sets() -> Iterator[dict[str, str]]:
    """
    An endless, deterministic stream of distinct label sets, one instance
    after another.
    """
    for n in itertools.count():
        target = {
            "cluster": "eu-west-1",
            "env": "production",
            "instance": f"10.0.{n // 256 % 256}.{n % 256}:8080",
            "job": "api-server",
        }
        for method, code, handler in itertools.product(_METHODS, _CODES, _HANDLERS):
            yield {
                "__name__": "http_requests_total",
                "code": code,
                "handler": handler,
                "method": method,
                **target,
            }
        for handler, le in itertools.product(_HANDLERS, _LE):
            yield {
                "__name__": "http_request_duration_seconds_bucket",
                "handler": handler,
                "le": le,
                **target,
            }
        yield {"__name__": "process_cpu_seconds_total", **target}
        yield {"__name__": "go_memstats_alloc_bytes", **target}


def build(samples: int, timestamp_ms: int) -> WriteRequest:
    """
    A write request of C{samples} series with one sample each, every label
    list sorted by name as the protocol requires.
    """
    request = WriteRequest()
    for index, labels in enumerate(itertools.islice(_label_sets(), samples)):
        series = request.timeseries.add()
        for name in sorted(labels):
            series.labels.add(name=name, value=labels[name])
        series.samples.add(value=float(index * 7 % 1000), timestamp=timestamp_ms)
    return request


def write_bodies(directory: str, sizes: tuple[int, ...] = BATCH_SIZES) -> dict[int, str]:
    """
    Write one snappy-compressed body per batch size; answer their paths.

    The timestamp is now, so the upstream's head block takes it (a sample
    far in the past would be refused as out of bounds).
    """
    timestamp_ms = int(time.time() * 1000)
    paths = {}
    for size in sizes:
        raw = build(size, timestamp_ms).SerializeToString()
        path = os.path.join(directory, f"write-{size}.snappy")
        with open(path, "wb") as f:
            f.write(snappy.compress(raw))
        paths[size] = path
    return paths
