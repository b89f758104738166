"""
Entra ID's answers: a token with its expiry, read alike from the v2 token
endpoint (numbers) and from managed identity endpoints (strings), and the
ways asking for one fails, each one line without a secret in it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

import attr

#: The largest token endpoint answer read.  A token is a few KiB.
MAX_ANSWER = 64 * 1024

#: Statuses after which asking again later may work.  Anything else the
#: authority answers with 4xx is a refusal of the settings themselves (a
#: wrong secret, an unknown client or tenant).
TRANSIENT_STATUSES = frozenset({404, 408, 410, 429})

#: What a bearer token may be made of (RFC 6750's b64token).
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@attr.frozen(repr=False)
class Token:
    """
    An access token.  Its C{repr} never shows the value.

    @ivar expires_at: when it expires, on the reactor's clock.
    @ivar refresh_at: when the authority suggests renewing it
        (C{refresh_in}), if it said.
    """

    value: str
    expires_at: float
    refresh_at: Optional[float] = None

    def __repr__(self) -> str:
        return f"<Token expiring at {self.expires_at:.0f}>"

    __str__ = __repr__


class TokenError(Exception):
    """
    No token was had.  C{str()} is one line for the log and C{/health}: it
    never holds a secret or a token.
    """


class TokenRefused(TokenError):
    """
    The authority answered, and said no to these settings: asking again
    will not help until they change (at start-up, sealgw gives up at once).
    """


class TokenUnavailable(TokenError):
    """
    No answer, or one that says to come back later (5xx, 429), or nothing
    usable: worth asking again.
    """


def _one_line(text: str, limit: int = 200) -> str:
    """
    The first sentence of the first line: Entra ID's descriptions go on
    with advice, trace and correlation ids and a timestamp.
    """
    line = " ".join(text.split("\n", 1)[0].split())
    sentence, stop, _ = line.partition(". ")
    line = sentence + "." if stop else line
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _explanation(body: bytes) -> str:
    """
    What an error answer says, in one line: Entra ID's C{error} and the
    first line of its C{error_description} (C{AADSTS7000215: Invalid client
    secret provided.}), or App Service's C{message}.
    """
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    parts = [
        str(doc[key]) for key in ("error", "error_description", "message")
        if isinstance(doc.get(key), (str, int)) and str(doc[key])
    ]
    return _one_line(": ".join(parts))


def _seconds(value: Any) -> Optional[float]:
    """
    A whole number of seconds, given as a number (the v2 endpoint) or a
    string of digits (IMDS, App Service).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().isdigit():
        return float(int(value.strip()))
    return None


def parse_answer(status: int, body: bytes, now: float) -> Token:
    """
    The token an answer carries.

    @param now: the reactor's clock (seconds since the epoch, outside
        tests), which C{expires_in} counts from and C{expires_on} is
        compared with.
    @raise TokenRefused: for a 4xx that names a problem with the settings.
    @raise TokenUnavailable: for any other failure, or a 2xx without a
        usable token.
    """
    if not 200 <= status < 300:
        said = _explanation(body)
        text = f"{status} {said}" if said else str(status)
        if 400 <= status < 500 and status not in TRANSIENT_STATUSES:
            raise TokenRefused(f"refused: {text}")
        raise TokenUnavailable(f"answered {text}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise TokenUnavailable(f"answered {status} with something that is not JSON") from None
    if not isinstance(doc, dict):
        raise TokenUnavailable(f"answered {status} with something that is not a token")
    value = doc.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenUnavailable(f"answered {status} without an access_token")
    if not _TOKEN.fullmatch(value):
        raise TokenUnavailable(f"answered {status} with a token that cannot go in a header")
    token_type = doc.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenUnavailable(f"answered {status} with a token that is not a bearer token")
    expires_in = _seconds(doc.get("expires_in"))
    if expires_in is None:
        expires_on = _seconds(doc.get("expires_on"))
        if expires_on is None:
            raise TokenUnavailable(f"answered {status} without expires_in or expires_on")
        expires_in = expires_on - now
    if expires_in <= 0:
        raise TokenUnavailable(f"answered {status} with a token that has already expired")
    refresh_in = _seconds(doc.get("refresh_in"))
    return Token(
        value,
        expires_at=now + expires_in,
        refresh_at=now + refresh_in if refresh_in is not None and refresh_in > 0 else None,
    )
