"""
Push wire formats: decoding, checking and re-encoding every body sealgw
accepts, as pure functions with no I/O.

Keeping codecs apart from the web layer lets them be tested against bytes
alone, and gives every decoder one way to fail: a L{PayloadError} carrying
the HTTP status and a message fit for the client.

One module per format: L{remote_write} (Prometheus remote write 1.0),
L{seal} (seal-proxy and sui-proxy pushes), L{loki} (Loki push, JSON and
protobuf), L{otlp} (OTLP/HTTP traces, metrics and logs), with
L{compression} for the Content-Encodings they arrive in.
"""

from sealgw.signals import compression, loki, otlp, remote_write, seal
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

__all__ = [
    "BadEncoding",
    "DecodeError",
    "LokiPush",
    "MetricFamily",
    "PayloadError",
    "PayloadTooLarge",
    "TimeSeries",
    "UnsupportedMediaType",
    "WriteRequest",
    "compression",
    "decode_body",
    "gunzip",
    "loki",
    "otlp",
    "parse_media_type",
    "remote_write",
    "seal",
    "snappy_compress",
    "snappy_decompress",
]
