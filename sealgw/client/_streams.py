"""
Log records as Loki's JSON push body: what one record becomes (an entry
of a stream), and a batch of entries as the body.  Pure: no threads, no
reactor.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, NamedTuple, Optional

#: Loki's default C{max_line_size}: a longer line makes Loki refuse the
#: whole batch, so lines are cut to it here.
MAX_LINE_BYTES = 256 * 1024

#: What every LogRecord has; anything else on a record came from `extra`.
RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


class Entry(NamedTuple):
    """
    One record, ready for a batch: its stream's labels, its time in
    nanoseconds, its line and its structured metadata.
    """

    labels: tuple[tuple[str, str], ...]
    ns: int
    line: str
    metadata: Optional[dict[str, str]]


def metadata_name(name: str) -> str:
    """
    C{name} as a valid Loki structured-metadata name: characters other
    than letters, digits and C{_} become C{_}, and a leading digit gets a
    C{_} before it.
    """
    cleaned = _NOT_NAME.sub("_", name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def loki_body(entries: list[Entry]) -> bytes:
    """
    Loki's JSON push body for C{entries}, one stream per label set, in
    arrival order.  Text that cannot be UTF-8 (lone surrogates) is
    replaced, rather than making the gateway refuse the batch.
    """
    streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    for entry in entries:
        value: list[Any] = [str(entry.ns), entry.line]
        if entry.metadata:
            value.append(entry.metadata)
        streams.setdefault(entry.labels, []).append(value)
    doc = {"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
