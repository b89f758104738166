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
    RedisAddress,
    SampleLimitsConfig,
    SharedLimitsConfig,
    TokenFileConfig,
    parse_redis_url,
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
    PromQLConfig,
    PushConfig,
    PushgatewayConfig,
    QueryConfig,
    ReadRouteConfig,
    RemoteWriteConfig,
    RetryConfig,
    RouteConfig,
    SealPushConfig,
    TenancyConfig,
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
    "PromQLConfig",
    "PushConfig",
    "PushgatewayConfig",
    "QueryConfig",
    "ReadRouteConfig",
    "RateLimitConfig",
    "ReadLimitConfig",
    "RedisAddress",
    "SampleLimitsConfig",
    "SharedLimitsConfig",
    "RemoteWriteConfig",
    "RetryConfig",
    "RouteConfig",
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
    "parse_redis_url",
    "parse_duration",
    "parse_size",
    "read",
    "structure",
]
