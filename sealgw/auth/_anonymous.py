"""
Listeners with C{auth: none} (the Azure sidecar's C{localhost:8080}):
every request on one is the listener's configured identity, with no
credentials asked.  Only loopback and unix-socket listeners may have it
(L{sealgw.config}), so only this host's processes get that identity.
"""

from __future__ import annotations

from typing import Any, Optional

from sealgw.auth._identity import Identity, Principal
from sealgw.auth._realm import IdentityRealm

#: The checker named in the audit log and metrics for such requests.
LISTENER_CHECKER = "listener"


def listener_identity(request: Any) -> Optional[str]:
    """
    The identity every request on C{request}'s listener has, when the
    listener has C{auth: none}; L{None} when credentials are asked.
    """
    site = getattr(request, "site", None)
    name = getattr(site, "listener_identity", None)
    return name if isinstance(name, str) else None


def anonymous_identity(name: str, realm: IdentityRealm) -> Identity:
    """
    The identity C{name}, with the default tenant and limits.
    """
    return realm.identity(Principal(checker=LISTENER_CHECKER, name=name))
