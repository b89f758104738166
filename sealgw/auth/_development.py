"""
The built-in default configuration's generated token, so a new user can
push data before writing any configuration.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from sealgw.auth._bearer import IBearerToken, token_digest
from sealgw.auth._errors import NotRecognised
from sealgw.auth._identity import Principal
from sealgw.config import Secret


@implementer(ICredentialsChecker)
class DevelopmentTokenChecker:
    """
    Recognises C{Config.development_token} as the identity C{development},
    which gets the default tenant.
    """

    credentialInterfaces = (IBearerToken,)
    name = "development"

    def __init__(self, token: Secret) -> None:
        self._digest = token_digest(token.value)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        # The avatar id is a Principal: richer than the bytes twisted.cred
        # suggests, and only ever handed to sealgw's own realm.
        if hmac.compare_digest(self._digest, credentials.digest):
            return succeed(Principal(self.name, "development"))
        return fail(NotRecognised())
