"""
Loki push (C{POST /loki/api/v1/push}) in both of its encodings, JSON and
snappy-compressed protobuf, read into one form that can be checked,
recorded and re-encoded.

Stream labels in the protobuf form are a label-set string
(C{{job="x", level="info"}}); L{parse_label_set} and L{format_label_set}
read and write it with Go's string-literal rules, which Loki uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

import attr
from google.protobuf.message import DecodeError as ProtobufDecodeError

from sealgw.signals._labels import is_utf8_text, valid_label_name
from sealgw.signals._media import parse_media_type
from sealgw.signals.compression import snappy_compress, snappy_decompress
from sealgw.signals.errors import DecodeError, UnsupportedMediaType, quote
from sealgw.signals.proto.logproto_pb2 import (
    EntryAdapter,
    PushRequest,
    StreamAdapter,
)

__all__ = [
    "DEFAULT_LIMIT",
    "Entry",
    "LokiPush",
    "Stream",
    "decode",
    "format_label_set",
    "parse_label_set",
]

# The decompressed-size cap when the caller gives none (sealgw's default
# limits.max_decompressed).
DEFAULT_LIMIT = 50 * 1024 * 1024

_NS = 1_000_000_000
_INT64_MAX = 2**63 - 1
_DECIMAL = re.compile(r"[0-9]{1,19}")
_JSON_TYPES = ("application/json",)
_PROTOBUF_TYPES = ("", "application/x-protobuf", "application/protobuf")


class Entry(NamedTuple):
    """
    One log line.

    @ivar metadata: structured metadata as C{(name, value)} pairs.
    """

    timestamp_ns: int
    line: str
    metadata: tuple[tuple[str, str], ...] = ()


@attr.frozen
class Stream:
    labels: Mapping[str, str]
    entries: tuple[Entry, ...]


@attr.frozen
class LokiPush:
    """
    A decoded, valid push: every stream has labels with valid names, every
    timestamp fits in int64 nanoseconds.
    """

    streams: tuple[Stream, ...]

    @property
    def entry_count(self) -> int:
        return sum(len(stream.entries) for stream in self.streams)

    def to_records(self) -> list[dict[str, Any]]:
        """
        One JSON-able record per stream, in Loki's own JSON push shape::

            {"stream": {"job": "x"}, "values": [["<ns>", "line", {"k": "v"}], ...]}
        """
        return [
            {
                "stream": dict(stream.labels),
                "values": [
                    [str(entry.timestamp_ns), entry.line, dict(entry.metadata)]
                    if entry.metadata
                    else [str(entry.timestamp_ns), entry.line]
                    for entry in stream.entries
                ],
            }
            for stream in self.streams
        ]

    def to_protobuf(self) -> bytes:
        """
        The push as a snappy-compressed C{logproto.PushRequest}, the body
        Loki takes with C{Content-Type: application/x-protobuf}.
        """
        request = PushRequest()
        for stream in self.streams:
            adapter = request.streams.add(labels=format_label_set(stream.labels))
            for entry in stream.entries:
                one = adapter.entries.add(line=entry.line.encode("utf-8"))
                one.timestamp.seconds, one.timestamp.nanos = divmod(entry.timestamp_ns, _NS)
                for name, value in entry.metadata:
                    one.structured_metadata.add(name=name, value=value)
        return snappy_compress(request.SerializeToString())


def decode(body: bytes, content_type: Optional[str], *, limit: int = DEFAULT_LIMIT) -> LokiPush:
    """
    Decode and check a push body (after any C{Content-Encoding}, which for
    Loki is gzip on JSON at most).

    @param content_type: C{application/json} for JSON; C{application/x-protobuf}
        or none (as Loki) for protobuf, whose body is a snappy block.
    @param limit: the largest snappy-decompressed protobuf body accepted.
    @raise UnsupportedMediaType: for any other content type.
    @raise DecodeError: naming the stream and entry that is wrong.
    @raise PayloadTooLarge: if the protobuf body decompresses beyond C{limit}.
    """
    essence, _ = parse_media_type(content_type)
    if essence in _JSON_TYPES:
        return _decode_json(body)
    if essence in _PROTOBUF_TYPES:
        return _decode_protobuf(snappy_decompress(body, limit))
    raise UnsupportedMediaType(
        f"loki push: Content-Type {quote(essence)} is not supported"
        " (use application/json or application/x-protobuf)"
    )


# --- JSON -------------------------------------------------------------------


def _decode_json(body: bytes) -> LokiPush:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise DecodeError("loki push: body is not valid JSON") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("streams"), list):
        raise DecodeError('loki push: body must be an object with a "streams" array')
    streams = []
    for index, item in enumerate(doc["streams"]):
        where = f"loki push: streams[{index}]"
        if not isinstance(item, dict):
            raise DecodeError(f"{where}: not an object")
        labels = _string_map(item.get("stream"), f"{where}.stream")
        _check_labels(labels, f"{where}.stream")
        values = item.get("values", [])
        if not isinstance(values, list):
            raise DecodeError(f"{where}.values: not an array")
        entries = tuple(
            _json_entry(value, f"{where}.values[{j}]") for j, value in enumerate(values)
        )
        streams.append(Stream(labels=labels, entries=entries))
    return LokiPush(streams=tuple(streams))


def _json_entry(value: Any, where: str) -> Entry:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise DecodeError(f"{where}: must be [timestamp, line] or [timestamp, line, metadata]")
    timestamp, line = value[0], value[1]
    if not isinstance(timestamp, str) or not _DECIMAL.fullmatch(timestamp):
        raise DecodeError(f"{where}: timestamp must be a string of decimal nanoseconds")
    ns = int(timestamp)
    if ns > _INT64_MAX:
        raise DecodeError(f"{where}: timestamp is out of range")
    if not isinstance(line, str) or not is_utf8_text(line):
        raise DecodeError(f"{where}: line must be a string of valid UTF-8")
    if len(value) == 2 or value[2] is None:
        return Entry(ns, line)
    metadata = _string_map(value[2], f"{where}: structured metadata")
    return Entry(ns, line, tuple(metadata.items()))


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(v, str) and is_utf8_text(v) and is_utf8_text(k) for k, v in value.items()
    ):
        raise DecodeError(f"{where}: must be an object of strings")
    return value


def _check_labels(labels: Mapping[str, str], where: str) -> None:
    if not labels:
        raise DecodeError(f"{where}: a stream needs at least one label")
    for name in labels:
        if not valid_label_name(name):
            raise DecodeError(f"{where}: invalid label name {quote(name)}")


# --- protobuf ---------------------------------------------------------------


def _decode_protobuf(raw: bytes) -> LokiPush:
    request = PushRequest()
    try:
        request.ParseFromString(raw)
    except ProtobufDecodeError as e:
        raise DecodeError("loki push: body is not a valid PushRequest protobuf") from e
    return LokiPush(
        streams=tuple(
            _protobuf_stream(stream, f"loki push: streams[{index}]")
            for index, stream in enumerate(request.streams)
        )
    )


def _protobuf_stream(stream: StreamAdapter, where: str) -> Stream:
    try:
        labels = parse_label_set(stream.labels)
    except DecodeError as e:
        raise DecodeError(f"{where}: labels: {e.message}") from None
    _check_labels(labels, f"{where}: labels")
    return Stream(
        labels=labels,
        entries=tuple(
            _protobuf_entry(entry, f"{where}.entries[{j}]")
            for j, entry in enumerate(stream.entries)
        ),
    )


def _protobuf_entry(entry: EntryAdapter, where: str) -> Entry:
    seconds, nanos = entry.timestamp.seconds, entry.timestamp.nanos
    ns = seconds * _NS + nanos
    if not 0 <= nanos < _NS or not 0 <= ns <= _INT64_MAX:
        raise DecodeError(f"{where}: timestamp is out of range")
    # A line that is not UTF-8 is kept, with U+FFFD for the bad bytes,
    # rather than refusing every other line of the push.
    line = entry.line.decode("utf-8", "replace")
    metadata = tuple((pair.name, pair.value) for pair in entry.structured_metadata)
    return Entry(ns, line, metadata)


# --- label sets ---------------------------------------------------------------

_SPACE = re.compile(r"\s*")
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PLAIN_STRING = re.compile(r'"([^"\\\n]*)"')
_SIMPLE_ESCAPES = {
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
    "\\": b"\\",
    '"': b'"',
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def parse_label_set(text: str) -> dict[str, str]:
    """
    Read a label set such as C{{job="x", level="info"}}.  Values are Go
    string literals: double-quoted with Go's escapes, or back-quoted raw.
    A trailing comma is allowed; repeated names are not.

    @raise DecodeError: saying what is wrong and at which character.
    """
    labels: dict[str, str] = {}
    pos = _skip(text, 0)
    pos = _expect(text, pos, "{")
    pos = _skip(text, pos)
    while not text.startswith("}", pos):
        match = _NAME.match(text, pos)
        if match is None:
            raise DecodeError(f"expected a label name {_at(text, pos)}")
        name = match.group()
        pos = _expect(text, _skip(text, match.end()), "=")
        value, pos = _string(text, _skip(text, pos))
        if name in labels:
            raise DecodeError(f"label {quote(name)} appears twice")
        labels[name] = value
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif not text.startswith("}", pos):
            raise DecodeError(f"expected ',' or '}}' {_at(text, pos)}")
    pos = _skip(text, pos + 1)
    if pos != len(text):
        raise DecodeError(f"unexpected text after '}}' at character {pos}")
    return labels


def _at(text: str, pos: int) -> str:
    return "at the end" if pos >= len(text) else f"at character {pos}"


def _skip(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    assert match is not None  # \s* always matches
    return match.end()


def _expect(text: str, pos: int, char: str) -> int:
    if not text.startswith(char, pos):
        raise DecodeError(f"expected {char!r} {_at(text, pos)}")
    return pos + 1


def _string(text: str, pos: int) -> tuple[str, int]:
    plain = _PLAIN_STRING.match(text, pos)
    if plain is not None:
        return plain.group(1), plain.end()
    if text.startswith("`", pos):
        end = text.find("`", pos + 1)
        if end < 0:
            raise DecodeError(f"unterminated string at character {pos}")
        # Go drops carriage returns from raw strings.
        return text[pos + 1 : end].replace("\r", ""), end + 1
    if not text.startswith('"', pos):
        raise DecodeError(f"expected a quoted value {_at(text, pos)}")
    return _unescape(text, pos)


def _unescape(text: str, start: int) -> tuple[str, int]:
    # Escapes such as \xff write bytes, which must add up to UTF-8.
    out = bytearray()
    pos = start + 1
    while True:
        if pos >= len(text) or text[pos] == "\n":
            raise DecodeError(f"unterminated string at character {start}")
        char = text[pos]
        if char == '"':
            break
        if char != "\\":
            out += char.encode("utf-8", "surrogatepass")
            pos += 1
            continue
        kind = text[pos + 1 : pos + 2]
        if kind in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[kind]
            pos += 2
        elif kind in _HEX_ESCAPES:
            digits = text[pos + 2 : pos + 2 + _HEX_ESCAPES[kind]]
            if len(digits) != _HEX_ESCAPES[kind] or not _is_hex(digits):
                raise DecodeError(f"bad \\{kind} escape at character {pos}")
            code = int(digits, 16)
            if kind == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise DecodeError(f"escape at character {pos} is not a valid code point")
            else:
                out += chr(code).encode("utf-8")
            pos += 2 + len(digits)
        elif kind in "01234567" and kind:
            digits = text[pos + 1 : pos + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise DecodeError(f"bad octal escape at character {pos}")
            out.append(int(digits, 8))
            pos += 4
        else:
            raise DecodeError(f"unknown escape at character {pos}")
    try:
        return out.decode("utf-8"), pos + 1
    except UnicodeDecodeError:
        raise DecodeError(f"string at character {start} is not valid UTF-8") from None


def _is_hex(digits: str) -> bool:
    return all(d in "0123456789abcdefABCDEF" for d in digits)


def _quote_value(value: str) -> str:
    out = ['"']
    for char in value:
        if char == "\\" or char == '"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char < " " or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def format_label_set(labels: Mapping[str, str]) -> str:
    """
    Write C{labels} as a label set, names sorted: C{{job="x", level="info"}}.
    L{parse_label_set} reads it back unchanged.
    """
    return "{" + ", ".join(f"{name}={_quote_value(labels[name])}" for name in sorted(labels)) + "}"
