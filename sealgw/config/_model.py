"""
The typed, frozen shape of a sealgw configuration.

Everything here is plain data, built once at start-up (or on reload) by
L{sealgw.config.load}; nothing in it does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional, Union

import attr

from sealgw.config._auth import AuthConfig
from sealgw.config._reader import Secret

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

    certificate: str
    key: str
    client_ca: Optional[str] = None
    client_certificates: str = "none"
    min_version: str = "1.2"
    ciphers: str = INTERMEDIATE_CIPHERS
    watch_interval: float = 60.0


@attr.frozen
class ListenerConfig:
    """
    One place to accept connections: a Twisted endpoint string, optionally
    wrapped in TLS, optionally also serving the operational routes.

    The limits bound what one client can hold on this listener: see
    L{sealgw.web.GatewayChannel} and L{sealgw.daemon._limits.ConnectionLimit}.

    @ivar max_connections: connections open at once; more are closed as
        soon as they are accepted.
    @ivar max_header_size: the request line and headers of one request,
        in bytes; a larger head is answered 431.
    @ivar header_timeout: seconds from a connection's start, or from the
        first byte of a later request on it, until the whole request head
        must be in; past that it is answered 408 and closed.
    @ivar idle_timeout: seconds a connection may stay silent, between
        requests or within a body, before it is closed.
    """

    endpoint: str
    tls: Optional[TLSConfig] = None
    ops: bool = False
    max_connections: int = 1024
    max_header_size: int = 64 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 120.0


@attr.frozen
class LogConfig:
    format: str = "text"
    level: str = "info"
    access: bool = True


@attr.frozen
class LimitsConfig:
    """
    Request-size limits applied before any decoding.

    @ivar max_body: the largest request body accepted as sent (compressed).
    @ivar max_decompressed: the largest body accepted after decompression,
        checked before decompressing wherever the format declares its size.
    """

    max_body: int = 5 * MiB
    max_decompressed: int = 50 * MiB


@attr.frozen
class TimeoutsConfig:
    connect: float = 5.0
    response: float = 30.0
    body: float = 30.0


@attr.frozen
class RetryConfig:
    """
    Retries of one upstream request on connection errors, 5xx and 429.

    @ivar attempts: total tries, the first included.
    @ivar deadline: no retry starts after this long since the request came in.
    """

    attempts: int = 4
    initial_backoff: float = 0.25
    max_backoff: float = 5.0
    deadline: float = 30.0


@attr.frozen
class BasicAuthConfig:
    username: str
    password: Secret


@attr.frozen
class HTTPUpstreamConfig:
    """
    An HTTP(S) upstream.  Outbound credentials (basic auth, a static bearer
    token) are attached by the relay; issued tokens (Azure AD) come later
    through the same seam.
    """

    name: str
    url: str
    timeouts: TimeoutsConfig = TimeoutsConfig()
    retry: RetryConfig = RetryConfig()
    headers: Mapping[str, str] = attr.field(factory=dict)
    basic_auth: Optional[BasicAuthConfig] = None
    bearer_token: Optional[Secret] = None
    ca_file: Optional[str] = None
    max_connections: int = 10
    max_response_body: int = 1 * MiB


@attr.frozen
class FileUpstreamConfig:
    """
    Writes decoded data as JSON lines per signal and tenant, rotated by size.
    """

    name: str
    directory: str
    rotate_size: int = 64 * MiB
    keep: int = 5


UpstreamConfig = Union[HTTPUpstreamConfig, FileUpstreamConfig]


@attr.frozen
class LabelActions:
    """
    seal-proxy's C{label-actions}: C{add} wins over client labels, then every
    label named in C{remove} is deleted.
    """

    add: Mapping[str, str] = attr.field(factory=dict)
    remove: frozenset[str] = frozenset()


@attr.frozen
class RouteConfig:
    """
    Where one push signal goes: a named upstream and a path under its URL.
    """

    upstream: str
    path: str = ""


@attr.frozen
class RemoteWriteConfig:
    route: RouteConfig
    labels: LabelActions = LabelActions()


@attr.frozen
class SealPushConfig:
    route: RouteConfig
    labels: LabelActions = LabelActions()
    batch_size: int = 500


@attr.frozen
class PushConfig:
    remote_write: Optional[RemoteWriteConfig] = None
    seal: Optional[SealPushConfig] = None
    loki: Optional[RouteConfig] = None
    otlp_traces: Optional[RouteConfig] = None
    otlp_metrics: Optional[RouteConfig] = None
    otlp_logs: Optional[RouteConfig] = None


@attr.frozen
class TenancyConfig:
    """
    @ivar header: the header naming the tenant, inbound and upstream.
    @ivar federation: whether C{a|b} is allowed on queries.
    @ivar default_tenant: the tenant of identities that name none.
    """

    header: str = "X-Scope-OrgID"
    federation: bool = False
    default_tenant: str = "anonymous"


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
    """

    source: str
    listeners: tuple[ListenerConfig, ...]
    admin: Optional[ListenerConfig] = None
    log: LogConfig = LogConfig()
    limits: LimitsConfig = LimitsConfig()
    upstreams: Mapping[str, UpstreamConfig] = attr.field(factory=dict)
    push: PushConfig = PushConfig()
    auth: AuthConfig = AuthConfig()
    tenancy: TenancyConfig = TenancyConfig()
    trusted_proxies: tuple[str, ...] = ()
    drain_grace: float = 30.0
    development_token: Optional[Secret] = None
    warnings: tuple[str, ...] = ()
