"""
A read as the proxy sends it upstream, and the checks on what the client
sent besides its path: the query string and a POST form body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Generic, Optional, TypeVar, cast

import attr

from sealgw.query._outcome import ReadRefused
from sealgw.query._routes import ReadRoute

FORM = "application/x-www-form-urlencoded"

#: A query string passes as it came, so it must be one the upstream reads
#: as the gateway does: visible ASCII, no fragment.
_QUERY = re.compile(r"[\x21-\x7e]*")

#: What a read's C{tenant} is: C{str} for a read as the gate admitted it
#: (L{sealgw.query.label_read} takes only those), L{None} once it is to be
#: sent without a tenant header.
TenantT = TypeVar("TenantT", bound=Optional[str], covariant=True)


@attr.frozen
class ReadRequest(Generic[TenantT]):
    """
    What to ask the upstream.

    @ivar path: the matched read path (L{sealgw.query.ReadMatch.path}).
    @ivar query: the client's query string, as it came, without the C{?}.
    @ivar headers: the client's headers that pass
        (L{sealgw.query.forwarded_headers}).
    @ivar body: a POST's form body, as it came.
    @ivar tenant: the tenant header's value, as the gate decided it
        (C{a|b} for a federated read); L{None} sends no tenant header (an
        upstream that keeps tenants apart by label, once
        L{sealgw.query.label_read} has held the read to its tenant).
    """

    route: ReadRoute
    method: str
    path: str
    tenant: TenantT
    query: str = ""
    headers: Mapping[str, str] = attr.field(factory=dict)
    body: Optional[bytes] = None
    content_type: Optional[str] = None

    def without_tenant(self, query: str, body: Optional[bytes]) -> ReadRequest[None]:
        """
        This read with C{query} and C{body} in place of its own, sent
        without a tenant header.
        """
        evolved = attr.evolve(cast("ReadRequest[Any]", self), query=query, body=body, tenant=None)
        return cast("ReadRequest[None]", evolved)


def query_string(uri: bytes) -> str:
    """
    The query string of a request's C{uri}, to pass on as it is.

    @raise ReadRefused: 400, when it holds anything but visible ASCII or
        a C{#}.
    """
    _, _, raw = uri.partition(b"?")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is None or not _QUERY.fullmatch(text) or "#" in text:
        raise ReadRefused(
            400, "the query string must be percent-encoded ASCII (no spaces, no '#')"
        )
    return text


def form_body(
    method: str,
    body: bytes,
    content_type: Optional[str],
    content_encoding: Optional[str],
    limit: int,
) -> tuple[Optional[bytes], Optional[str]]:
    """
    The body and content type to relay for a read: none for a GET (Go's
    servers ignore a GET body, so it is not sent), the form as it came for
    a POST.  Grafana's Prometheus datasource POSTs
    C{application/x-www-form-urlencoded}; a POST with an empty body
    carries its parameters in the query string.

    @raise ReadRefused: 413 past C{limit}; 415 for another media type or a
        compressed body.
    """
    if method != "POST":
        return None, None
    if len(body) > limit:
        raise ReadRefused(413, f"the form body is larger than the limit of {limit} bytes")
    if (content_encoding or "identity").strip().lower() != "identity":
        raise ReadRefused(415, "a read's form body must not be compressed")
    essence = (content_type or "").partition(";")[0].strip().lower()
    if not body and not essence:
        return None, None
    if essence != FORM:
        raise ReadRefused(415, f"a read's body must be {FORM}")
    return body, content_type
