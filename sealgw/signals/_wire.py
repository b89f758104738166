"""
The few pieces of the protobuf wire format that remote-write series are
made of, written as bytes.

Series sealgw builds itself (from seal and Pushgateway pushes) and labels
it sets on relayed ones are written here directly: building a protobuf
object per label and per series, only to serialise them at once, costs
several times what the bytes do.  What comes out is what
C{remote_pb2.TimeSeries} reads (fields in schema order, lengths as
varints); only the empty-value rule of proto3 is not applied, which any
reader accepts.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Mapping

TIMESERIES = 0x0A  # WriteRequest.timeseries: field 1, length-delimited
LABELS = 0x0A  # TimeSeries.labels: field 1, length-delimited
SAMPLES = 0x12  # TimeSeries.samples: field 2, length-delimited
LABEL_NAME = 0x0A  # Label.name: field 1
LABEL_VALUE = 0x12  # Label.value: field 2
SAMPLE_VALUE = 0x09  # Sample.value: field 1, 64-bit
SAMPLE_TIMESTAMP = 0x10  # Sample.timestamp: field 2, varint

_DOUBLE = struct.Struct("<d")
_INT64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    """
    C{value} (0 or more) as a protobuf varint.
    """
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """
    A length-delimited field: its tag, C{payload}'s length, C{payload}.
    """
    return bytes([tag]) + varint(len(payload)) + payload


def label(name: bytes, value: bytes) -> bytes:
    """
    One whole C{TimeSeries.labels} field.
    """
    return field(
        LABELS, field(LABEL_NAME, name) + field(LABEL_VALUE, value)
    )


def sample(value: float, timestamp_ms: int) -> bytes:
    """
    One whole C{TimeSeries.samples} field.
    """
    return field(SAMPLES, _VALUE + _DOUBLE.pack(value) + _timestamp(timestamp_ms))


_VALUE = bytes([SAMPLE_VALUE])


@functools.lru_cache(maxsize=256)
def _timestamp(ms: int) -> bytes:
    # The samples of one push mostly share their timestamp.  An int64: a
    # negative one is written as its two's complement, as protobuf does.
    return bytes([SAMPLE_TIMESTAMP]) + varint(ms & _INT64)


def series(
    labels: Mapping[str, str], value: float, timestamp_ms: int, encode: LabelCache
) -> bytes:
    """
    One encoded C{TimeSeries}: C{labels} sorted by name (those with an
    empty value left out, as Prometheus reads them), and one sample.
    """
    return b"".join(
        [encode(name, labels[name]) for name in sorted(labels) if labels[name]]
    ) + sample(value, timestamp_ms)


def write_request(series: Iterable[bytes]) -> bytes:
    """
    A C{WriteRequest} of encoded C{TimeSeries} messages, in order.
    """
    return b"".join(framed(series))


def framed(series: Iterable[bytes]) -> list[bytes]:
    """
    Each encoded C{TimeSeries} as a whole C{WriteRequest.timeseries}
    field: joined, any run of them is a C{WriteRequest}, so a push is
    framed once however it is judged and batched.
    """
    return [bytes([TIMESERIES]) + varint(len(one)) + one for one in series]


class LabelCache:
    """
    Encoded labels of one request, each written once: the series of a
    push share most of their labels (the client's, the node's, the
    metric's name).
    """

    def __init__(self) -> None:
        self._encoded: dict[tuple[str, str], bytes] = {}

    def __call__(self, name: str, value: str) -> bytes:
        key = (name, value)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = self._encoded[key] = label(name.encode("utf-8"), value.encode("utf-8"))
        return encoded
