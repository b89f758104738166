"""
How the gateway says no: a status, a short plain-text reason, and the
headers that tell the client what to do next.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

from twisted.web.iweb import IRequest


def answer_error(
    request: IRequest,
    status: int,
    message: str,
    headers: Optional[Mapping[str, str]] = None,
) -> bytes:
    """
    Set C{status} and C{headers} on C{request} and return the body.

    Push clients (Prometheus, Promtail, Alloy, seal's client) log the body
    they get back, so it is one line of plain text saying what was wrong.
    """
    request.setResponseCode(status)
    for name, value in (headers or {}).items():
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return (message.rstrip("\n") + "\n").encode("utf-8")


def answer_json(request: IRequest, status: int, document: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"
