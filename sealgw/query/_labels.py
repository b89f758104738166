"""
Reads of a Prometheus-compatible store that keeps no tenants (an upstream
with C{tenancy: {label: NAME}}): every PromQL expression and series
selector a read carries, in its query string and in its form body, is
held to the tenant's label (L{sealgw.tenancy.enforce_query}), and no
tenant header is sent.

The parameters are parsed strictly and written out again whole, so that
the upstream reads exactly the parameters that were checked: Go's servers
read C{match[]} from the query string and the form body together, and
C{query} from whichever comes first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Optional
from urllib.parse import quote_plus, unquote_to_bytes

import attr

from sealgw.query._outcome import ReadRefused
from sealgw.query._request import ReadRequest
from sealgw.tenancy import (
    LabelEnforcementError,
    TenantError,
    TenantLabel,
    enforce_query,
    enforce_selector,
)

#: The Prometheus reads whose C{query} parameter is PromQL.
QUERY_ROUTES = frozenset({"query", "query_range", "query_exemplars"})

#: The Prometheus reads narrowed by C{match[]} series selectors.
SELECTOR_ROUTES = frozenset({"series", "labels", "label_values"})

#: The Prometheus reads that show no series and pass unchanged.
PLAIN_ROUTES = frozenset({"buildinfo", "format_query"})

#: Every other Prometheus read (C{metadata}, C{rules}, C{alerts}) answers
#: about every series in the store, and no label can narrow it: refused.

#: One C{%XX} escape, or any character but C{%}.
_PERCENT = re.compile(rb"(?:[^%]|%[0-9A-Fa-f]{2})*")

Pairs = list[tuple[bytes, bytes]]


def label_read(read: ReadRequest, label: str) -> ReadRequest:
    """
    C{read} held to its tenant by C{label}, to send without a tenant
    header.

    @raise ReadRefused: 400 for parameters that cannot be parsed, or a
        query or selector that cannot be held to the tenant; 404 for a
        read that no label can narrow.
    """
    route = read.route
    if route.api != "prometheus" or route.name not in (
        QUERY_ROUTES | SELECTOR_ROUTES | PLAIN_ROUTES
    ):
        raise ReadRefused(
            404,
            f"{route.path} is not available on this gateway: the {route.api} upstream keeps "
            "tenants apart by label, and this read would show every tenant's series",
        )
    if route.name in PLAIN_ROUTES or read.tenant is None:
        return attr.evolve(read, tenant=None)
    try:
        tenant = TenantLabel.parse(label, read.tenant)
    except TenantError as e:
        raise ReadRefused(400, f"tenant: {e}") from None
    query = parse_form(read.query.encode("ascii"))
    body = parse_form(read.body) if read.body is not None else None
    try:
        if route.name in QUERY_ROUTES:
            query = _rewrite(query, b"query", tenant, enforce_query)
            if body is not None:
                body = _rewrite(body, b"query", tenant, enforce_query)
        else:
            query = _rewrite(query, b"match[]", tenant, enforce_selector)
            if body is not None:
                body = _rewrite(body, b"match[]", tenant, enforce_selector)
            if not any(key == b"match[]" for key, _ in query + (body or [])):
                if route.name == "series":
                    raise ReadRefused(400, "series needs at least one match[] selector")
                # Without one, label names and values would come from
                # every tenant's series.
                query.append((b"match[]", ("{" + str(tenant) + "}").encode("ascii")))
    except LabelEnforcementError as e:
        raise ReadRefused(400, str(e)) from None
    return attr.evolve(
        read,
        query=encode_form(query),
        body=encode_form(body).encode("ascii") if body is not None else None,
        tenant=None,
    )


def parse_form(data: bytes) -> Pairs:
    """
    The pairs of a query string or C{application/x-www-form-urlencoded}
    body, decoded: C{&}-separated, C{+} for a space, C{%XX} escapes.

    @raise ReadRefused: 400 for a C{;} (Go refuses it as a separator, and
        a parameter read differently here and upstream would pass
        unchecked) or a C{%} that is not an escape.
    """
    pairs: Pairs = []
    for piece in data.split(b"&"):
        if not piece:
            continue
        if b";" in piece:
            raise ReadRefused(400, "a parameter holds a raw ';': percent-encode it (%3B)")
        key, _, value = piece.partition(b"=")
        pairs.append((_unescape(key), _unescape(value)))
    return pairs


def encode_form(pairs: Optional[Pairs]) -> str:
    """
    C{pairs} as a query string or form body, every byte outside letters,
    digits and C{_.-~} escaped.
    """
    return "&".join(
        f"{quote_plus(key, safe='')}={quote_plus(value, safe='')}" for key, value in pairs or ()
    )


def _unescape(text: bytes) -> bytes:
    if not _PERCENT.fullmatch(text):
        raise ReadRefused(400, "a parameter holds a '%' that is not a %XX escape")
    return unquote_to_bytes(text.replace(b"+", b" "))


def _rewrite(
    pairs: Pairs, name: bytes, tenant: TenantLabel, enforce: Callable[[str, TenantLabel], str]
) -> Pairs:
    out: Pairs = []
    for key, value in pairs:
        if key == name:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ReadRefused(400, f"{name.decode()} is not UTF-8") from None
            value = enforce(text, tenant).encode("ascii")
        out.append((key, value))
    return out
