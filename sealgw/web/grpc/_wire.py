"""
gRPC's own layer on top of HTTP/2, as pure functions: the length-prefixed
message, the status codes and what an HTTP status means as one, and the
trailers that carry them (C{grpc-status}, C{grpc-message}, the rich
status in C{grpc-status-details-bin} and the OTLP exporters'
C{google.rpc.retryinfo-bin}).
"""

from __future__ import annotations

import base64
import enum
import math
from typing import Optional
from urllib.parse import quote

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from sealgw.signals.errors import DecodeError

#: A message's prefix: one byte saying whether it is compressed, four the
#: length, big-endian.
PREFIX = 5

#: The content type of every gRPC request and answer (C{+proto} and other
#: suffixes name the message codec).
CONTENT_TYPE = b"application/grpc"

#: What C{grpc-encoding} may name: gRPC's own gzip and deflate, and the
#: zstd the Collector's C{otlp} exporter offers (all the same formats as
#: HTTP's, undone by L{sealgw.signals.compression.decode_body}).
ENCODINGS = ("identity", "gzip", "deflate", "zstd")


class Code(enum.IntEnum):
    """
    The gRPC status codes sealgw answers with.
    """

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


def code_for(status: int) -> Code:
    """
    The gRPC code for a refusal the push path expressed as an HTTP
    status, chosen as the OTLP specification reads them: the client
    retries C{UNAVAILABLE} and C{DEADLINE_EXCEEDED} always, and
    C{RESOURCE_EXHAUSTED} only when a C{RetryInfo} comes with it (see
    L{trailers}), and nothing else.
    """
    if status in _CODES:
        return _CODES[status]
    if 400 <= status < 500:
        return Code.INVALID_ARGUMENT
    if status >= 500:
        return Code.UNAVAILABLE
    return Code.UNKNOWN


_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    # A route that is not enabled: the method is not served here.
    404: Code.UNIMPLEMENTED,
    408: Code.DEADLINE_EXCEEDED,
    411: Code.INVALID_ARGUMENT,
    # Too large to take, ever: without RetryInfo, not retried.
    413: Code.RESOURCE_EXHAUSTED,
    415: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    500: Code.INTERNAL,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}

#: Seconds a client is told to wait after a 429 that named no time.
DEFAULT_RETRY_DELAY = 1


def retry_delay(status: int, retry_after: Optional[int]) -> Optional[int]:
    """
    The delay to send as C{RetryInfo}: the C{Retry-After} of the refusal
    where it had one and the client may retry, and a second for a rate
    limit that named none (without RetryInfo, an OTLP exporter drops data
    refused with C{RESOURCE_EXHAUSTED}).
    """
    code = code_for(status)
    if code not in (Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
        return None
    if status == 413:
        return None
    if retry_after is not None:
        return max(1, retry_after)
    if status == 429:
        return DEFAULT_RETRY_DELAY
    return None


def frame(message: bytes) -> bytes:
    """
    C{message} as one uncompressed gRPC message.
    """
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe(body: bytes, encoding: Optional[str]) -> tuple[bytes, Optional[str]]:
    """
    The one message of a unary call's body, and the encoding it is
    compressed with (L{None} for none), for L{decode_body} to undo.

    @param encoding: the call's C{grpc-encoding}, if sent.
    @raise DecodeError: for a body that is not exactly one message, or a
        compressed message without an encoding sealgw reads.
    """
    if len(body) < PREFIX:
        raise DecodeError("grpc: the request holds no message")
    flag = body[0]
    length = int.from_bytes(body[1:PREFIX], "big")
    if flag not in (0, 1):
        raise DecodeError(f"grpc: unknown message flag {flag}")
    if len(body) - PREFIX < length:
        raise DecodeError("grpc: the request ends inside its message")
    if len(body) - PREFIX > length:
        raise DecodeError("grpc: a unary call carries one message, this one more")
    message = body[PREFIX:] if length == len(body) - PREFIX else body[PREFIX : PREFIX + length]
    if flag == 0:
        return message, None
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        raise DecodeError("grpc: a compressed message without a grpc-encoding")
    if name not in ENCODINGS:
        raise DecodeError(
            f"grpc: grpc-encoding {name!r} is not supported (use one of {', '.join(ENCODINGS)})"
        )
    return message, name


def trailers(
    code: Code, message: str, retry_after: Optional[int] = None
) -> list[tuple[bytes, bytes]]:
    """
    The trailers that end a call: its code, the message percent-encoded as
    gRPC asks, and, with a delay, a C{RetryInfo} both in the rich status
    (what the Collector and Go clients read) and on its own (what the
    OpenTelemetry Python exporter reads).
    """
    fields = [(b"grpc-status", str(int(code)).encode("ascii"))]
    if message:
        fields.append((b"grpc-message", _percent_encode(message)))
    if retry_after is not None:
        info = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=int(math.ceil(retry_after)))
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=int(code), message=message, details=[detail])
        fields.append((b"grpc-status-details-bin", _binary(status.SerializeToString())))
        fields.append((b"google.rpc.retryinfo-bin", _binary(info.SerializeToString())))
    return fields


def _binary(value: bytes) -> bytes:
    # Binary metadata goes base64 without padding.
    return base64.b64encode(value).rstrip(b"=")


def _percent_encode(message: str) -> bytes:
    # Printable ASCII other than "%" goes as it is; the rest as %XX of
    # its UTF-8 bytes.  Kept short: it travels in a header.
    safe = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
    return quote(message[:1024], safe=safe).encode("ascii")
