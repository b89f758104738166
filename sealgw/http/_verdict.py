"""
What the ending of one upstream request means for the client, for pushes
and reads alike: the one status mapping of the gateway.

    upstream said / what happened      client gets          relay retries
    2xx                                the same             -
    401, 403, 407                      502                  no
    408                                504                  yes
    429                                429, Retry-After     yes
    other 4xx (400, 404, 413, 422 ...) the same             no
    503                                503, Retry-After     yes
    504                                504                  yes
    other 5xx                          502                  yes
    1xx, 3xx, nonsense                 502                  no
    connect refused, DNS, reset        503, Retry-After     yes
    a broken answer                    502                  yes
    connect/headers timeout            504                  yes
    TLS verification failed            502                  no
    request could not be written       502                  no
    outbound credentials unavailable   503, Retry-After     no
    tenant's share full, queue full    429, Retry-After     no
    upstream's slots full, queue full  503, Retry-After     no
    anything unforeseen                502                  no

An upstream 5xx or a failure is never answered 2xx; an upstream 4xx is
never made a 5xx, save four that are about the gateway, not the client's
request: 401, 403 and 407 say the upstream refused I{the gateway's}
credentials (the client authenticated fine, and a 401 would tell it its
own token is bad; push senders would drop their data for good), 408 that
the upstream gave up waiting for the gateway's request (a timeout, not a
verdict on the data; senders drop pushes answered 408).  Every 429 and 503
carries a C{Retry-After}: the upstream's, or L{DEFAULT_RETRY_AFTER}.

Senders never retry a 4xx (PROTOCOLS.md, section 2), so a 4xx reaches a
push client only when the upstream refused the data itself.
"""

from __future__ import annotations

import math
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

from sealgw._retry import parse_retry_after
from sealgw.http._errors import CredentialsUnavailable, describe, inner_failures
from sealgw.http._slots import SlotRefused
from sealgw.http._timeout import OperationTimedOut

try:
    from service_identity import VerificationError
except ImportError:  # pragma: no cover - service_identity ships with Twisted[tls]
    VerificationError = SSL.Error  # type: ignore[misc,assignment]

_log = Logger()

#: Upstream statuses that mean "the upstream refused I{the gateway's}
#: credentials".
CREDENTIAL_STATUSES = frozenset({401, 403, 407})

#: The C{Retry-After} of a 429 or 503 that has none of its own (the
#: upstream gave none, or the gateway could not reach it), in seconds:
#: long enough that a fleet of senders does not hammer an upstream on its
#: way back, short enough that data keeps flowing.
DEFAULT_RETRY_AFTER = 5.0

#: A metrics label for a request that was never sent (no credentials, no
#: slot): it took no upstream time to count.
UNSENT = ""


@attr.frozen
class Verdict:
    """
    How one upstream request ended, for the client.

    @ivar status: the status the client gets.
    @ivar label: the C{status} label of the upstream request metrics: the
        upstream's status (C{"204"}, C{"invalid"} outside 100-599), or
        C{timeout}, C{connection_error}, C{tls_error}, C{error}; L{UNSENT}
        when nothing was sent.
    @ivar message: one line for the client, naming the upstream as the
        caller did; never an upstream's address or error text.
    @ivar passes: the upstream's own answer goes to the client with it
        (a read streams its body, a push quotes its text).
    @ivar retry: why another attempt may help (the relay's C{reason}
        label: C{429}, C{5xx}, C{timeout}, C{connection_error}), or L{None}
        when it will not.
    @ivar retry_after: when to try again, as the upstream (or the gateway
        itself, for a slot or credentials) said; L{None} when nobody did.
    @ivar detail: what happened, for the gateway's log only.
    """

    status: int
    label: str
    message: str
    passes: bool = False
    retry: Optional[str] = None
    retry_after: Optional[float] = None
    detail: str = ""

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    @property
    def rejected(self) -> bool:
        """
        The upstream refused the request itself: the same 4xx, final.
        """
        return self.passes and 400 <= self.status < 500 and self.status != 429

    def client_retry_after(self) -> Optional[float]:
        """
        The C{Retry-After} the client gets, in seconds: every 429 and 503
        has one.
        """
        if self.status not in (429, 503):
            return None
        return self.retry_after if self.retry_after is not None else DEFAULT_RETRY_AFTER


def retry_after_header(seconds: float) -> str:
    """
    C{seconds} as a C{Retry-After} value: whole seconds, rounded up, at
    least 1.
    """
    return str(max(1, math.ceil(seconds)))


def status_verdict(
    status: int, headers: Headers, now: float, who: str = "upstream"
) -> Verdict:
    """
    What an upstream's answer with C{status} means.

    @param now: the reactor's time, for C{Retry-After} dates.
    @param who: the upstream as messages name it (C{"the loki upstream"}).
    """
    # The status is the upstream's to choose, any integer Twisted parsed;
    # a label gets only the ones HTTP defines.
    label = str(status) if 100 <= status <= 599 else "invalid"
    if 200 <= status < 300:
        return Verdict(status, label, "", passes=True)
    answered = f"{who} answered {status}"
    if status in (429, 503):
        values = headers.getRawHeaders(b"retry-after")
        retry_after = _retry_after(values[-1] if values else None, now)
        retry = "429" if status == 429 else "5xx"
        return Verdict(status, label, answered, passes=True, retry=retry, retry_after=retry_after)
    if status == 408:
        return Verdict(504, label, f"{answered}: it gave up waiting for the request",
                       retry="timeout")
    if status in CREDENTIAL_STATUSES:
        return Verdict(502, label, f"{who} refused the gateway's credentials ({status})")
    if 400 <= status < 500:
        return Verdict(status, label, answered, passes=True)
    if status == 504:
        return Verdict(504, label, answered, passes=True, retry="5xx")
    if 500 <= status < 600:
        return Verdict(502, label, answered, passes=True, retry="5xx")
    # 1xx leftovers, redirects (never followed: a request must not go
    # somewhere the configuration does not name), nonsense.
    return Verdict(502, label, f"unexpected answer {status} from {who}")


def failure_verdict(exc: BaseException, who: str = "upstream") -> Verdict:
    """
    What an upstream request that ended without a status means.
    """
    detail = describe(exc)
    if isinstance(exc, SlotRefused):
        return Verdict(exc.status, UNSENT, exc.message, retry_after=exc.retry_after,
                       detail=detail)
    if isinstance(exc, CredentialsUnavailable):
        return Verdict(
            503, UNSENT, f"the gateway's credentials for {who} are not available",
            retry_after=exc.retry_after, detail=detail,
        )
    if isinstance(
        exc,
        (OperationTimedOut, DeferredTimeoutError, ierror.TimeoutError, ierror.TCPTimedOutError),
    ):
        return Verdict(504, "timeout", f"{who} timed out", retry="timeout", detail=detail)
    if _is_tls_failure(exc):
        # A certificate that does not verify will not verify next time.
        return Verdict(502, "tls_error", f"TLS with {who} failed", detail=detail)
    if isinstance(
        exc,
        (ierror.ConnectError, ierror.DNSLookupError, ierror.ConnectingCancelledError,
         ResponseNeverReceived, RequestTransmissionFailed, ierror.ConnectionClosed),
    ):
        # Checked before ResponseFailed, of which ResponseNeverReceived is
        # a kind: no answer at all is "cannot reach", not "bad answer".
        return Verdict(503, "connection_error", f"cannot reach {who}",
                       retry="connection_error", detail=detail)
    if isinstance(exc, ResponseFailed):
        # The connection broke, or the answer was not HTTP, after the
        # upstream started answering.
        return Verdict(502, "connection_error", f"bad answer from {who}",
                       retry="connection_error", detail=detail)
    if isinstance(exc, RequestGenerationFailed):
        return Verdict(502, "error", f"could not send the request to {who}", detail=detail)
    _log.failure("unexpected failure talking to {who}", failure=Failure(exc), who=who)
    return Verdict(502, "error", f"{who} request failed", detail=detail)


def _retry_after(value: Optional[bytes], now: float) -> Optional[float]:
    if value is None:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return parse_retry_after(text, now)


def _is_tls_failure(exc: BaseException) -> bool:
    if isinstance(exc, (SSL.Error, VerificationError)):
        return True
    return any(f.check(SSL.Error, VerificationError) for f in inner_failures(exc))
