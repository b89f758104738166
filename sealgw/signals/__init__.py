"""
Push wire formats: decoding, checking and re-encoding every body sealgw
accepts, as pure functions with no I/O.

Keeping codecs apart from the web layer lets them be tested against bytes
alone, and gives every decoder one way to fail: a L{PayloadError} carrying
the HTTP status and a message fit for the client.

One module per format: L{remote_write} (Prometheus remote write 1.0),
L{remote_write2} (2.0: its references, labels and conversion to 1.0),
L{seal} (seal-proxy and sui-proxy pushes), L{loki} (Loki push, JSON and
protobuf), L{otlp} (OTLP/HTTP traces, metrics and logs), with
L{compression} for the Content-Encodings they arrive in.

A push on its way upstream is plain data, L{push.Push}; L{intake} turns a
request body and its facts into pushes, one pure function per push
route; L{records} reads a push's bytes back as JSON-able records.
"""

from sealgw.signals import (
    compression,
    intake,
    loki,
    otlp,
    records,
    remote_write,
    remote_write2,
    seal,
)
from sealgw.signals._media import parse_media_type
from sealgw.signals.compression import decode_body, gunzip, snappy_compress, snappy_decompress
from sealgw.signals.errors import (
    BadEncoding,
    DecodeError,
    PayloadError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from sealgw.signals.loki import LokiPush
from sealgw.signals.proto.metrics_pb2 import MetricFamily
from sealgw.signals.proto.remote_pb2 import TimeSeries, WriteRequest
from sealgw.signals.push import Push, PushFormatError

__all__ = [
    "BadEncoding",
    "DecodeError",
    "LokiPush",
    "MetricFamily",
    "PayloadError",
    "PayloadTooLarge",
    "Push",
    "PushFormatError",
    "TimeSeries",
    "UnsupportedMediaType",
    "WriteRequest",
    "compression",
    "decode_body",
    "gunzip",
    "intake",
    "loki",
    "otlp",
    "parse_media_type",
    "records",
    "remote_write",
    "remote_write2",
    "seal",
    "snappy_compress",
    "snappy_decompress",
]
