"""
How the gateway says no: a status, a short plain-text reason, and the
headers that tell the client what to do next.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Optional

from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound


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


def early_answer(status: int, message: str) -> bytes:
    """
    A whole HTTP/1.1 answer, written straight to the connection when it is
    given before a request could be routed (a head too large or too slow,
    a body declared too large), and the connection then closed.
    """
    body = (message.rstrip("\n") + "\n").encode("utf-8")
    reason = HTTPStatus(status).phrase.encode("ascii")
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Server: sealgw\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (status, reason, len(body), body)
    )


def answer_json(request: IRequest, status: int, document: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"


def answer_routing_error(request: IRequest, error: HTTPException) -> bytes:
    """
    Answer what the router found before any route ran: no route for the
    path (404), or a route that takes other methods (405, with C{Allow}).

    Scanners and typos end here; it is the client's mistake, not ours, so
    nothing is logged beyond the access line.
    """
    if isinstance(error, NotFound):
        return answer_error(request, 404, "no route serves this path on this listener")
    if isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or ()))
        return answer_error(
            request, 405, f"method not allowed here; use {allowed}", {"Allow": allowed}
        )
    # Anything else the router raises (a redirect to the path with its
    # slashes merged, say) keeps its status and, for a redirect, its target.
    headers = {
        name: value for name, value in error.get_headers() if name.lower() != "content-type"
    }
    new_url = getattr(error, "new_url", None)
    if new_url:
        headers["Location"] = new_url
    return answer_error(request, error.code or 400, (error.name or "bad request").lower(), headers)
