"""
What one upstream request attempt's ending means for the client: the
status mapping of the relay, in one place.

    upstream said / what happened     retried?   client gets
    2xx                               -          Delivery (2xx)
    400, 404, 413, 422, other 4xx     no         UpstreamRejected(same)
    401, 403, 407                     no         UpstreamUnavailable(502)
    408                               yes        UpstreamUnavailable(504)
    429                               yes        UpstreamUnavailable(429, Retry-After)
    503                               yes        UpstreamUnavailable(503, Retry-After)
    other 5xx                         yes        UpstreamUnavailable(502)
    1xx, 3xx, nonsense                no         UpstreamUnavailable(502)
    connect refused, DNS, reset       yes        UpstreamUnavailable(503)
    broken answer                     yes        UpstreamUnavailable(502)
    connect/headers timeout           yes        UpstreamUnavailable(504)
    TLS verification failed           no         UpstreamUnavailable(502)
    anything unforeseen               no         UpstreamUnavailable(502)

Senders never retry a 4xx (PROTOCOLS.md, section 2), so a 4xx reaches the
client only when the upstream refused the data itself.
"""

from __future__ import annotations

from typing import Optional

import attr
from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers

from sealgw.http import Body, OperationTimedOut, describe, inner_failures
from sealgw.relay._interfaces import Delivery, UpstreamRejected, UpstreamUnavailable
from sealgw.relay._retry import parse_retry_after

try:
    from service_identity import VerificationError
except ImportError:  # pragma: no cover - service_identity ships with Twisted[tls]
    VerificationError = SSL.Error  # type: ignore[misc,assignment]

_log = Logger()

#: The longest upstream text carried into an error's C{reason}.
MAX_REASON = 1024

#: Upstream statuses that mean "the upstream refused I{our} credentials".
#: The client authenticated fine with the gateway; answering it 401/403
#: would tell it its own token is bad, and senders never retry those, so
#: every push until an operator fixes the gateway would be lost.
CREDENTIAL_STATUSES = frozenset({401, 403, 407})


@attr.frozen
class Outcome:
    """
    How one attempt ended.

    @ivar label: the C{status} label for metrics.
    @ivar retry_reason: why another attempt may help (a metrics label), or
        C{None} when this outcome is final.
    """

    label: str
    delivery: Optional[Delivery] = None
    error: Optional[UpstreamRejected | UpstreamUnavailable] = None
    retry_reason: Optional[str] = None


def response_outcome(status: int, headers: Headers, body: Body, now: float) -> Outcome:
    """
    Classify an answer from the upstream.

    @param now: the reactor's time, for C{Retry-After} dates.
    """
    # The status is the upstream's to choose, any integer Twisted parsed;
    # a label gets only the ones HTTP defines.
    label = str(status) if 100 <= status <= 599 else "invalid"
    if 200 <= status < 300:
        return Outcome(
            label,
            delivery=Delivery(
                status=status,
                body=body.data,
                attempts=1,
                body_truncated=body.truncated,
            ),
        )
    reason = upstream_reason(body.data, f"upstream answered {status}")
    if status in (429, 503):
        values = headers.getRawHeaders(b"retry-after")
        retry_after = parse_retry_after(values[-1] if values else None, now)
        return Outcome(
            label,
            error=UpstreamUnavailable(status, reason, retry_after),
            retry_reason="429" if status == 429 else "5xx",
        )
    if status == 408:
        # The upstream gave up waiting for our request: a timeout, not a
        # verdict on the data.  Senders drop pushes answered 408.
        return Outcome(
            label,
            error=UpstreamUnavailable(504, f"upstream answered 408: {reason}"),
            retry_reason="timeout",
        )
    if status in CREDENTIAL_STATUSES:
        return Outcome(
            label,
            error=UpstreamUnavailable(
                502, f"upstream refused the gateway's credentials ({status}): {reason}"
            ),
        )
    if 400 <= status < 500:
        return Outcome(label, error=UpstreamRejected(status, reason))
    if 500 <= status < 600:
        return Outcome(
            label,
            error=UpstreamUnavailable(502, f"upstream answered {status}: {reason}"),
            retry_reason="5xx",
        )
    # 1xx leftovers, redirects (not followed: a push must not be re-sent
    # somewhere the configuration does not name), nonsense.
    return Outcome(label, error=UpstreamUnavailable(502, f"unexpected answer {status} from upstream"))


def failure_outcome(exc: Exception) -> Outcome:
    """
    Classify a request that ended without a status.
    """
    if isinstance(
        exc,
        (OperationTimedOut, DeferredTimeoutError, ierror.TimeoutError, ierror.TCPTimedOutError),
    ):
        return Outcome(
            "timeout",
            error=UpstreamUnavailable(504, f"upstream timed out: {describe(exc)}"),
            retry_reason="timeout",
        )
    if _is_tls_failure(exc):
        # A certificate that does not verify will not verify next time.
        return Outcome(
            "tls_error",
            error=UpstreamUnavailable(502, f"TLS with upstream failed: {describe(exc)}"),
        )
    if isinstance(
        exc,
        (ierror.ConnectError, ierror.DNSLookupError, ierror.ConnectingCancelledError,
         ResponseNeverReceived, RequestTransmissionFailed, ierror.ConnectionClosed),
    ):
        # Checked before ResponseFailed, of which ResponseNeverReceived is
        # a kind: no answer at all is "cannot reach", not "bad answer".
        return Outcome(
            "connection_error",
            error=UpstreamUnavailable(503, f"cannot reach upstream: {describe(exc)}"),
            retry_reason="connection_error",
        )
    if isinstance(exc, ResponseFailed):
        # The connection broke, or the answer was not HTTP, after the
        # upstream started answering.
        return Outcome(
            "connection_error",
            error=UpstreamUnavailable(502, f"bad answer from upstream: {describe(exc)}"),
            retry_reason="connection_error",
        )
    if isinstance(exc, RequestGenerationFailed):
        return Outcome(
            "error", error=UpstreamUnavailable(502, f"could not send the request: {describe(exc)}")
        )
    _log.failure("unexpected failure talking to an upstream", failure=Failure(exc))
    return Outcome(
        "error", error=UpstreamUnavailable(502, f"upstream request failed: {describe(exc)}")
    )


def upstream_reason(body: bytes, fallback: str) -> str:
    """
    The start of an upstream's answer as one short text.
    """
    text = body[: MAX_REASON * 4].decode("utf-8", errors="replace").strip()
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + "..."
    return text or fallback


def _is_tls_failure(exc: BaseException) -> bool:
    if isinstance(exc, (SSL.Error, VerificationError)):
        return True
    return any(f.check(SSL.Error, VerificationError) for f in inner_failures(exc))
