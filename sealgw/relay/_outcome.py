"""
What one upstream request attempt's ending means for a push: the
gateway's one status mapping (L{sealgw.http.status_verdict},
L{sealgw.http.failure_verdict}, shared with the read path) turned into a
L{Delivery}, an L{UpstreamRejected} or an L{UpstreamUnavailable}, and
whether another attempt may help.
"""

from __future__ import annotations

from typing import Optional

import attr
from twisted.web.http_headers import Headers

from sealgw.http import (
    CREDENTIAL_STATUSES,
    Body,
    SlotRefused,
    Verdict,
    failure_verdict,
    status_verdict,
)
from sealgw.relay._interfaces import Delivery, UpstreamRejected, UpstreamUnavailable
from sealgw.signals.remote_write2 import WRITTEN_HEADERS

__all__ = [
    "CREDENTIAL_STATUSES",
    "MAX_REASON",
    "Outcome",
    "failure_outcome",
    "response_outcome",
    "upstream_reason",
]

#: The longest upstream text carried into an error's C{reason}.
MAX_REASON = 1024


@attr.frozen
class Outcome:
    """
    How one attempt ended.

    @ivar label: the C{status} label for metrics (L{sealgw.http.UNSENT}
        when nothing was sent).
    @ivar retry_reason: why another attempt may help (a metrics label), or
        C{None} when this outcome is final.
    @ivar detail: what happened, for the log only.
    @ivar clients: the failure is the client's business, not the
        operator's: the upstream refused the data, or the tenant is over
        its share of the upstream.
    """

    label: str
    delivery: Optional[Delivery] = None
    error: Optional[UpstreamRejected | UpstreamUnavailable] = None
    retry_reason: Optional[str] = None
    detail: str = ""
    clients: bool = False


def response_outcome(status: int, headers: Headers, body: Body, now: float) -> Outcome:
    """
    Classify an answer from the upstream.

    @param now: the reactor's time, for C{Retry-After} dates.
    """
    verdict = status_verdict(status, headers, now)
    if verdict.delivered:
        return Outcome(
            verdict.label,
            delivery=Delivery(
                status=status,
                body=body.data,
                attempts=1,
                body_truncated=body.truncated,
                headers=passed_on(headers),
            ),
        )
    text = upstream_reason(body.data, "")
    if verdict.rejected:
        return Outcome(
            verdict.label, error=UpstreamRejected(status, text or verdict.message), clients=True
        )
    if verdict.passes and verdict.status in (429, 503):
        # The upstream's own words are the whole story.
        reason = text or verdict.message
    else:
        reason = f"{verdict.message}: {text}" if text else verdict.message
    return _unavailable(verdict, reason)


#: The response headers of a 2xx passed on to the client, by their names
#: in lower case: remote write 2.0's written counts, which a sender reads
#: to know what the store kept.
PASSED_ON = frozenset(name.lower().encode("ascii") for name in WRITTEN_HEADERS)


def passed_on(headers: Headers) -> dict[str, str]:
    """
    Those of C{headers} named in L{PASSED_ON} (the last value of each).

    One walk over the few headers an answer has: 1.4 us a delivery, where
    asking for each name costs 3.5 us (Twisted encodes the name it is
    asked for every time).
    """
    found = {}
    for name, values in headers.getAllRawHeaders():
        if values and name.lower() in PASSED_ON:
            found[name.decode("ascii")] = values[-1].decode("latin-1")
    return found


def failure_outcome(exc: Exception) -> Outcome:
    """
    Classify a request that ended without a status.
    """
    verdict = failure_verdict(exc)
    return _unavailable(verdict, verdict.message, clients=isinstance(exc, SlotRefused))


def _unavailable(verdict: Verdict, reason: str, clients: bool = False) -> Outcome:
    return Outcome(
        verdict.label,
        error=UpstreamUnavailable(verdict.status, reason, verdict.retry_after),
        retry_reason=verdict.retry,
        detail=verdict.detail,
        clients=clients,
    )


def upstream_reason(body: bytes, fallback: str) -> str:
    """
    The start of an upstream's answer as one short text.
    """
    text = body[: MAX_REASON * 4].decode("utf-8", errors="replace").strip()
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + "..."
    return text or fallback
