"""
Which headers a read carries to the upstream, and which of the upstream's
come back: short allow-lists both ways, so that what the client sent to
the gateway (its C{Authorization}, cookies, a tenant header, hop-by-hop
headers) never reaches the upstream, and what the upstream says about
itself (its challenges, cookies, framing) never reaches the client.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

#: Request headers passed on to the upstream: content negotiation, the
#: results-cache switch Mimir and Loki honour, the query-statistics tags
#: and Grafana's dashboard and panel ids they log, Loki's response
#: format flags, and trace context.  Everything else is dropped.
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        b"accept",
        b"accept-encoding",
        b"cache-control",
        b"x-query-tags",
        b"x-loki-response-encoding-flags",
        b"x-dashboard-uid",
        b"x-panel-id",
        b"x-grafana-org-id",
        b"traceparent",
        b"tracestate",
    }
)

#: Response headers passed back to the client (the last value of each).
#: The body streams as the upstream encoded it, so its type comes with it.
PASSED_RESPONSE_HEADERS = (b"content-type", b"retry-after")

#: Set on every read answer: it holds one tenant's data, chosen by who
#: asked, so no cache between the gateway and the client may keep it.
CACHE_CONTROL = b"no-store"


def _connection_tokens(headers: Headers) -> frozenset[bytes]:
    """
    The headers C{Connection} names: hop-by-hop for this one connection
    (RFC 9110 section 7.6.1), so never passed on whatever their name.
    """
    tokens = set()
    for value in headers.getRawHeaders(b"connection", []):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return frozenset(tokens)


def forwarded_headers(headers: Headers) -> dict[str, str]:
    """
    The client's headers to send upstream: those in
    L{FORWARDED_REQUEST_HEADERS} that C{Connection} does not name, with
    ASCII values (a header sent several times is joined with commas, as
    HTTP allows for these).
    """
    hop_by_hop = _connection_tokens(headers)
    out: dict[str, str] = {}
    for name, values in headers.getAllRawHeaders():
        lower = name.lower()
        if lower not in FORWARDED_REQUEST_HEADERS or lower in hop_by_hop:
            continue
        try:
            out[lower.decode("ascii")] = b", ".join(values).decode("ascii")
        except UnicodeDecodeError:
            continue
    return out


def _list_values(headers: Headers, name: bytes) -> list[bytes]:
    """
    The elements of the comma-separated list header C{name}, from all its
    lines, empty ones left out.
    """
    out = []
    for value in headers.getRawHeaders(name, []):
        for element in value.split(b","):
            element = element.strip()
            if element:
                out.append(element)
    return out


def answer_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """
    The upstream's response headers to answer the client with: those in
    L{PASSED_RESPONSE_HEADERS} (the last value of each); its
    C{Content-Encoding}, every coding in the order applied, since the body
    passes as encoded (none when it named none); of its C{Vary}, the
    request headers the gateway passes on (C{Accept-Encoding} above all:
    what the upstream chose by decides what the body is), as only those
    could have shaped the answer; and C{Cache-Control: no-store}.
    """
    out = []
    for name in PASSED_RESPONSE_HEADERS:
        values = headers.getRawHeaders(name)
        if values:
            out.append((name, values[-1]))
    codings = _list_values(headers, b"content-encoding")
    if codings:
        out.append((b"content-encoding", b", ".join(codings)))
    varies = [v for v in _list_values(headers, b"vary") if v.lower() in FORWARDED_REQUEST_HEADERS]
    if varies:
        out.append((b"vary", b", ".join(varies)))
    out.append((b"cache-control", CACHE_CONTROL))
    return out
