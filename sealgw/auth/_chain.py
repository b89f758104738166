"""
Several identity sources for one kind of credential: the first that
recognises it decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer

from sealgw.auth._errors import NotRecognised
from sealgw.auth._identity import AuthError, Principal, Unauthorized


@implementer(ICredentialsChecker)
class FirstRecognises:
    """
    Asks each checker in turn.  A checker that does not know the credential
    fails with L{NotRecognised} and the next is asked; any other answer,
    good or bad, is final.  When none recognises it the token is invalid.

    Twisted's L{Portal} holds one checker per credential interface, which is
    why the sources are chained here rather than registered side by side.
    """

    def __init__(self, checkers: Sequence[Any]) -> None:
        self.checkers = tuple(checkers)
        interfaces: list[Any] = []
        for checker in self.checkers:
            for iface in checker.credentialInterfaces:
                if iface not in interfaces:
                    interfaces.append(iface)
        self.credentialInterfaces = tuple(interfaces)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        # The avatar id is a Principal: richer than the bytes twisted.cred
        # suggests, and only ever handed to sealgw's own realm.
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: Any) -> Principal:
        for checker in self.checkers:
            try:
                principal: Principal = await maybeDeferred(
                    checker.requestAvatarId, credentials
                )
            except NotRecognised:
                continue
            except AuthError as e:
                # Name the source that decided, for the audit log and metrics.
                if e.checker is None:
                    e.checker = getattr(checker, "name", None)
                raise
            return principal
        raise Unauthorized("the token is not recognised")
