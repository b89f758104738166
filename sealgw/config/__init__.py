"""
Configuration: one YAML file read once at start-up into frozen objects.
"""

from sealgw.config._auth import (
    AuthConfig,
    ClientCertConfig,
    ClientCertIdentity,
    OIDCConfig,
    RateLimitConfig,
    ReadLimitConfig,
    SampleLimitsConfig,
    TokenFileConfig,
)
from sealgw.config._default import default_config
from sealgw.config._in_flight import InFlightConfig
from sealgw.config._load import load, read
from sealgw.config._model import (
    BasicAuthConfig,
    Config,
    FileUpstreamConfig,
    HTTPUpstreamConfig,
    LabelActions,
    LimitsConfig,
    ListenerConfig,
    LogConfig,
    LokiReadConfig,
    PromQLConfig,
    PushConfig,
    PushgatewayConfig,
    QueryConfig,
    ReadRouteConfig,
    RemoteWriteConfig,
    RetryConfig,
    RouteConfig,
    SealPushConfig,
    TailConfig,
    TenancyConfig,
    TenantFromLabel,
    TimeoutsConfig,
    TLSConfig,
    UpstreamConfig,
)
from sealgw.config._problems import ConfigError
from sealgw.config._rules import SourceFile, Tenant
from sealgw.config._secret import Secret
from sealgw.config._structure import structure
from sealgw.config._units import format_size, parse_duration, parse_size

__all__ = [
    "AuthConfig",
    "BasicAuthConfig",
    "ClientCertConfig",
    "ClientCertIdentity",
    "Config",
    "ConfigError",
    "FileUpstreamConfig",
    "SourceFile",
    "HTTPUpstreamConfig",
    "InFlightConfig",
    "LabelActions",
    "LimitsConfig",
    "ListenerConfig",
    "LogConfig",
    "OIDCConfig",
    "LokiReadConfig",
    "PromQLConfig",
    "PushConfig",
    "PushgatewayConfig",
    "QueryConfig",
    "ReadRouteConfig",
    "TailConfig",
    "RateLimitConfig",
    "ReadLimitConfig",
    "SampleLimitsConfig",
    "RemoteWriteConfig",
    "RetryConfig",
    "RouteConfig",
    "TenantFromLabel",
    "SealPushConfig",
    "Secret",
    "TenancyConfig",
    "Tenant",
    "TimeoutsConfig",
    "TLSConfig",
    "TokenFileConfig",
    "UpstreamConfig",
    "default_config",
    "format_size",
    "load",
    "parse_duration",
    "parse_size",
    "read",
    "structure",
]
