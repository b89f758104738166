"""
What the rest of sealgw sees of the relay: a push, the upstream that takes
it, and the two ways a delivery can fail.

The two failures are kept apart because senders treat them differently:
a 4xx is never retried by Prometheus, Loki or OTLP exporters, a 5xx or 429
always is.  Turning one into the other either loses data silently or makes
a sender retry for ever (see PROTOCOLS.md, section 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Optional

import attr
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

#: The signals a push can carry; the file upstream uses them as folder names.
SIGNALS = frozenset(
    {"remote_write", "seal", "loki", "otlp_traces", "otlp_metrics", "otlp_logs"}
)


@attr.frozen
class Push:
    """
    One request body on its way upstream, already authenticated, given a
    tenant and checked by the signal's codec.

    @ivar signal: one of L{SIGNALS}.
    @ivar tenant: sent as the configured tenant header, replacing whatever
        else would have been sent; C{None} sends no tenant header unless the
        upstream's static C{headers} name one.
    @ivar body: the bytes to POST, as they are.
    @ivar path: appended to the upstream URL (before any query string).
    @ivar extra_headers: per-signal protocol headers such as
        C{X-Prometheus-Remote-Write-Version}.  They can never set the tenant
        header, C{Authorization}, C{Host} or the framing headers.
    @ivar records: the decoded data as JSON-able dicts; only the file
        upstream calls it, B{from a worker thread}, so it must be a pure
        function of data it closes over (decode the body, touch no reactor).
    @ivar received_at: C{reactor.seconds()} when the request arrived; the
        retry deadline counts from here.  C{0.0} means "when C{deliver} was
        called".
    """

    signal: str
    tenant: Optional[str]
    body: bytes
    content_type: str
    content_encoding: Optional[str]
    path: str = ""
    extra_headers: Mapping[str, str] = attr.field(factory=dict)
    records: Optional[Callable[[], Iterable[dict]]] = attr.field(default=None, eq=False)
    received_at: float = 0.0


@attr.frozen
class Delivery:
    """
    An upstream accepted a push (answered 2xx).

    @ivar status: the upstream's status code.
    @ivar headers: the upstream's response headers, names lower-cased, the
        last value of repeated headers.
    @ivar body: the upstream's response body, at most C{max_response_body}
        bytes.
    @ivar attempts: how many requests it took, the first included.
    @ivar body_truncated: the body was cut at C{max_response_body}, or could
        not be read in time after the status arrived.  The data was accepted
        all the same; only a caller that forwards C{body} (OTLP's
        C{partial_success}) needs to care.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int
    body_truncated: bool = False


class DeliveryFailed(Exception):
    """
    A push was not delivered; the subclass says whether the client may
    send it again.

    @ivar status: the status to answer the client with.
    @ivar reason: short text for the client and the log; never a secret.
    @ivar retry_after: seconds the upstream asked to wait, if it said so;
        answer it as C{Retry-After}.
    """

    def __init__(self, status: int, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class UpstreamRejected(DeliveryFailed):
    """
    The upstream refused the data itself (a 4xx other than 408, 429 and
    the credential statuses 401, 403, 407: see L{sealgw.relay._outcome});
    sending it again will not help, so the client must be told the same
    status and must not retry.  C{status} is the upstream's 4xx, C{reason}
    the start of its answer (at most ~1 KiB), C{retry_after} always
    C{None}.
    """

    def __str__(self) -> str:
        return f"upstream rejected the push with {self.status}: {self.reason}"


class UpstreamUnavailable(DeliveryFailed):
    """
    The push was not delivered, and sending it again later may work; the
    client must get a status it retries on: 502 (upstream 5xx, a broken or
    unexpected answer, upstream refused our credentials), 503 (cannot
    connect, upstream said 503, local disk trouble), 504 (timed out) or
    429 (upstream rate limit, retries exhausted).
    """

    def __str__(self) -> str:
        return f"upstream unavailable ({self.status}): {self.reason}"


class IUpstream(Interface):
    """
    Somewhere pushes go.
    """

    name = Attribute("The upstream's name in the configuration, for logs and metrics.")

    def deliver(push: Push) -> Deferred[Delivery]:
        """
        Deliver one push.

        Fires with a L{Delivery} when the upstream answered 2xx; fails with
        L{UpstreamRejected} when it refused the data (4xx, never retried),
        or L{UpstreamUnavailable} when retries ran out, time ran out, the
        upstream could not be reached or answered 5xx.  Cancelling the
        Deferred (the client went away) cancels the upstream request and
        any wait before a retry; it then fails with C{CancelledError}.
        """

    def close() -> Deferred[None]:
        """
        Stop: drop cached connections, let work already started finish.
        """


class IRelayMetrics(Interface):
    """
    Where upstream request outcomes are counted.  L{RelayMetrics} puts them
    in a C{prometheus_client} registry; tests can count them in a list.
    """

    def observe(upstream: str, status: str, seconds: float) -> None:
        """
        One request attempt ended.

        @param status: the upstream's status code as text (C{"204"}), or
            C{"timeout"}, C{"connection_error"}, C{"tls_error"},
            C{"error"}, C{"cancelled"} when there was none.
        """

    def retried(upstream: str, reason: str) -> None:
        """
        A retry is about to be waited for.

        @param reason: C{"429"}, C{"5xx"}, C{"timeout"} or
            C{"connection_error"}.
        """
