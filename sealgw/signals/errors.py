"""
Why a push body was refused, with the HTTP status that says so.

Every decoder in L{sealgw.signals} raises only these, so the web layer maps
one exception family to responses and never shows a client a traceback.
"""

from __future__ import annotations

# Messages quote at most this much of any client-supplied text.
_QUOTE_MAX = 64


class PayloadError(Exception):
    """
    A request body that cannot be accepted.

    @ivar status: the HTTP status to answer with.
    @ivar message: what failed and where, fit to show the client.
    """

    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DecodeError(PayloadError):
    """
    The body is not a well-formed, valid message of its format.
    """

    status = 400


class PayloadTooLarge(PayloadError):
    """
    The body, or what it decompresses to, is larger than allowed.
    """

    status = 413


class UnsupportedMediaType(PayloadError):
    """
    The C{Content-Type} names a format this endpoint does not speak.
    """

    status = 415


class BadEncoding(PayloadError):
    """
    The C{Content-Encoding} is not one this endpoint accepts.
    """

    status = 400


def quote(text: str) -> str:
    """
    C{repr} of client-supplied C{text}, shortened so that messages never
    echo large input.
    """
    if len(text) > _QUOTE_MAX:
        return repr(text[:_QUOTE_MAX]) + "..."
    return repr(text)
