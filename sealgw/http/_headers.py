"""
Which headers an outbound request carries, and who may set each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import attr
from twisted.web.http_headers import Headers

from sealgw._version import __version__

USER_AGENT = f"sealgw/{__version__}".encode("ascii")

#: Headers that describe the connection or the body's framing: Twisted
#: writes them, nobody else may.
FRAMING = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"te",
     b"upgrade", b"keep-alive", b"expect", b"proxy-connection"}
)

#: Describe the body sent, so only the caller that made the body says them.
_BODY = frozenset({b"content-type", b"content-encoding"})


def _encoded(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("utf-8"), value.encode("utf-8")) for name, value in headers.items()]


@attr.frozen
class HeaderPolicy:
    """
    The headers one client sends, in rising precedence:

      1. C{User-Agent: sealgw/<version>};
      2. the caller's headers (which may echo what a client sent);
      3. the operator's static headers for the upstream;
      4. the body's C{Content-Type} and C{Content-Encoding}, as the caller
         gives them (removed when not given);
      5. the tenant header, set to the request's tenant;
      6. C{Authorization}, when the outbound credentials give one.

    Framing headers come from nobody.  The caller's headers can never set
    the tenant header nor describe the body: a client that chose its own
    C{X-Scope-OrgID} would read or write another tenant's data.

    @ivar static: the operator's headers, encoded, framing ones left out.
    @ivar tenant_header: lower-cased.
    """

    static: tuple[tuple[bytes, bytes], ...] = ()
    tenant_header: bytes = b"x-scope-orgid"

    @classmethod
    def build(cls, static: Mapping[str, str], tenant_header: str) -> HeaderPolicy:
        return cls(
            static=tuple((n, v) for n, v in _encoded(static) if n.lower() not in FRAMING),
            tenant_header=tenant_header.lower().encode("ascii"),
        )

    def compose(
        self,
        headers: Mapping[str, str],
        content_type: Optional[str],
        content_encoding: Optional[str],
        tenant: Optional[str],
        authorization: Optional[bytes],
    ) -> Headers:
        out = Headers()
        out.setRawHeaders(b"user-agent", [USER_AGENT])
        for name, value in _encoded(headers):
            lower = name.lower()
            if lower in FRAMING or lower in _BODY or lower == self.tenant_header:
                continue
            out.setRawHeaders(name, [value])
        for name, value in self.static:
            out.setRawHeaders(name, [value])
        for name, given in ((b"content-type", content_type),
                            (b"content-encoding", content_encoding)):
            if given:
                out.setRawHeaders(name, [given.encode("utf-8")])
            else:
                out.removeHeader(name)
        if tenant is not None:
            out.setRawHeaders(self.tenant_header, [tenant.encode("utf-8")])
        if authorization is not None:
            out.setRawHeaders(b"authorization", [authorization])
        return out
