"""
The PromQL parser process: label enforcement (L{enforce_query},
L{enforce_selector}) run in a child process of the gateway, so that a
query's parsing, which holds the GIL, never stalls the gateway's reactor
(L{sealgw.query._pool} runs these processes).

It speaks frames on its standard input and output: four bytes of length
(big-endian), then that many bytes of JSON.  It says C{{"ready": true}}
once it can parse, then answers each request in turn; it ends when its
standard input closes.  It keeps no state between requests.

    request:  {"kind": "query" | "selector", "text": ..., "label": ...,
               "tenants": [...], "bounds": {...}}
    answer:   {"rewritten": ...} or {"refused": "why"}
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Mapping
from typing import IO, Any, Optional

import attr

from sealgw.tenancy._bounds import PromQLBounds
from sealgw.tenancy._errors import LabelEnforcementError
from sealgw.tenancy._promql import TenantLabel, enforce_query, enforce_selector

#: The largest frame either side takes: a query is at most some hundreds
#: of KiB (its bound), and written back a few times that.
MAX_FRAME = 64 * 1024 * 1024


def encode_frame(message: Mapping[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return len(body).to_bytes(4, "big") + body


def request(kind: str, text: str, tenant: TenantLabel, bounds: PromQLBounds) -> dict[str, Any]:
    """
    The request for C{text} held to C{tenant}, as a message (a frame once
    encoded).
    """
    return {
        "kind": kind,
        "text": text,
        "label": tenant.label,
        "tenants": list(tenant.tenants),
        "bounds": attr.asdict(bounds),
    }


def answer(message: Mapping[str, Any]) -> dict[str, Any]:
    """
    What the child answers to one request (a decoded frame).
    """
    try:
        tenant = TenantLabel(message["label"], tuple(message["tenants"]))
        bounds = PromQLBounds(**message["bounds"])
        enforce = enforce_query if message["kind"] == "query" else enforce_selector
        return {"rewritten": enforce(message["text"], tenant, bounds)}
    except LabelEnforcementError as e:
        return {"refused": str(e)}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - the Rust parser's panics are BaseException
        # What the parser could not take is the query's doing; the gateway
        # logs the kind of failure, the client is told its query failed.
        return {"refused": f"the query cannot be parsed ({type(e).__name__})"}


def _read_exactly(stream: IO[bytes], size: int) -> Optional[bytes]:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """
    Answer requests until C{stdin} ends.
    """
    stdout.write(encode_frame({"ready": True}))
    stdout.flush()
    while True:
        head = _read_exactly(stdin, 4)
        if head is None:
            return
        size = int.from_bytes(head, "big")
        if size > MAX_FRAME:
            return
        body = _read_exactly(stdin, size)
        if body is None:
            return
        stdout.write(encode_frame(answer(json.loads(body))))
        stdout.flush()


def main() -> None:
    # Ctrl-C reaches the whole process group: the gateway decides when
    # this process ends, by closing its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Nothing else may write to the frames' stream.
    sys.stdout = sys.stderr
    serve(stdin, stdout)


if __name__ == "__main__":
    main()
