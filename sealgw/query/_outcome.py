"""
What the client of a read hears when the upstream's answer is not one to
pass on as it is, in one place:

    upstream said / what happened       client gets
    2xx                                 the same, body streamed
    401, 403, 407                       502 (the gateway's credentials)
    other 4xx (400, 404, 422, 429 ...)  the same, body streamed
    503, 504                            the same, body streamed
    other 5xx                           502, the upstream's body streamed
    1xx, 3xx, nonsense                  502
    answer larger than the cap          502 (declared), or cut (streamed)
    connect refused, DNS, reset         503
    broken answer                       502
    no status and headers in time       504
    TLS verification failed             502
    outbound credentials unavailable    503

A 5xx is never answered 2xx, and a 4xx of the upstream is never made a
5xx, except the three that say the upstream refused I{the gateway}: the
client authenticated fine, and a 401 would tell Grafana its own
credentials were wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Optional

from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.web.client import (
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

from sealgw.http import CredentialsUnavailable, OperationTimedOut, inner_failures

try:
    from service_identity import VerificationError
except ImportError:  # pragma: no cover - service_identity ships with Twisted[tls]
    VerificationError = SSL.Error  # type: ignore[misc,assignment]

#: Upstream statuses that mean "the upstream refused the gateway".
CREDENTIAL_STATUSES = frozenset({401, 403, 407})


class ReadRefused(Exception):
    """
    A read answered by the gateway itself, before any of an upstream's
    answer was sent.

    @ivar status: the HTTP status.
    @ivar message: one line for the client; never an upstream's address or
        error text, which stay in the gateway's log.
    """

    def __init__(
        self, status: int, message: str, headers: Optional[Mapping[str, str]] = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"<ReadRefused {self.status}: {self.message}>"


def answer_status(status: int, api: str) -> int:
    """
    The status to answer the client with for an upstream's C{status}.

    @raise ReadRefused: the answer is not one to pass on; the gateway
        answers instead and the upstream's body is dropped.
    """
    if 200 <= status < 300:
        return status
    if status in CREDENTIAL_STATUSES:
        raise ReadRefused(502, f"the {api} upstream refused the gateway's credentials ({status})")
    if 400 <= status < 500:
        return status
    if status in (503, 504):
        return status
    if 500 <= status < 600:
        return 502
    raise ReadRefused(502, f"unexpected answer {status} from the {api} upstream")


def failure_refusal(exc: BaseException, api: str) -> ReadRefused:
    """
    The answer for a read whose upstream request ended without a status.
    """
    if isinstance(
        exc,
        (OperationTimedOut, DeferredTimeoutError, ierror.TimeoutError, ierror.TCPTimedOutError),
    ):
        return ReadRefused(504, f"the {api} upstream did not answer in time")
    if isinstance(exc, CredentialsUnavailable):
        return ReadRefused(
            503,
            f"the gateway's credentials for the {api} upstream are not available",
            {"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
        )
    if _is_tls_failure(exc):
        return ReadRefused(502, f"TLS with the {api} upstream failed")
    if isinstance(
        exc,
        (ierror.ConnectError, ierror.DNSLookupError, ResponseNeverReceived,
         RequestTransmissionFailed, ierror.ConnectionClosed),
    ):
        # Checked before ResponseFailed, of which ResponseNeverReceived is
        # a kind: no answer at all is "cannot reach", not "bad answer".
        return ReadRefused(503, f"cannot reach the {api} upstream")
    if isinstance(exc, ResponseFailed):
        return ReadRefused(502, f"bad answer from the {api} upstream")
    return ReadRefused(502, f"the {api} upstream request failed")


def _is_tls_failure(exc: BaseException) -> bool:
    if isinstance(exc, (SSL.Error, VerificationError)):
        return True
    return any(f.check(SSL.Error, VerificationError) for f in inner_failures(exc))
