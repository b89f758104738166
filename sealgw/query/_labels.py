"""
Reads of a Prometheus-compatible store that keeps no tenants (an upstream
with C{tenancy: {label: NAME}}): every PromQL expression and series
selector a read carries, in its query string and in its form body, is
held to the tenant's label (L{sealgw.tenancy.enforce_query}, by way of
L{sealgw.query._enforcer.LabelEnforcer}: bounds, a cache, a parser
process), and no tenant header is sent.

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

from twisted.internet.defer import Deferred

from sealgw.query._enforcer import LabelEnforcer
from sealgw.query._outcome import ReadRefused
from sealgw.query._pool import ParserUnavailable
from sealgw.query._request import ReadRequest
from sealgw.tenancy import LabelEnforcementError, TenantError, TenantLabel

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


async def label_read(
    read: ReadRequest[str], label: str, enforcer: LabelEnforcer
) -> ReadRequest[None]:
    """
    C{read} held to its tenant by C{label}, to send without a tenant
    header.

    The read's tenant is the gate's decision and always present: a read
    that names none is refused here, whoever called, rather than passed
    on unrewritten (the boundary fails closed).

    @raise ReadRefused: 403 for a read without a tenant; 400 for
        parameters that cannot be parsed, or a query or selector that
        cannot be held to the tenant (over a bound, a function not
        allowed, too long to check); 404 for a read that no label can
        narrow; 503 when no parser process can take the query.
    """
    route = read.route
    if not isinstance(read.tenant, str) or not read.tenant:
        raise ReadRefused(
            403, "the read names no tenant: a store without tenants is never read without one"
        )
    if route.api != "prometheus" or route.name not in (
        QUERY_ROUTES | SELECTOR_ROUTES | PLAIN_ROUTES
    ):
        raise ReadRefused(
            404,
            f"{route.path} is not available on this gateway: the {route.api} upstream keeps "
            "tenants apart by label, and this read would show every tenant's series",
        )
    if route.name in PLAIN_ROUTES:
        return read.without_tenant(read.query, read.body)
    try:
        tenant = TenantLabel.parse(label, read.tenant)
    except TenantError as e:
        raise ReadRefused(400, f"tenant: {e}") from None
    query = parse_form(read.query.encode("ascii"))
    body = parse_form(read.body) if read.body is not None else None
    try:
        if route.name in QUERY_ROUTES:
            query = await _rewrite(query, b"query", tenant, enforcer.query)
            if body is not None:
                body = await _rewrite(body, b"query", tenant, enforcer.query)
        else:
            query = await _rewrite(query, b"match[]", tenant, enforcer.selector)
            if body is not None:
                body = await _rewrite(body, b"match[]", tenant, enforcer.selector)
            if not any(key == b"match[]" for key, _ in query + (body or [])):
                if route.name == "series":
                    raise ReadRefused(400, "series needs at least one match[] selector")
                # Without one, label names and values would come from
                # every tenant's series.
                query.append((b"match[]", ("{" + str(tenant) + "}").encode("ascii")))
    except LabelEnforcementError as e:
        raise ReadRefused(400, str(e)) from None
    except ParserUnavailable as e:
        raise ReadRefused(
            503, f"the query cannot be checked now ({e}): try again", {"Retry-After": "1"}
        ) from None
    return read.without_tenant(
        encode_form(query),
        encode_form(body).encode("ascii") if body is not None else None,
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


async def _rewrite(
    pairs: Pairs, name: bytes, tenant: TenantLabel, enforce: Callable[[str, TenantLabel], Deferred[str]]
) -> Pairs:
    out: Pairs = []
    for key, value in pairs:
        if key == name:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ReadRefused(400, f"{name.decode()} is not UTF-8") from None
            value = (await enforce(text, tenant)).encode("ascii")
        out.append((key, value))
    return out
