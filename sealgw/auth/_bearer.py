"""
Bearer tokens for twisted.cred: the credentials they become and the
credential factory that reads them from an C{Authorization} header.

Twisted ships Basic and Digest factories only; this one follows the same
L{ICredentialFactory} shape so the rest of the stack stays idiomatic.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attr
from twisted.cred.credentials import ICredentials
from twisted.cred.error import LoginFailed
from twisted.web.iweb import ICredentialFactory
from zope.interface import Attribute, implementer

# Tokens are opaque: seal-proxy users may have any printable ASCII in theirs,
# so anything visible is accepted, not only RFC 6750's b64token alphabet.
_VISIBLE = frozenset(range(0x21, 0x7F))

MAX_TOKEN_LENGTH = 16 * 1024


class IBearerToken(ICredentials):
    """
    A token presented as C{Authorization: Bearer <token>}.
    """

    token = Attribute("The token, a L{str}; never log it.")
    digest = Attribute("SHA-256 of the token's UTF-8 bytes, L{bytes}.")
    fingerprint = Attribute("The first 8 hex digits of C{digest}, for logs.")


def token_digest(token: str) -> bytes:
    """
    The SHA-256 by which tokens are stored, cached and compared.
    """
    return hashlib.sha256(token.encode("utf-8")).digest()


@implementer(IBearerToken)
@attr.frozen(repr=False)
class BearerToken:
    """
    A presented bearer token.  Its C{repr} shows only the fingerprint, so a
    credential that reaches a log line or a traceback does not leak.
    """

    token: str
    digest: bytes = attr.field(
        default=attr.Factory(lambda self: token_digest(self.token), takes_self=True),
        eq=False,
    )

    @property
    def fingerprint(self) -> str:
        return self.digest.hex()[:8]

    def __repr__(self) -> str:
        return f"<BearerToken sha256:{self.fingerprint}>"

    __str__ = __repr__


@implementer(ICredentialFactory)
class BearerCredentialFactory:
    """
    Reads C{Authorization: Bearer <token>}.

    @ivar realm: named in the challenge (C{WWW-Authenticate}).
    """

    scheme = b"bearer"

    def __init__(self, realm: bytes = b"sealgw") -> None:
        self.realm = realm

    def getChallenge(self, request: Any) -> dict[str, bytes]:
        return {"realm": self.realm}

    def decode(self, response: bytes, request: Any) -> BearerToken:
        """
        Turn the part after C{Bearer } into credentials.

        @raise LoginFailed: when it is empty, too long, or holds anything but
            visible ASCII (the message never repeats the value).
        """
        if not response:
            raise LoginFailed("the Bearer token is empty")
        if len(response) > MAX_TOKEN_LENGTH:
            raise LoginFailed(f"the Bearer token is longer than {MAX_TOKEN_LENGTH} bytes")
        if not all(b in _VISIBLE for b in response):
            raise LoginFailed("the Bearer token holds spaces, control or non-ASCII characters")
        return BearerToken(response.decode("ascii"))


def split_authorization(value: bytes) -> tuple[bytes, bytes]:
    """
    Split an C{Authorization} value into its lower-cased scheme and the rest.

    @raise LoginFailed: when there is no scheme.
    """
    scheme, _, rest = value.strip().partition(b" ")
    if not scheme:
        raise LoginFailed("the Authorization header is empty")
    return scheme.lower(), rest.lstrip(b" ")
