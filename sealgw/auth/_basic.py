"""
HTTP Basic credentials whose password is a token, for clients that can
send only Basic auth (Promtail, Grafana Alloy, python-logging-loki,
Prometheus's C{basic_auth}), used the way Grafana Cloud is used: the
username names a tenant (or is empty), the password is an API token.

The password becomes an L{IBearerToken}, so every identity source that
accepts a bearer token accepts it unchanged; the username only chooses
among the tenants that token's identity may use (L{sealgw.tenancy}).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import attr
from twisted.cred.error import LoginFailed
from twisted.web.iweb import ICredentialFactory
from zope.interface import Attribute, implementer

from sealgw.auth._bearer import _VISIBLE, MAX_TOKEN_LENGTH, BearerToken, IBearerToken

# Tokens follow the Bearer rule (visible ASCII); usernames are tenant ids or
# empty, so this leaves room for any token and a generous username.
MAX_USERNAME_LENGTH = 1024
MAX_BASIC_LENGTH = 4 * ((MAX_USERNAME_LENGTH + 1 + MAX_TOKEN_LENGTH + 2) // 3)

BASIC_CHALLENGE = 'Basic realm="sealgw", charset="UTF-8"'


class IBasicToken(IBearerToken):
    """
    A token presented as the password of C{Authorization: Basic}.
    """

    username = Attribute(
        "The username, a L{str}: a tenant choice, or empty for none; never log it."
    )


@implementer(IBasicToken)
@attr.frozen(repr=False)
class BasicToken(BearerToken):
    """
    A presented Basic username and token.  Like L{BearerToken}, its C{repr}
    shows only the token's fingerprint, and never the username.
    """

    username: str = attr.field(default="", kw_only=True)

    def __repr__(self) -> str:
        return f"<BasicToken sha256:{self.fingerprint}>"

    __str__ = __repr__


@implementer(ICredentialFactory)
class BasicTokenCredentialFactory:
    """
    Reads C{Authorization: Basic base64(username:token)}.

    Twisted's own C{BasicCredentialFactory} decodes base64 leniently
    (skipping what is not base64) and yields a username and password for
    password checkers; sealgw's checkers want a token, and a garbled header
    should be refused, not guessed at.
    """

    scheme = b"basic"

    def __init__(self, realm: bytes = b"sealgw") -> None:
        self.realm = realm

    def getChallenge(self, request: Any) -> dict[str, bytes]:
        return {"realm": self.realm, "charset": b"UTF-8"}

    def decode(self, response: bytes, request: Any) -> BasicToken:
        """
        Turn the part after C{Basic } into credentials.

        @raise LoginFailed: when it is empty, too long, not base64, has no
            C{:}, or its password is not a well-formed token; the message
            never repeats either part.
        """
        if not response:
            raise LoginFailed("the Basic credentials are empty")
        if len(response) > MAX_BASIC_LENGTH:
            raise LoginFailed(f"the Basic credentials are longer than {MAX_BASIC_LENGTH} bytes")
        try:
            raw = base64.b64decode(response + b"=" * (-len(response) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise LoginFailed("the Basic credentials are not valid base64") from None
        username, colon, password = raw.partition(b":")
        if not colon:
            raise LoginFailed("the Basic credentials have no ':' between username and password")
        if not password:
            raise LoginFailed("the Basic password (the token) is empty")
        if len(password) > MAX_TOKEN_LENGTH:
            raise LoginFailed(f"the Basic password is longer than {MAX_TOKEN_LENGTH} bytes")
        if not all(b in _VISIBLE for b in password):
            raise LoginFailed(
                "the Basic password holds spaces, control or non-ASCII characters"
            )
        if len(username) > MAX_USERNAME_LENGTH:
            raise LoginFailed(f"the Basic username is longer than {MAX_USERNAME_LENGTH} bytes")
        try:
            user = username.decode("utf-8")
        except UnicodeDecodeError:
            raise LoginFailed("the Basic username is not UTF-8") from None
        return BasicToken(password.decode("ascii"), username=user)
