"""
What the rest of sealgw sees of the relay: the upstream that takes a push
(L{sealgw.signals.push.Push}, plain data), and the two ways a delivery can
fail.

The two failures are kept apart because senders treat them differently:
a 4xx is never retried by Prometheus, Loki or OTLP exporters, a 5xx or 429
always is.  Turning one into the other either loses data silently or makes
a sender retry for ever (see PROTOCOLS.md, section 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import attr
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from sealgw.signals.push import Push


@attr.frozen
class Delivery:
    """
    An upstream accepted a push (answered 2xx).

    @ivar status: the upstream's status code.
    @ivar body: the upstream's response body, at most C{max_response_body}
        bytes.
    @ivar attempts: how many requests it took, the first included.
    @ivar body_truncated: the body was cut at C{max_response_body}, or could
        not be read in time after the status arrived.  The data was accepted
        all the same; only a caller that forwards C{body} (OTLP's
        C{partial_success}) needs to care.
    @ivar headers: the upstream's response headers that its client is
        told again: remote write 2.0's written counts
        (C{X-Prometheus-Remote-Write-*-Written}), as it sent them.
    """

    status: int
    body: bytes
    attempts: int
    body_truncated: bool = False
    headers: Mapping[str, str] = attr.field(factory=dict)


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
    the credential statuses 401, 403, 407: see L{sealgw.http.status_verdict});
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
    connect, upstream said 503, local disk trouble, the upstream's slots
    are saturated), 504 (timed out, or upstream said 504) or 429 (upstream
    rate limit, retries exhausted; or the tenant is over its share of the
    upstream's slots).
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
