"""
The one outbound HTTP client: every request sealgw makes (pushes relayed
upstream, reads, identity provider lookups) goes through an
L{IHTTPClient}; an upstream's requests in flight are shared between
tenants by L{UpstreamSlots}, and what their endings mean for the client is
decided in one place, L{status_verdict} and L{failure_verdict}.
"""

from sealgw.http._backend_metrics import BackendMetrics, backend_metrics
from sealgw.http._backends import Backend, Backends, IBackendMetrics, NoBackendMetrics
from sealgw.http._body import Body, StreamStopped
from sealgw.http._client import CACHED_CONNECTION_TIMEOUT, HTTPClient, HTTPResponse
from sealgw.http._errors import BodyReadFailed, CredentialsUnavailable, describe, inner_failures
from sealgw.http._headers import FRAMING, USER_AGENT, HeaderPolicy
from sealgw.http._interfaces import URL, IHTTPClient, IHTTPResponse, RequestBody
from sealgw.http._slot_metrics import SlotMetrics, slot_metrics
from sealgw.http._slots import (
    ISlotMetrics,
    NoSlotMetrics,
    Slot,
    SlotLimits,
    SlotRefused,
    UpstreamSlots,
)
from sealgw.http._timeout import OperationTimedOut, bounded
from sealgw.http._tls import https_policy, load_trust_root
from sealgw.http._url import SentURL, join_url, sendable
from sealgw.http._verdict import (
    CREDENTIAL_STATUSES,
    DEFAULT_RETRY_AFTER,
    UNSENT,
    Verdict,
    failure_verdict,
    retry_after_header,
    status_verdict,
)

__all__ = [
    "Backend",
    "BackendMetrics",
    "Backends",
    "IBackendMetrics",
    "NoBackendMetrics",
    "backend_metrics",
    "CREDENTIAL_STATUSES",
    "DEFAULT_RETRY_AFTER",
    "UNSENT",
    "Verdict",
    "failure_verdict",
    "retry_after_header",
    "status_verdict",
    "SentURL",
    "sendable",
    "CACHED_CONNECTION_TIMEOUT",
    "FRAMING",
    "URL",
    "USER_AGENT",
    "Body",
    "BodyReadFailed",
    "CredentialsUnavailable",
    "HTTPClient",
    "HTTPResponse",
    "HeaderPolicy",
    "ISlotMetrics",
    "NoSlotMetrics",
    "Slot",
    "SlotLimits",
    "SlotMetrics",
    "SlotRefused",
    "UpstreamSlots",
    "slot_metrics",
    "IHTTPClient",
    "IHTTPResponse",
    "OperationTimedOut",
    "RequestBody",
    "StreamStopped",
    "bounded",
    "describe",
    "https_policy",
    "inner_failures",
    "join_url",
    "load_trust_root",
]
