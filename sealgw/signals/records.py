"""
The data a relayed body carries, as JSON-able records: what the file
upstream writes.

It works from the bytes alone, with the content type and encoding they
are relayed with, so a push stays plain data (it can be written to a spool
or handed to another process) and still becomes readable records at the
end of its way.
"""

from __future__ import annotations

from typing import Any, Optional

from sealgw.signals import loki, otlp, remote_write
from sealgw.signals.compression import decode_body
from sealgw.signals.errors import UnsupportedMediaType

#: The signals a push can carry, by the codec that reads their bodies.
SIGNALS = frozenset(
    {"remote_write", "seal", "loki", "otlp_traces", "otlp_metrics", "otlp_logs"}
)

#: Bodies were checked against the configured limits when they arrived;
#: this only bounds a body read back from elsewhere (a spool, a test).
DEFAULT_LIMIT = 1024 * 1024 * 1024


def records(
    signal: str,
    body: bytes,
    content_type: Optional[str],
    content_encoding: Optional[str],
    *,
    limit: int = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """
    Decode a relayed body into records:

      - C{remote_write} and C{seal}: one per series,
        C{{"labels", "samples"[, "exemplars", "histograms"]}};
      - C{loki}: one per stream, C{{"stream", "values"}};
      - C{otlp_*}: one per resource, in OTLP/JSON form.

    Pure and blocking: callers on the reactor thread run it in a worker.

    @raise sealgw.signals.PayloadError: when the body does not decode.
    """
    if signal in ("remote_write", "seal"):
        raw = decode_body(body, content_encoding, limit, allowed=("snappy", "identity"))
        return remote_write.to_records(remote_write.decode(raw))
    if signal == "loki":
        raw = decode_body(body, content_encoding, limit, allowed=("identity", "gzip"))
        return loki.decode(raw, content_type, limit=limit).to_records()
    if signal.startswith("otlp_") and signal in SIGNALS:
        kind = signal[len("otlp_"):]
        raw = decode_body(body, content_encoding, limit, allowed=("identity", "gzip"))
        return otlp.to_records(kind, otlp.decode(kind, raw, content_type))
    raise UnsupportedMediaType(f"no codec reads the signal {signal!r}")
