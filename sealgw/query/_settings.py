"""
What the read path needs to know, per API: which upstream answers it and
how much of an answer it may relay.  Built by the gateway from its
configuration; tests build it by hand around in-memory clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import attr
from prometheus_client import CollectorRegistry
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList

from sealgw.config import (
    Config,
    ConfigError,
    HTTPUpstreamConfig,
    LokiReadConfig,
    PromQLConfig,
    ReadRouteConfig,
)
from sealgw.credentials import ICredentials, credentials_for
from sealgw.http import (
    HeaderPolicy,
    HTTPClient,
    IHTTPClient,
    SlotLimits,
    UpstreamSlots,
    join_url,
    load_trust_root,
    slot_metrics,
)
from sealgw.query._enforcer import LabelEnforcer
from sealgw.query._pool import InlineParser, IPromQLParser, ParserPool
from sealgw.query._tail import TailLimits
from sealgw.query._tail_upstream import TailUpstream
from sealgw.tenancy import PromQLBounds

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
    @ivar tenant_label: for a store without tenants, the label that keeps
        them apart: every read is held to its tenant by it
        (L{sealgw.query.label_read}) and sent without a tenant header.
    @ivar slots: the upstream's read slots, shared by every API it
        answers; L{None} leaves reads unbounded (tests).
    @ivar enforcer: what holds the PromQL of those reads to the tenant:
        the gateway's bounds, cache and parser processes
        (L{build_reads}); by default every query is parsed inline, which
        only tests should do.
    @ivar tail: for Loki, where its live tails go (a WebSocket each);
        L{None} elsewhere, and where tails are not relayed (501).
    """

    client: IHTTPClient
    url: str
    path: str = attr.field(default="", validator=_prefix)
    max_response_bytes: int = attr.field(default=DEFAULT_MAX_RESPONSE_BYTES, validator=_positive)
    tenant_label: Optional[str] = None
    slots: Optional[UpstreamSlots] = attr.field(default=None, eq=False)
    enforcer: LabelEnforcer = attr.field(factory=lambda: LabelEnforcer(InlineParser()))
    tail: Optional[TailUpstream] = attr.field(default=None, eq=False)

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


class ReadClients(Service):
    """
    The read path's settings, and the outbound clients built for them:
    a service whose stopping closes their pooled connections and stops
    the PromQL parser processes (L{sealgw.query._pool.ParserPool}).

    Reads get clients of their own rather than the push relay's: the same
    upstream, credentials and TLS, but their own response timeout (reads
    run longer) and their own pool, so a burst of slow queries never
    holds the connections pushes need.
    """

    def __init__(
        self,
        settings: QuerySettings,
        clients: list[HTTPClient],
        slots: Optional[Mapping[str, UpstreamSlots]] = None,
        parser: Optional[IPromQLParser] = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.slots: dict[str, UpstreamSlots] = dict(slots or {})
        self.parser = parser or InlineParser()

    def health(self) -> dict[str, Any]:
        """
        Each read upstream's slots in use and its backends, by upstream
        name, for C{/health}.  Slots full are not a fault, and a backend
        set aside shows in the push side's report: always C{ok}.
        """
        report: dict[str, Any] = {
            name: {"status": "ok", "reads_in_flight": slots.report()}
            for name, slots in self.slots.items()
        }
        for client in self.clients:
            entry = report.get(client.name)
            if entry is not None and client.backends is not None and "backends" not in entry:
                # Several read APIs of one upstream have a client each;
                # the first one's backends stand for them.
                entry["backends"] = client.backends.report()
        return report

    def stopService(self) -> Deferred[None]:
        super().stopService()
        closing = DeferredList(
            [c.close() for c in self.clients] + [self.parser.stop()], consumeErrors=True
        )
        return closing.addCallback(lambda _: None)


def read_slots(
    config: HTTPUpstreamConfig,
    reactor: Any,
    wait: float,
    registry: Optional[CollectorRegistry] = None,
) -> UpstreamSlots:
    """
    The read slots C{config}'s C{in_flight} section describes; a read
    waits for one at most C{wait} seconds.
    """
    in_flight = config.in_flight
    limits = SlotLimits(
        in_flight=in_flight.reads,
        tenant_share=in_flight.tenant_share,
        tenant_queue=in_flight.tenant_queue,
        queue=in_flight.queue,
        wait=wait,
    )
    observer = (
        slot_metrics(registry).for_slots(config.name, "reads", limits.in_flight)
        if registry is not None
        else None
    )
    return UpstreamSlots(config.name, "reads", limits, reactor, observer)


def build_enforcer(config: PromQLConfig, reactor: Any) -> LabelEnforcer:
    """
    Label enforcement as C{query.promql} configures it, on a pool of
    parser processes started when first needed.
    """
    pool = ParserPool(reactor, processes=config.processes, budget=config.parse_timeout)
    bounds = PromQLBounds(
        max_query_bytes=config.max_query_bytes,
        max_nesting=config.max_nesting,
        max_matchers=config.max_matchers,
        max_regex_matchers=config.max_regex_matchers,
        max_regex_bytes=config.max_regex_bytes,
        max_regex_size=config.max_regex_size,
    )
    return LabelEnforcer(pool, bounds, config.cache_entries, config.cache_bytes)


def build_tail(
    read: LokiReadConfig,
    upstream: HTTPUpstreamConfig,
    reactor: Any,
    tenant_header: str,
    credentials: Optional[ICredentials] = None,
) -> TailUpstream:
    """
    Where Loki's live tails go: the upstream of C{read}, with its TLS
    trust, static headers and credentials, and C{read.tail}'s bounds.

    @raise OSError: when the upstream's C{ca_file} cannot be read.
    @raise ValueError: when it holds no usable certificate.
    """
    # The WebSocket library, loaded now rather than on the first tail (its
    # import takes a few hundred milliseconds and 5 MiB): only gateways
    # that serve Loki reads pay for it, and never on a request's path.
    import sealgw.query._tail_websocket  # noqa: F401

    trust_root = load_trust_root(upstream.ca_file) if upstream.ca_file is not None else None
    limits = TailLimits(
        max_duration=read.tail.max_duration,
        idle_timeout=read.tail.idle_timeout,
        max_per_identity=read.tail.max_per_identity,
        max_message_bytes=read.max_response_bytes,
    )
    return TailUpstream(
        reactor=reactor,
        limits=limits,
        policy=HeaderPolicy.build(upstream.headers, tenant_header),
        credentials=credentials if credentials is not None else credentials_for(upstream),
        connect_timeout=upstream.timeouts.connect,
        handshake_timeout=read.timeout,
        trust_root=trust_root,
    )


def build_reads(
    config: Config,
    reactor: Any,
    credentials: Optional[Mapping[str, ICredentials]] = None,
    registry: Optional[CollectorRegistry] = None,
) -> ReadClients:
    """
    The read path a configuration asks for, with a client per enabled API,
    and read slots per upstream (shared by the APIs it answers), each
    waited for at most the longest C{timeout} of those APIs.

    @param credentials: issued credentials (Azure AD) by upstream name, in
        place of the static ones the configuration names.
    @param registry: where the slots' series go.

    @raise ConfigError: when an upstream's C{ca_file} cannot be used.
    """
    clients: list[HTTPClient] = []
    problems: list[str] = []
    query = config.query
    routes = [r for r in (query.prometheus, query.loki, query.tempo) if r is not None]
    slots: dict[str, UpstreamSlots] = {}
    for name in {r.upstream for r in routes}:
        upstream_config = config.upstreams[name]
        assert isinstance(upstream_config, HTTPUpstreamConfig)  # checked when loaded
        wait = max(r.timeout for r in routes if r.upstream == name)
        slots[name] = read_slots(upstream_config, reactor, wait, registry)
    # One enforcer, and so one parser pool and one cache, for the gateway
    # (per worker process); its processes start with the first query.
    enforcer = build_enforcer(query.promql, reactor)

    def upstream(api: str, read: Optional[ReadRouteConfig]) -> Optional[ReadUpstream]:
        if read is None:
            return None
        upstream = config.upstreams[read.upstream]
        assert isinstance(upstream, HTTPUpstreamConfig)  # checked when loaded
        timeouts = attr.evolve(upstream.timeouts, response=read.timeout)
        try:
            client = HTTPClient.for_upstream(
                attr.evolve(upstream, timeouts=timeouts),
                reactor,
                tenant_header=config.tenancy.header,
                credentials=(credentials or {}).get(read.upstream),
                in_flight=upstream.in_flight.reads,
                kind="reads",
                registry=registry,
            )
            tail = None
            if isinstance(read, LokiReadConfig):
                tail = build_tail(
                    read, upstream, reactor, config.tenancy.header,
                    (credentials or {}).get(read.upstream),
                )
        except (OSError, ValueError) as e:
            problems.append(f"query.{api}.upstream: {read.upstream}: {e}")
            return None
        clients.append(client)
        return ReadUpstream(
            client=client,
            url=upstream.url,
            path=read.path,
            max_response_bytes=read.max_response_bytes,
            tenant_label=upstream.tenancy.label,
            slots=slots[read.upstream],
            enforcer=enforcer,
            tail=tail,
        )

    settings = QuerySettings(
        prometheus=upstream("prometheus", query.prometheus),
        loki=upstream("loki", query.loki),
        tempo=upstream("tempo", query.tempo),
        max_form_bytes=query.max_form_bytes,
    )
    if problems:
        raise ConfigError(problems)
    return ReadClients(settings, clients, slots, enforcer.parser)
