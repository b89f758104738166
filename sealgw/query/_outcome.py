"""
What the client of a read hears when the upstream's answer is not one to
pass on as it is: the gateway's one status mapping
(L{sealgw.http.status_verdict}, L{sealgw.http.failure_verdict}, shared
with the push relay), as the read path answers it.

An answer the mapping passes (2xx, the upstream's own 4xx, 429, 503, 504,
other 5xx as 502) is streamed with its body; anything else is answered by
the gateway itself with a L{ReadRefused}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from twisted.web.http_headers import Headers

from sealgw.http import (
    CREDENTIAL_STATUSES,
    Verdict,
    failure_verdict,
    retry_after_header,
    status_verdict,
)

__all__ = [
    "CREDENTIAL_STATUSES",
    "ReadRefused",
    "answer_status",
    "failure_refusal",
    "read_verdict",
    "refusal",
]

_NO_HEADERS = Headers()


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


def _who(api: str) -> str:
    return f"the {api} upstream"


def read_verdict(status: int, headers: Headers, api: str) -> Verdict:
    """
    The verdict on the C{api} upstream's answer with C{status}.  A read
    passes the upstream's own C{Retry-After}, so no date in it is read
    here.
    """
    return status_verdict(status, headers, 0.0, who=_who(api))


def refusal(verdict: Verdict) -> ReadRefused:
    """
    The gateway's own answer for C{verdict}: every 429 and 503 with a
    C{Retry-After}.
    """
    retry_after = verdict.client_retry_after()
    headers = {"Retry-After": retry_after_header(retry_after)} if retry_after is not None else {}
    return ReadRefused(verdict.status, verdict.message, headers)


def answer_status(status: int, api: str) -> int:
    """
    The status to answer the client with for an upstream's C{status}.

    @raise ReadRefused: the answer is not one to pass on; the gateway
        answers instead and the upstream's body is dropped.
    """
    verdict = read_verdict(status, _NO_HEADERS, api)
    if not verdict.passes:
        raise refusal(verdict)
    return verdict.status


def failure_refusal(exc: BaseException, api: str) -> ReadRefused:
    """
    The answer for a read whose upstream request ended without a status.
    """
    return refusal(failure_verdict(exc, who=_who(api)))
