"""
OTLP over HTTP for traces, metrics and logs: requests in protobuf or
OTLP/JSON, responses in the request's encoding.

OTLP/JSON differs from protobuf's canonical JSON in one way that matters
here: trace and span ids are hex, not base64.  They are converted on the
way in and out, so C{google.protobuf.json_format} does the rest.  Upstream,
sealgw always sends protobuf.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Union

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from sealgw.signals._media import parse_media_type
from sealgw.signals.errors import DecodeError, UnsupportedMediaType, quote

__all__ = [
    "JSON",
    "PROTOBUF",
    "SIGNALS",
    "ExportRequest",
    "decode",
    "encode_protobuf",
    "encode_response",
    "item_count",
    "partial_success",
    "to_json",
    "to_records",
]

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
SIGNALS = ("traces", "metrics", "logs")

ExportRequest = Union[
    ExportTraceServiceRequest, ExportMetricsServiceRequest, ExportLogsServiceRequest
]
_ExportResponse = Union[
    ExportTraceServiceResponse, ExportMetricsServiceResponse, ExportLogsServiceResponse
]

_REQUESTS: dict[str, type[ExportRequest]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
_RESPONSES: dict[str, type[_ExportResponse]] = {
    "traces": ExportTraceServiceResponse,
    "metrics": ExportMetricsServiceResponse,
    "logs": ExportLogsServiceResponse,
}
_REJECTED_FIELD = {
    "traces": "rejected_spans",
    "metrics": "rejected_data_points",
    "logs": "rejected_log_records",
}
_RECORD_LISTS = {
    "traces": "resource_spans",
    "metrics": "resource_metrics",
    "logs": "resource_logs",
}

# Id fields, in JSON and proto spelling, and their size in bytes.
_ID_BYTES = {
    "traceId": 16,
    "trace_id": 16,
    "spanId": 8,
    "span_id": 8,
    "parentSpanId": 8,
    "parent_span_id": 8,
}
_HEX = re.compile(r"[0-9a-fA-F]*")
_MESSAGE_MAX = 200
# json_format nests its reasons: "Failed to parse a field: Failed to parse b
# field: <reason>".  Rewritten as "a.b: <reason>".
_PARSE_PREFIX = re.compile(r"Failed to parse (\w+) field: ")


def _check_signal(signal: str) -> None:
    if signal not in _REQUESTS:
        raise ValueError(f"unknown OTLP signal {signal!r}; expected one of {SIGNALS}")


def _encoding(content_type: str | None) -> str:
    essence, _ = parse_media_type(content_type)
    if essence in (JSON, PROTOBUF):
        return essence
    raise UnsupportedMediaType(
        f"otlp: Content-Type {quote(essence)} is not supported (use {PROTOBUF} or {JSON})"
    )


def decode(signal: str, body: bytes, content_type: str | None) -> ExportRequest:
    """
    Decode an C{Export*ServiceRequest} for C{signal} (C{"traces"},
    C{"metrics"} or C{"logs"}) from protobuf or OTLP/JSON.  JSON field names
    may be lowerCamelCase or as in the proto, unknown fields are ignored,
    enums may be integers, 64-bit integers strings.

    @raise UnsupportedMediaType: for a content type other than
        C{application/x-protobuf} or C{application/json}.
    @raise DecodeError: if the body is not a valid request; for JSON, also
        if an id is not hex of the right length.
    """
    _check_signal(signal)
    encoding = _encoding(content_type)
    request = _REQUESTS[signal]()
    if encoding == PROTOBUF:
        try:
            request.ParseFromString(body)
        except ProtobufDecodeError as e:
            raise DecodeError(f"otlp {signal}: body is not a valid protobuf request") from e
        return request
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise DecodeError(f"otlp {signal}: body is not valid JSON") from e
    if not isinstance(doc, dict):
        raise DecodeError(f"otlp {signal}: body is not a JSON object")
    try:
        _ids_from_hex(doc, [])
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except RecursionError as e:
        raise DecodeError(f"otlp {signal}: JSON is nested too deeply") from e
    except json_format.ParseError as e:
        raise DecodeError(f"otlp {signal}: {_parse_error(str(e))}") from e
    except _BadId as e:
        raise DecodeError(f"otlp {signal}: {e.args[0]}") from None
    return request


class _BadId(Exception):
    pass


def _ids_from_hex(node: Any, path: list[str]) -> None:
    """
    Rewrite hex ids as base64, in place, wherever they sit in C{node}.
    Only field names are keys in OTLP/JSON (attribute keys are values), so
    every key named like an id field is one.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            path.append(key)
            size = _ID_BYTES.get(key)
            if size is not None and isinstance(value, str):
                node[key] = _hex_to_base64(value, size, path)
            else:
                _ids_from_hex(value, path)
            path.pop()
    elif isinstance(node, list):
        for index, value in enumerate(node):
            path.append(f"[{index}]")
            _ids_from_hex(value, path)
            path.pop()


def _hex_to_base64(value: str, size: int, path: list[str]) -> str:
    if value == "":
        return ""
    if len(value) != 2 * size or not _HEX.fullmatch(value):
        where = ".".join(path).replace(".[", "[")
        raise _BadId(f"{where}: not a {2 * size}-digit hex id")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _ids_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_BYTES and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _ids_to_hex(value)
    elif isinstance(node, list):
        for value in node:
            _ids_to_hex(value)


def _parse_error(text: str) -> str:
    fields = []
    pos = 0
    while (match := _PARSE_PREFIX.match(text, pos)) is not None:
        fields.append(match.group(1))
        pos = match.end()
    reason = text[pos:].rstrip(".")
    if len(reason) > _MESSAGE_MAX:
        reason = reason[:_MESSAGE_MAX] + "..."
    return f"{'.'.join(fields)}: {reason}" if fields else reason


def _to_dict(message: Any) -> dict[str, Any]:
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    _ids_to_hex(doc)
    return doc


def to_json(message: ExportRequest) -> bytes:
    """
    C{message} as an OTLP/JSON body, ids in hex.
    """
    return json.dumps(_to_dict(message), separators=(",", ":")).encode("utf-8")


def to_records(signal: str, message: ExportRequest) -> list[dict[str, Any]]:
    """
    One JSON-able record per resource (an element of C{resourceSpans},
    C{resourceMetrics} or C{resourceLogs}) in OTLP/JSON form, ids in hex,
    for the file upstream.
    """
    _check_signal(signal)
    return [_to_dict(item) for item in getattr(message, _RECORD_LISTS[signal])]


def item_count(signal: str, message: ExportRequest) -> int:
    """
    The spans, metric data points or log records in C{message}: what
    C{partial_success} counts.
    """
    _check_signal(signal)
    if isinstance(message, ExportTraceServiceRequest):
        return sum(
            len(scope.spans)
            for resource in message.resource_spans
            for scope in resource.scope_spans
        )
    if isinstance(message, ExportLogsServiceRequest):
        return sum(
            len(scope.log_records)
            for resource in message.resource_logs
            for scope in resource.scope_logs
        )
    total = 0
    for resource in message.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


def encode_protobuf(message: ExportRequest) -> bytes:
    """
    C{message} as a protobuf body, the form sent upstream whatever came in.
    """
    return message.SerializeToString()


def encode_response(
    signal: str, content_type: str | None, rejected: int = 0, message: str = ""
) -> tuple[bytes, str]:
    """
    The C{Export*ServiceResponse} for a request of C{content_type}, in the
    same encoding (protobuf when it was neither).  C{partial_success} is
    filled in when items were C{rejected} or there is a C{message} (which
    OTLP reads as a warning when nothing was rejected).

    @return: the body and its content type.
    """
    _check_signal(signal)
    response = _RESPONSES[signal]()
    if rejected > 0 or message:
        setattr(response.partial_success, _REJECTED_FIELD[signal], rejected)
        response.partial_success.error_message = message
    essence, _ = parse_media_type(content_type)
    if essence == JSON:
        body = json.dumps(json_format.MessageToDict(response), separators=(",", ":"))
        return body.encode("utf-8"), JSON
    return response.SerializeToString(), PROTOBUF


def partial_success(signal: str, body: bytes) -> tuple[int, str]:
    """
    The C{partial_success} of an upstream's protobuf
    C{Export*ServiceResponse}: how many items it rejected and its message.
    A body that is not such a response says nothing was rejected: the
    upstream answered 2xx, and some receivers answer with no body at all.
    """
    _check_signal(signal)
    response = _RESPONSES[signal]()
    try:
        response.ParseFromString(body)
    except ProtobufDecodeError:
        return 0, ""
    if not response.HasField("partial_success"):
        return 0, ""
    rejected = int(getattr(response.partial_success, _REJECTED_FIELD[signal]))
    message = str(response.partial_success.error_message)[:_MESSAGE_MAX * 5]
    return max(0, rejected), message
