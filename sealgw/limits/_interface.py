"""
The seam between the gate and whatever keeps count of each identity's
requests: one process's buckets, or a store every process shares.
"""

from __future__ import annotations

from typing import Any, Union

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from sealgw.config import RateLimitConfig

LimitKey = tuple[str, str, str]
"""Whose limits count a request: (kind, checker, identity name); the kind
is C{"push"} or C{"read"}, each an allowance of its own."""

#: How a refusal names what was counted, per kind of request.
NOUNS = {"push": "requests", "read": "reads"}


class OverLimit(Exception):
    """
    A request refused by one of its identity's limits.

    @ivar retry_after: seconds until it would be admitted.
    @ivar reason: C{rate_limited}, C{byte_rate_limited} or
        C{concurrency_limited}, for the audit log and metrics.
    """

    def __init__(self, message: str, retry_after: float, reason: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason


def refusal(reason: str, key: LimitKey, limits: RateLimitConfig, retry_after: float) -> OverLimit:
    """
    The refusal for C{reason}, worded the same whichever limiter decided.
    """
    noun = NOUNS.get(key[0], "requests")
    if reason == "concurrency_limited":
        message = f"more than {limits.max_concurrent} {noun} in flight for this identity"
    elif reason == "byte_rate_limited":
        message = (
            f"more than {limits.bytes_per_second} request-body bytes a second for this identity"
        )
    else:
        message = f"more than {limits.requests_per_second:g} {noun} a second for this identity"
    return OverLimit(message, retry_after, reason)


class ISlot(Interface):
    """
    One admitted request, holding its place among the identity's requests
    in flight until it ends.
    """

    def release() -> None:
        """
        The request has ended; a second call does nothing.
        """


class ILimiter(Interface):
    """
    Decides whether an identity's request is within its limits.
    """

    def admit(
        key: LimitKey, limits: RateLimitConfig, body_size: int
    ) -> Union[ISlot, Deferred[ISlot]]:
        """
        Admit one request of C{body_size} bytes, or refuse it.

        Nothing is taken from any allowance unless every limit allows the
        request, so a refused request costs the identity nothing.  A
        limiter that decides in this process answers at once; one that
        asks a store answers with a Deferred.

        @raise OverLimit: (or fails with it) when a limit refuses.
        """

    def health() -> dict[str, Any]:
        """
        The limiter's state for C{/health}: C{status} and C{mode}.
        """

    share = Attribute(
        "How many worker processes of this host enforce each limit side by side "
        "when this process decides alone; set before the first request."
    )
