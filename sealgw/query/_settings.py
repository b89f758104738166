"""
What the read path needs to know, per API: which upstream answers it and
how much of an answer it may relay.  Built by the gateway from its
configuration; tests build it by hand around in-memory clients.
"""

from __future__ import annotations

from typing import Any, Optional

import attr

from sealgw.http import IHTTPClient, join_url

MiB = 1024 * 1024

#: The largest answer relayed by default.  Streamed, so this bounds what a
#: client can make an upstream send through the gateway, not memory.
DEFAULT_MAX_RESPONSE_BYTES = 64 * MiB

#: The largest POST form body by default.  A Grafana query with a long
#: regular expression is a few KiB; the body is held in memory.
DEFAULT_MAX_FORM_BYTES = 1 * MiB


def _prefix(instance: Any, attribute: Any, value: str) -> None:
    if value and (not value.startswith("/") or "?" in value or "#" in value):
        raise ValueError(f"{attribute.name}: {value!r} is not a path starting with '/'")


def _positive(instance: Any, attribute: Any, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value}")


@attr.frozen
class ReadUpstream:
    """
    The upstream that answers one read API.

    @ivar client: the one outbound client for it (its credentials, tenant
        header, timeouts and pool).
    @ivar url: its base URL, as the upstream's configuration gives it.
    @ivar path: where the API is served under C{url}: C{/prometheus} for
        Mimir, empty for Prometheus, Loki and Tempo.  A request for
        C{/api/v1/query} (or C{/prometheus/api/v1/query}) goes to
        C{url + path + /api/v1/query}.
    @ivar max_response_bytes: the most of an answer relayed; see
        L{sealgw.query.proxy_read}.
    """

    client: IHTTPClient
    url: str
    path: str = attr.field(default="", validator=_prefix)
    max_response_bytes: int = attr.field(default=DEFAULT_MAX_RESPONSE_BYTES, validator=_positive)

    def url_for(self, path: str, query: str) -> str:
        """
        The URL to ask for C{path} (a matched read path) with the client's
        query string C{query}, passed as it came.
        """
        target = self.path.rstrip("/") + path
        if query:
            target += "?" + query
        return join_url(self.url, target)


@attr.frozen
class QuerySettings:
    """
    The read path: an upstream per API, or L{None} where reads of that API
    are not enabled (its routes answer 404).

    @ivar max_form_bytes: the largest POST form body taken.
    """

    prometheus: Optional[ReadUpstream] = None
    loki: Optional[ReadUpstream] = None
    tempo: Optional[ReadUpstream] = None
    max_form_bytes: int = attr.field(default=DEFAULT_MAX_FORM_BYTES, validator=_positive)

    def upstream(self, api: str) -> Optional[ReadUpstream]:
        """
        The upstream of C{api} (C{prometheus}, C{loki}, C{tempo}).
        """
        found: Optional[ReadUpstream] = {
            "prometheus": self.prometheus,
            "loki": self.loki,
            "tempo": self.tempo,
        }[api]
        return found
