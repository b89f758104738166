"""
The typed, frozen shape of a sealgw configuration.

Everything here is plain data, built once at start-up (or on reload) by
L{sealgw.config.load}; nothing in it does I/O.  The defaults written here
are the only ones: the loader leaves out what the file leaves out.  The
C{Annotated} aliases (L{Seconds}, L{Bytes}, ...) are plain C{float}, C{int}
and C{str} to every reader of the model; they tell the loader how the file
writes each value (see L{sealgw.config._rules}).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Optional, Union

import attr

from sealgw.config._auth import AuthConfig
from sealgw.config._azure import AzureADConfig
from sealgw.config._in_flight import InFlightConfig
from sealgw.config._problems import Invalid, kind, unknown_keys
from sealgw.config._rules import (
    FROM_KEY,
    INLINE,
    NOT_IN_FILE,
    URL,
    AnyText,
    Bytes,
    CipherString,
    Count,
    Endpoint,
    ExistingFile,
    HeaderName,
    Interval,
    Network,
    OneOf,
    Path,
    Rule,
    Seconds,
    Size,
    SourceFile,
    Tenant,
    URLPath,
)
from sealgw.config._secret import Secret
from sealgw.config._spool import SpoolConfig

MiB = 1024 * 1024


INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
"""
The TLS 1.2 suites of Mozilla's "intermediate" profile, less its DHE ones:
forward secret (ECDHE) and authenticated encryption (GCM, ChaCha20-Poly1305)
only.  TLS 1.3 has only such suites, and OpenSSL's own list of them is kept.
"""

TLS_VERSIONS = ("1.2", "1.3")


@attr.frozen
class TLSConfig:
    """
    Server-side TLS for one listener.

    @ivar client_certificates: C{"none"}, C{"optional"} or C{"required"};
        anything but C{"none"} needs C{client_ca}.
    @ivar min_version: the oldest TLS version accepted, one of
        L{TLS_VERSIONS}; never below 1.2.
    @ivar ciphers: an OpenSSL cipher string choosing the TLS 1.2 suites.
    @ivar watch_interval: how often the certificate, key and client CA files
        are checked for changes, in seconds; C{0} leaves reloading to SIGHUP.
    """

    certificate: ExistingFile
    key: ExistingFile
    client_ca: Optional[ExistingFile] = None
    client_certificates: Annotated[str, OneOf(("none", "optional", "required"))] = "none"
    min_version: Annotated[str, OneOf(TLS_VERSIONS)] = "1.2"
    ciphers: Annotated[str, CipherString()] = INTERMEDIATE_CIPHERS
    watch_interval: Interval = 60.0


@attr.frozen
class ListenerConfig:
    """
    One place to accept connections: a Twisted endpoint string, optionally
    wrapped in TLS, optionally also serving the operational routes.

    The limits bound what one client can hold on this listener: see
    L{sealgw.web.GatewayChannel} and L{sealgw.daemon._limits.ConnectionLimit}.

    @ivar max_header_size: the request line and headers of one request,
        in bytes; a larger head is answered 431.  Never below 1KiB: a
        request line and a Host header need room.
    @ivar max_connections: connections open at once; more are closed as
        soon as they are accepted.
    @ivar header_timeout: seconds from a connection's start, or from the
        first byte of a later request on it, until the whole request head
        must be in; past that it is answered 408 and closed.
    @ivar idle_timeout: seconds a connection may stay silent, between
        requests or within a body, before it is closed.
    @ivar auth: C{none} admits every request on this listener as
        C{identity}, with no credentials asked (the Azure sidecar's
        C{localhost:8080}); only on loopback addresses and unix sockets.
    @ivar identity: the identity of requests on an C{auth: none} listener.
    @ivar protocol: C{http} serves every HTTP route (OTLP/HTTP among
        them); C{otlp-grpc} serves the OTLP gRPC services only (the
        Collector's and the SDKs' default, on 4317), into the same
        C{push.otlp_*} routes.
    """

    endpoint: Annotated[str, Endpoint()]
    tls: Optional[TLSConfig] = None
    ops: bool = False
    max_header_size: Annotated[int, Size(minimum=1024)] = 64 * 1024
    max_connections: Count = 1024
    header_timeout: Seconds = 10.0
    idle_timeout: Seconds = 120.0
    auth: Annotated[str, OneOf(("required", "none"))] = "required"
    identity: Optional[str] = None
    protocol: Annotated[str, OneOf(("http", "otlp-grpc"))] = "http"


@attr.frozen
class LogConfig:
    format: Annotated[str, OneOf(("text", "json"))] = "text"
    level: Annotated[str, OneOf(("debug", "info", "warn", "error", "critical"))] = "info"
    access: bool = True


@attr.frozen
class LimitsConfig:
    """
    Request-size limits applied before any decoding.

    @ivar max_body: the largest request body accepted as sent (compressed).
    @ivar max_decompressed: the largest body accepted after decompression,
        checked before decompressing wherever the format declares its size.
    """

    max_body: Bytes = 5 * MiB
    max_decompressed: Bytes = 50 * MiB


@attr.frozen
class TimeoutsConfig:
    connect: Seconds = 5.0
    response: Seconds = 30.0
    body: Seconds = 30.0


@attr.frozen
class RetryConfig:
    """
    Retries of one upstream request on connection errors, 5xx and 429.

    @ivar attempts: total tries, the first included.
    @ivar deadline: no retry starts after this long since the request came in.
    """

    attempts: Count = 4
    initial_backoff: Seconds = 0.25
    max_backoff: Seconds = 5.0
    deadline: Seconds = 30.0


@attr.frozen
class BasicAuthConfig:
    username: str
    password: Secret


#: A Prometheus label name, as every Prometheus-compatible store takes it.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@attr.frozen
class UpstreamTenancy:
    """
    How an upstream keeps tenants apart.

    @ivar label: L{None} when the upstream has tenants of its own, named
        by the tenant header (Mimir, Loki, Tempo).  Otherwise the label
        that carries the tenant in a store that has none (Prometheus,
        VictoriaMetrics single-node, a shared Azure Monitor workspace):
        set on every series pushed and enforced on every selector read,
        and no tenant header is sent.
    """

    label: Optional[str] = None


@attr.frozen
class TenancyMode(Rule):
    """
    An upstream's C{tenancy}: C{header} (the default), or C{{label: NAME}}.
    """

    def structure(self, value: object, file: SourceFile) -> UpstreamTenancy:
        if value == "header":
            return UpstreamTenancy()
        if not isinstance(value, Mapping):
            raise Invalid(f"expected 'header' or a mapping {{label: NAME}}, got {kind(value)}")
        for problem in unknown_keys(value, ["label"]):
            raise problem
        label = value.get("label")
        if label is None:
            raise Invalid("required", at=["label"])
        if not isinstance(label, str) or not _LABEL_NAME.fullmatch(label):
            raise Invalid(
                f"{label!r} is not a label name (letters, digits and _, not starting "
                "with a digit)",
                at=["label"],
            )
        if label.startswith("__"):
            raise Invalid("names starting with __ are reserved by Prometheus", at=["label"])
        return UpstreamTenancy(label=label)


@attr.frozen
class RemoteWriteVersion(Rule):
    """
    The remote-write version an upstream reads: 1 or 2.
    """

    def structure(self, value: object, file: SourceFile) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2):
            raise Invalid(
                f"{value!r} is not 1 or 2 (1: remote write 2.0 requests are converted to "
                "1.0 for this upstream; 2: it reads 2.0, which is relayed as it came)"
            )
        return value


@attr.frozen
class HTTPUpstreamConfig:
    """
    An HTTP(S) upstream.  Outbound credentials (basic auth, a static bearer
    token, or C{azure_ad}: Entra ID tokens, see L{sealgw.credentials.azure})
    are presented by its clients.

    @ivar max_connections: idle connections kept for reuse (at least: see
        L{InFlightConfig}).
    @ivar in_flight: requests in flight at once, and each tenant's share.
    @ivar tenancy: how it keeps tenants apart: by the tenant header, or,
        for a store without tenants, by a label (see L{UpstreamTenancy}).
    @ivar remote_write_version: the remote-write protocol it reads: 1
        (the default; what every remote-write store reads) has remote
        write 2.0 requests converted to 1.0 for it, 2 (a receiver that
        reads C{io.prometheus.write.v2.Request}, such as Prometheus 3's)
        has them relayed as 2.0.  1.0 requests are relayed as 1.0 either
        way.
    @ivar url: the upstream's base URL; with C{urls}, the first of them.
    @ivar urls: its backends, each a base URL differing from the others
        in host and port only (L{sealgw.http.Backends} balances between
        them); C{(url,)} when the file gives C{url}.  Either key may be
        given, not both.
    """

    name: str = attr.field(metadata=FROM_KEY)
    url: URL = ""
    timeouts: TimeoutsConfig = TimeoutsConfig()
    retry: RetryConfig = RetryConfig()
    headers: Mapping[Annotated[str, HeaderName()], AnyText] = attr.field(factory=dict)
    basic_auth: Optional[BasicAuthConfig] = None
    bearer_token: Optional[Secret] = None
    ca_file: Optional[ExistingFile] = None
    max_connections: Count = 10
    in_flight: InFlightConfig = InFlightConfig()
    max_response_body: Bytes = 1 * MiB
    tenancy: Annotated[UpstreamTenancy, TenancyMode()] = UpstreamTenancy()
    spool: Optional[SpoolConfig] = None
    azure_ad: Optional[AzureADConfig] = None
    remote_write_version: Annotated[int, RemoteWriteVersion()] = 1
    urls: tuple[URL, ...] = ()
    #: Whether the file gave both C{url} and C{urls}, for the check to say
    #: so (once one fills the other in, it no longer can).
    both_urls: bool = attr.field(default=False, metadata=NOT_IN_FILE, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # One of the two keys fills the other in, so that every reader of
        # C{url} (one backend) and of C{urls} (all of them) finds it.
        if self.url and self.urls:
            object.__setattr__(self, "both_urls", True)
        elif self.urls:
            object.__setattr__(self, "url", self.urls[0])
        elif self.url:
            object.__setattr__(self, "urls", (self.url,))


@attr.frozen
class FileUpstreamConfig:
    """
    Writes decoded data as JSON lines per signal and tenant, rotated by size.
    """

    name: str = attr.field(metadata=FROM_KEY)
    directory: Path
    rotate_size: Bytes = 64 * MiB
    keep: Count = 5


UpstreamConfig = Union[HTTPUpstreamConfig, FileUpstreamConfig]


@attr.frozen
class LabelActions:
    """
    seal-proxy's C{label-actions}: C{add} wins over client labels, then every
    label named in C{remove} is deleted.
    """

    add: Mapping[str, AnyText] = attr.field(factory=dict)
    remove: frozenset[str] = frozenset()


@attr.frozen
class UpstreamNames(Rule):
    """
    The upstreams a tenant's pushes go to: one name, or a list of them
    (a tenant being moved from one store to another goes to both).
    """

    def structure(self, value: object, file: SourceFile) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise Invalid(f"expected an upstream's name or a list of them, got {kind(value)}")
        if not value:
            raise Invalid("name at least one upstream")
        names: list[str] = []
        for index, name in enumerate(value):
            if name == "":
                raise Invalid("an upstream's name must not be empty", at=[index])
            if not isinstance(name, str):
                raise Invalid(f"expected an upstream's name, got {kind(name)}", at=[index])
            if name in names:
                raise Invalid(f"{name!r} is named twice", at=[index])
            names.append(name)
        return tuple(names)


@attr.frozen
class RouteConfig:
    """
    Where one push signal goes: a named upstream and a path under its URL,
    or other upstreams for some tenants, and copies to more.

    @ivar tenants: the tenants whose pushes go to other upstreams than
        C{upstream} (a cluster in another region), each to one upstream or
        several (a tenant moving between stores).
    @ivar also: upstreams every push goes to as well, whatever its tenant
        (a second store, a migration): the client hears 2xx only when each
        of them has accepted its copy (or spooled it).
    """

    upstream: str
    path: Annotated[str, URLPath()] = ""
    tenants: Mapping[Tenant, Annotated[tuple[str, ...], UpstreamNames()]] = attr.field(
        factory=dict
    )
    also: Annotated[tuple[str, ...], UpstreamNames()] = ()

    def targets(self, tenant: Optional[str]) -> tuple[str, ...]:
        """
        The upstreams a push of C{tenant} goes to, by name, in order, each
        once: the tenant's own, else C{upstream}; then C{also}.
        """
        first = self.tenants.get(tenant, (self.upstream,)) if tenant is not None else (
            self.upstream,
        )
        return first + tuple(name for name in self.also if name not in first)

    def every_upstream(self) -> tuple[str, ...]:
        """
        Every upstream some push of this route may go to, each once.
        """
        names = [self.upstream]
        for targets in self.tenants.values():
            names.extend(targets)
        names.extend(self.also)
        return tuple(dict.fromkeys(names))


#: A label name, as C{tenant_from_label} takes it (reserved C{__} names too).
_ANY_LABEL_NAME = _LABEL_NAME


@attr.frozen
class TenantFromLabel:
    """
    Remote write whose series name their tenant in a label (one Prometheus
    scraping many teams): each batch is split by the label's value.

    @ivar label: the label naming a series' tenant.
    @ivar keep: whether the label stays on the series relayed; C{false}
        removes it (a name starting with C{__} must be removed).
    """

    label: str
    keep: bool = True


@attr.frozen
class TenantFromLabelRule(Rule):
    """
    C{tenant_from_label}: a label name, or C{{label: NAME, keep: BOOL}}.
    """

    def structure(self, value: object, file: SourceFile) -> TenantFromLabel:
        at: list[str | int] = []
        keep: object = True
        if isinstance(value, Mapping):
            for problem in unknown_keys(value, ["label", "keep"]):
                raise problem
            if value.get("label") is None:
                raise Invalid("required", at=["label"])
            keep = value.get("keep", True)
            if not isinstance(keep, bool):
                raise Invalid(f"expected true or false, got {kind(keep)}", at=["keep"])
            value, at = value["label"], ["label"]
        if not isinstance(value, str) or not _ANY_LABEL_NAME.fullmatch(value):
            raise Invalid(
                f"{value!r} is not a label name (letters, digits and _, not starting "
                "with a digit)",
                at=at,
            )
        if value.startswith("__") and keep:
            raise Invalid(
                f"{value!r}: names starting with __ are reserved by Prometheus; "
                "give keep: false to remove it before relaying",
                at=at,
            )
        return TenantFromLabel(label=value, keep=bool(keep))


@attr.frozen
class RemoteWriteConfig:
    """
    @ivar check: how deep a body is looked at before it is relayed:
        C{headers} (content headers and snappy's declared length against
        C{max_decompressed}; the body is relayed byte for byte and the
        upstream's own 4xx for a bad one is passed back), C{decode} (also
        a protobuf parse) or C{labels} (also every series' labels).  Label
        actions decode whatever the level.
    @ivar tenant_from_label: when set, each series' tenant is the value
        of this label (among the identity's tenants), not the request's.
    """

    route: RouteConfig = attr.field(metadata=INLINE)
    labels: LabelActions = LabelActions()
    check: Annotated[str, OneOf(("headers", "decode", "labels"))] = "headers"
    tenant_from_label: Optional[Annotated[TenantFromLabel, TenantFromLabelRule()]] = None


@attr.frozen
class SealPushConfig:
    route: RouteConfig = attr.field(metadata=INLINE)
    labels: LabelActions = LabelActions()
    batch_size: Count = 500


@attr.frozen
class PushgatewayConfig:
    """
    Pushgateway-compatible pushes (C{/metrics/job/...}), converted to
    remote write like seal pushes and relayed at once.
    """

    route: RouteConfig = attr.field(metadata=INLINE)
    labels: LabelActions = LabelActions()
    batch_size: Count = 500


@attr.frozen
class PushConfig:
    remote_write: Optional[RemoteWriteConfig] = None
    seal: Optional[SealPushConfig] = None
    pushgateway: Optional[PushgatewayConfig] = None
    loki: Optional[RouteConfig] = None
    otlp_traces: Optional[RouteConfig] = None
    otlp_metrics: Optional[RouteConfig] = None
    otlp_logs: Optional[RouteConfig] = None


@attr.frozen
class ReadRouteConfig:
    """
    Where one read API (Prometheus, Loki or Tempo) goes.

    @ivar upstream: an HTTP upstream's name; its URL, credentials, TLS and
        connect timeout serve reads too.
    @ivar path: where the API is served under the upstream's URL
        (C{/prometheus} for Mimir; empty for Prometheus, Loki, Tempo).
    @ivar max_response_bytes: the most of one answer relayed (streamed,
        so this bounds what a client can make an upstream send, not memory).
    @ivar timeout: how long an answer's status may take; reads run longer
        than pushes (a PromQL range query over days), so they have their
        own.
    """

    upstream: str
    path: Annotated[str, URLPath()] = ""
    max_response_bytes: Bytes = 64 * MiB
    timeout: Seconds = 120.0


@attr.frozen
class TailConfig:
    """
    Loki live tails (C{/loki/api/v1/tail}, a WebSocket held open for as
    long as Grafana's "Live" view is): the bounds that keep one identity's
    forgotten browser tabs from holding connections for ever.

    @ivar max_duration: how long one tail may stay open; then it is closed
        (1000, the reason says why) and Grafana may open another.
    @ivar idle_timeout: how long a tail may pass no message either way
        before it is closed.
    @ivar max_per_identity: tails one identity may hold open at once, per
        gateway process; one more is answered 429 before the upgrade.
    """

    max_duration: Seconds = 3600.0
    idle_timeout: Seconds = 600.0
    max_per_identity: Count = 4


@attr.frozen
class LokiReadConfig(ReadRouteConfig):
    """
    Where Loki reads go, and the bounds on its live tails.
    """

    tail: TailConfig = TailConfig()


@attr.frozen
class PromQLConfig:
    """
    PromQL held to a tenant's label (upstreams with C{tenancy: {label}}):
    what a query may hold before it is parsed, how long its parsing may
    take, where, and how many rewrites are remembered.  See
    L{sealgw.tenancy.PromQLBounds} for what each bound counts.

    @ivar parse_timeout: how long one query may take a parser process
        before the process is killed and the query refused.
    @ivar processes: parser processes per gateway process (per worker).
    @ivar cache_entries: rewrites of recent queries remembered.
    @ivar cache_bytes: the text those may hold together.
    """

    max_query_bytes: Bytes = 64 * 1024
    max_nesting: Count = 256
    max_matchers: Count = 1000
    max_regex_matchers: Count = 100
    max_regex_bytes: Bytes = 64 * 1024
    max_regex_size: Count = 256 * 1024
    parse_timeout: Seconds = 2.0
    processes: Count = 1
    cache_entries: Count = 4096
    cache_bytes: Bytes = 16 * MiB


@attr.frozen
class QueryConfig:
    """
    The read path: an upstream per query API; an API left out answers 404.

    @ivar max_form_bytes: the largest POST form body a read may carry.
    @ivar promql: label enforcement's bounds, parser and cache.
    """

    prometheus: Optional[ReadRouteConfig] = None
    loki: Optional[LokiReadConfig] = None
    tempo: Optional[ReadRouteConfig] = None
    max_form_bytes: Bytes = 1 * MiB
    promql: PromQLConfig = PromQLConfig()


@attr.frozen
class TenancyConfig:
    """
    @ivar header: the header naming the tenant, inbound and upstream.
    @ivar federation: whether C{a|b} is allowed on queries.
    @ivar default_tenant: the tenant of identities that name none.
    """

    header: Annotated[str, HeaderName()] = "X-Scope-OrgID"
    federation: bool = False
    default_tenant: Tenant = "anonymous"


def _cores() -> int:
    """
    The cores this process may run on (its CPU affinity, which containers
    and C{taskset} narrow), or every core where that cannot be asked.
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@attr.frozen
class WorkerCount(Rule):
    """
    How many worker processes: a whole number from 1, or C{auto} for one
    per core, counted when the file is read.
    """

    def structure(self, value: object, file: SourceFile) -> int:
        if value == "auto":
            return _cores()
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise Invalid(f"{value!r} is not a number of workers (a whole number from 1, or auto)")
        return value


@attr.frozen
class Config:
    """
    A whole sealgw configuration.

    @ivar source: where it came from, for messages.
    @ivar admin: a listener for C{/health}, C{/ready} and C{/metrics} only.
    @ivar trusted_proxies: CIDRs whose C{X-Forwarded-For} is believed.
    @ivar drain_grace: how long SIGTERM waits for requests in flight.
    @ivar warnings: what the file holds that is accepted but not used (a
        seal-proxy file's keys sealgw has no use for), each naming the file
        and key; logged once at start-up and printed by C{check-config}.
    @ivar workers: how many processes serve the listeners; 1 is the
        gateway in one process (see L{sealgw.daemon.WorkersService}).
    """

    source: str = attr.field(metadata=NOT_IN_FILE)
    listeners: tuple[ListenerConfig, ...]
    admin: Optional[ListenerConfig] = None
    log: LogConfig = LogConfig()
    limits: LimitsConfig = LimitsConfig()
    upstreams: Mapping[str, UpstreamConfig] = attr.field(factory=dict)
    push: PushConfig = PushConfig()
    query: QueryConfig = QueryConfig()
    auth: AuthConfig = AuthConfig()
    tenancy: TenancyConfig = TenancyConfig()
    trusted_proxies: tuple[Annotated[str, Network()], ...] = ()
    drain_grace: Interval = 30.0
    development_token: Optional[Secret] = attr.field(default=None, metadata=NOT_IN_FILE)
    warnings: tuple[str, ...] = attr.field(default=(), metadata=NOT_IN_FILE)
    workers: Annotated[int, WorkerCount()] = 1
