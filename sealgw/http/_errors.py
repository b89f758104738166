"""
How an outbound request can fail besides Twisted's own connection and
protocol errors, and one-line descriptions of all of them.
"""

from __future__ import annotations

from twisted.python.failure import Failure


class CredentialsUnavailable(Exception):
    """
    The outbound credentials could not be had, so the request was not sent.

    The message never carries the provider's own error text: a token
    endpoint's answer could be in it.

    @ivar retry_after: seconds until the credentials may be there again (a
        provider's failure says so with a C{retry_after} of its own), for
        the client's C{Retry-After}.
    """

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BodyReadFailed(Exception):
    """
    The status and headers arrived but the body did not, in time or at all.

    @ivar cause: the timeout or connection failure behind it.
    @ivar partial: what had arrived (always empty for a streamed body: it
        went to the consumer).
    """

    def __init__(self, cause: BaseException, partial: bytes = b"") -> None:
        super().__init__(f"reading the response body failed: {describe(cause)}")
        self.cause = cause
        self.partial = partial


def inner_failures(exc: BaseException) -> list[Failure]:
    """
    The failures a Twisted wrapper exception (C{ResponseFailed},
    C{ResponseNeverReceived}, ...) carries, or none.
    """
    reasons = getattr(exc, "reasons", None)
    return list(reasons) if isinstance(reasons, list) else []


def describe(exc: BaseException) -> str:
    """
    A one-line description; Twisted's wrapper exceptions otherwise print
    as a list of Failure reprs.
    """
    inner = inner_failures(exc)
    if inner:
        return "; ".join(
            f.getErrorMessage() or (f.type.__name__ if f.type else "error") for f in inner
        )
    return str(exc) or type(exc).__name__
