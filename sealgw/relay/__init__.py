"""
Delivering pushes to upstreams (HTTP, or local files) with nothing silently
lost: every push ends as a 2xx L{Delivery}, an L{UpstreamRejected} the
client must not retry, or an L{UpstreamUnavailable} it must.
"""

from sealgw.relay._credentials import (
    BasicAuthCredentials,
    BearerCredentials,
    NoCredentials,
    credentials_for,
)
from sealgw.relay._file import FileUpstream
from sealgw.relay._http import USER_AGENT, HTTPUpstream, join_url, load_trust_root
from sealgw.relay._interfaces import (
    SIGNALS,
    Delivery,
    DeliveryFailed,
    ICredentials,
    IRelayMetrics,
    IUpstream,
    Push,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sealgw.relay._metrics import NoMetrics, RelayMetrics
from sealgw.relay._retry import backoff, next_retry, parse_retry_after
from sealgw.relay._service import UpstreamsService, build_upstreams

__all__ = [
    "SIGNALS",
    "USER_AGENT",
    "BasicAuthCredentials",
    "BearerCredentials",
    "Delivery",
    "DeliveryFailed",
    "FileUpstream",
    "HTTPUpstream",
    "ICredentials",
    "IRelayMetrics",
    "IUpstream",
    "NoCredentials",
    "NoMetrics",
    "Push",
    "RelayMetrics",
    "UpstreamRejected",
    "UpstreamUnavailable",
    "UpstreamsService",
    "backoff",
    "build_upstreams",
    "credentials_for",
    "join_url",
    "load_trust_root",
    "next_retry",
    "parse_retry_after",
]
