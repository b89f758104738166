"""
Delivering pushes to upstreams (HTTP, or local files) with nothing silently
lost: every push ends as a 2xx L{Delivery}, an L{UpstreamRejected} the
client must not retry, or an L{UpstreamUnavailable} it must.  HTTP goes
through the one outbound client, L{sealgw.http}, whose status mapping
(L{sealgw.http.status_verdict}) and upstream slots it shares with the
read path; this layer adds retries and C{Retry-After}.
"""

from sealgw.relay._file import FileUpstream
from sealgw.relay._http import HTTPUpstream
from sealgw.relay._interfaces import (
    Delivery,
    DeliveryFailed,
    IRelayMetrics,
    IUpstream,
    Push,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sealgw.relay._metrics import NoMetrics, RelayMetrics
from sealgw.relay._retry import backoff, next_retry, parse_retry_after
from sealgw.relay._routes import PushRoute, deliver_all, worst
from sealgw.relay._service import UpstreamsService, build_upstreams

__all__ = [
    "Delivery",
    "DeliveryFailed",
    "FileUpstream",
    "HTTPUpstream",
    "IRelayMetrics",
    "IUpstream",
    "NoMetrics",
    "Push",
    "PushRoute",
    "RelayMetrics",
    "UpstreamRejected",
    "UpstreamUnavailable",
    "UpstreamsService",
    "backoff",
    "build_upstreams",
    "deliver_all",
    "next_retry",
    "parse_retry_after",
    "worst",
]
