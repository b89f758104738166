"""
Static outbound credentials: what the gateway presents to an upstream.

Values are kept in L{Secret}s and only turned into bytes when a request is
made, so nothing here ever shows a password in a C{repr} or a log line.
"""

from __future__ import annotations

import base64
from typing import Optional

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from sealgw.config import HTTPUpstreamConfig, Secret
from sealgw.credentials._interfaces import ICredentials


@implementer(ICredentials)
class NoCredentials:
    """
    Send no C{Authorization} header (a static one from the upstream's
    C{headers}, if configured, goes out untouched).
    """

    def authorization(self) -> Deferred[Optional[bytes]]:
        return succeed(None)

    def __repr__(self) -> str:
        return "NoCredentials()"


@implementer(ICredentials)
class BasicAuthCredentials:
    """
    HTTP basic authentication, as Mimir and Loki behind an auth proxy and
    seal-proxy's C{remote-write.username/password} expect.
    """

    def __init__(self, username: str, password: Secret) -> None:
        self._username = username
        self._password = password

    def authorization(self) -> Deferred[Optional[bytes]]:
        pair = f"{self._username}:{self._password.value}".encode()
        return succeed(b"Basic " + base64.b64encode(pair))

    def __repr__(self) -> str:
        return f"BasicAuthCredentials({self._username!r}, {self._password!r})"


@implementer(ICredentials)
class BearerCredentials:
    """
    A static bearer token.
    """

    def __init__(self, token: Secret) -> None:
        self._token = token

    def authorization(self) -> Deferred[Optional[bytes]]:
        return succeed(b"Bearer " + self._token.value.encode())

    def __repr__(self) -> str:
        return f"BearerCredentials({self._token!r})"


def credentials_for(config: HTTPUpstreamConfig) -> ICredentials:
    """
    The static credentials an upstream's configuration names.
    """
    if config.basic_auth is not None:
        return BasicAuthCredentials(config.basic_auth.username, config.basic_auth.password)
    if config.bearer_token is not None:
        return BearerCredentials(config.bearer_token)
    return NoCredentials()
