"""
The read routes sealgw passes on, per API, and how a request's path is
matched against them: on the path exactly as it came, never on a decoded
or tidied form, so that nothing a client writes (C{..}, C{//}, C{%2F},
C{%2e}, a backslash) can make the upstream see a path that is not in the
list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Optional

import attr

#: The read APIs, in the order the configuration names them.
READ_APIS = ("prometheus", "loki", "tempo")

#: What one segment of a read path may hold.  It covers every path the
#: allow-list names and the parameters they take: Prometheus and Loki label
#: names (UTF-8 names come U__-escaped, which fits), Tempo tags
#: (C{span.http.method}, C{event:name}) and trace ids.  Percent signs,
#: backslashes, semicolons and anything else are refused outright.
_SEGMENT = re.compile(r"[A-Za-z0-9_.:-]{1,256}")


class NotCanonical(ValueError):
    """
    A path that is not in the one form the allow-list matches: refused
    with 400 rather than tidied, as a tidied path is one the client did not
    send and an upstream might tidy differently.
    """


@attr.frozen
class ReadRoute:
    """
    One read route of one API.

    @ivar api: C{prometheus}, C{loki} or C{tempo}.
    @ivar name: the route within the API, for logs and metrics.
    @ivar path: the path as the API serves it, with C{{name}} for a
        parameter segment: C{/api/v1/label/{name}/values}.
    @ivar methods: what the API takes on it; GET and POST (a form body)
        where Grafana sends either.
    @ivar websocket: a WebSocket upgrade the gateway does not proxy.
    """

    api: str
    name: str
    path: str
    methods: tuple[str, ...] = ("GET", "POST")
    websocket: bool = False

    @property
    def label(self) -> str:
        """
        The route's name in the access log and metrics: bounded by this
        table, never by what a client sends.
        """
        return f"read_{self.api}_{self.name}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))


def _prometheus(name: str, path: str) -> ReadRoute:
    return ReadRoute("prometheus", name, "/api/v1/" + path)


def _loki(name: str, path: str) -> ReadRoute:
    return ReadRoute("loki", name, "/loki/api/v1/" + path)


def _tempo(name: str, path: str) -> ReadRoute:
    # Grafana's Tempo datasource only ever GETs.
    return ReadRoute("tempo", name, "/api/" + path, methods=("GET",))


#: Every read route, as issue 9 lists them.
READ_ROUTES: tuple[ReadRoute, ...] = (
    _prometheus("query", "query"),
    _prometheus("query_range", "query_range"),
    _prometheus("query_exemplars", "query_exemplars"),
    _prometheus("series", "series"),
    _prometheus("labels", "labels"),
    _prometheus("label_values", "label/{name}/values"),
    _prometheus("metadata", "metadata"),
    _prometheus("rules", "rules"),
    _prometheus("alerts", "alerts"),
    _prometheus("buildinfo", "status/buildinfo"),
    _prometheus("format_query", "format_query"),
    _loki("query", "query"),
    _loki("query_range", "query_range"),
    _loki("labels", "labels"),
    _loki("label_values", "label/{name}/values"),
    _loki("series", "series"),
    _loki("index_stats", "index/stats"),
    _loki("index_volume", "index/volume"),
    _loki("detected_labels", "detected_labels"),
    _loki("patterns", "patterns"),
    ReadRoute("loki", "tail", "/loki/api/v1/tail", methods=("GET",), websocket=True),
    _tempo("trace", "traces/{trace_id}"),
    _tempo("trace_v2", "v2/traces/{trace_id}"),
    _tempo("search", "search"),
    _tempo("search_tags", "search/tags"),
    _tempo("search_tags_v2", "v2/search/tags"),
    _tempo("tag_values", "search/tag/{tag}/values"),
    _tempo("tag_values_v2", "v2/search/tag/{tag}/values"),
    _tempo("echo", "echo"),
)

#: Where each API is served on the gateway besides its own paths: Mimir
#: serves the Prometheus API under C{/prometheus}, and a Grafana Tempo
#: datasource is often pointed at C{.../tempo}.  The prefix is the
#: client's choice only; what the upstream gets is set by the
#: configuration (L{sealgw.query.ReadUpstream.path}).
PREFIXES: Mapping[str, tuple[str, ...]] = {
    "prometheus": ("", "/prometheus"),
    "loki": ("",),
    "tempo": ("", "/tempo"),
}


@attr.frozen
class ReadMatch:
    """
    A request path that names a read route.

    @ivar path: the path to ask the upstream for (under its configured
        prefix), parameters filled in: C{/api/v1/label/job/values}.
    """

    route: ReadRoute
    path: str
    params: Mapping[str, str] = attr.field(factory=dict)


def canonical_segments(raw: bytes) -> tuple[str, ...]:
    """
    The segments of a request path that is in canonical form.

    @param raw: the path as it came on the request line, before any
        percent-decoding, without its query string.
    @raise NotCanonical: the path is not plain ASCII, does not start with
        C{/}, holds an empty segment (C{//}, a trailing C{/}), a C{.} or
        C{..} segment, a percent-encoded character, or any character
        outside letters, digits and C{_.:-}.
    """
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise NotCanonical("the path must be plain ASCII") from None
    if not text.startswith("/"):
        raise NotCanonical("the path must start with '/'")
    segments = tuple(text[1:].split("/"))
    for segment in segments:
        if segment == "":
            raise NotCanonical("the path must not hold '//' or end with '/'")
        if segment in (".", ".."):
            raise NotCanonical("the path must not hold '.' or '..' segments")
        if "%" in segment:
            raise NotCanonical("the path must not be percent-encoded")
        if not _SEGMENT.fullmatch(segment):
            raise NotCanonical(
                "a read path holds only letters, digits and '_.:-' between its slashes"
            )
    return segments


def match_read_path(raw: bytes) -> Optional[ReadMatch]:
    """
    The read route C{raw} names, or L{None} when it names none (404).

    @raise NotCanonical: C{raw} is not in canonical form (400).
    """
    segments = canonical_segments(raw)
    for route in READ_ROUTES:
        for prefix in PREFIXES[route.api]:
            params = _match(segments, _prefix_segments(prefix) + route.segments)
            if params is not None:
                path = route.path.format_map(params) if params else route.path
                return ReadMatch(route, path, params)
    return None


def _prefix_segments(prefix: str) -> tuple[str, ...]:
    return tuple(prefix.strip("/").split("/")) if prefix else ()


def _match(segments: tuple[str, ...], template: tuple[str, ...]) -> Optional[dict[str, str]]:
    if len(segments) != len(template):
        return None
    params: dict[str, str] = {}
    for segment, expected in zip(segments, template, strict=True):
        if expected.startswith("{"):
            params[expected[1:-1]] = segment
        elif segment != expected:
            return None
    return params


def klein_rules() -> Iterator[tuple[str, ReadRoute]]:
    """
    Every read route under each of its API's prefixes, as a werkzeug rule
    string (C{/prometheus/api/v1/label/<name>/values}), for the router.
    """
    for route in READ_ROUTES:
        for prefix in PREFIXES[route.api]:
            yield prefix + route.path.replace("{", "<").replace("}", ">"), route
