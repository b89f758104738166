"""
The realm: turns what a checker found into the L{Identity} a request runs
as, filling in the default tenant and the default limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.portal import IRealm
from zope.interface import implementer

from sealgw.auth._identity import Identity, IIdentity, Principal
from sealgw.config import RateLimitConfig


def _logout() -> None:
    pass


@implementer(IRealm)
class IdentityRealm:
    """
    @ivar default_tenant: the tenant of identities whose source names none.
    @ivar default_limits: the limits of identities whose source sets none.
    """

    def __init__(self, default_tenant: str, default_limits: RateLimitConfig) -> None:
        self.default_tenant = default_tenant
        self.default_limits = default_limits

    def identity(self, principal: Principal) -> Identity:
        tenants = frozenset(principal.tenants) or frozenset([self.default_tenant])
        return Identity(
            name=principal.name,
            tenants=tenants,
            checker=principal.checker,
            limits=principal.limits if principal.limits is not None else self.default_limits,
        )

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, Identity, Callable[[], None]]:
        if IIdentity not in interfaces:
            raise NotImplementedError("sealgw's realm only gives out IIdentity avatars")
        return IIdentity, self.identity(avatarId), _logout
