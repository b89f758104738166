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


@attr.frozen
class TLSConfig:
    """
    Server-side TLS for one listener.  TLS 1.2 is always the minimum.

    @ivar client_certificates: C{"none"}, C{"optional"} or C{"required"};
        anything but C{"none"} needs C{client_ca}.
    """

    certificate: str
    key: str
    client_ca: Optional[str] = None
    client_certificates: str = "none"


@attr.frozen
class ListenerConfig:
    """
    One place to accept connections: a Twisted endpoint string, optionally
    wrapped in TLS, optionally also serving the operational routes.
    """

    endpoint: str
    tls: Optional[TLSConfig] = None
    ops: bool = False


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
