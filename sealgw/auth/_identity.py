"""
What authentication produces and how it fails: the L{Identity} the web layer
codes against, the L{Principal} checkers hand to the realm, and the
L{AuthError} family that carries an HTTP status, headers and an audit reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional, Protocol

import attr
from twisted.cred.error import UnauthorizedLogin
from zope.interface import Interface, implementer

from sealgw.config import RateLimitConfig

CHALLENGE = 'Bearer realm="sealgw"'
INVALID_TOKEN_CHALLENGE = 'Bearer realm="sealgw", error="invalid_token"'


class IIdentity(Interface):
    """
    The avatar interface of sealgw's realm: an authenticated caller.
    """


@implementer(IIdentity)
@attr.frozen
class Identity:
    """
    An authenticated caller, as the realm resolved it.

    @ivar name: who it is, for audit logs, limits and labels.
    @ivar tenants: the tenants it may use; never empty (an identity that
        names none is given the default tenant).
    @ivar checker: which identity source recognised it.
    @ivar limits: the limits that apply to it (its own or the defaults).
    """

    name: str
    tenants: frozenset[str]
    checker: str
    limits: RateLimitConfig


@attr.frozen
class Principal:
    """
    What a checker found, before the realm applies the defaults.

    Checkers return this as the avatar id so the realm need not know where
    an identity came from to fill in its tenants and limits.

    @ivar tenants: the tenants the source names; empty means "none given".
    @ivar limits: the source's own limits, or L{None} for the defaults.
    """

    checker: str
    name: str
    tenants: tuple[str, ...] = ()
    limits: Optional[RateLimitConfig] = None


class AuthError(Exception):
    """
    A request that may not go on.

    @ivar status: the HTTP status to answer with.
    @ivar reason: a short, fixed word for metrics and the audit log.
    @ivar message: text for the response body; it never repeats a credential.
    @ivar headers: response headers such as C{WWW-Authenticate}.
    """

    status = 500
    default_reason = "error"
    #: who was asking, when that is known (a refused client certificate).
    identity_name: Optional[str] = None
    #: which identity source decided, when one did.
    checker: Optional[str] = None
    #: the (well-formed) tenant asked for, when refused for it.
    tenant: Optional[str] = None

    def __init__(
        self,
        message: str,
        reason: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {self.reason}: {self.message}>"


class Unauthorized(AuthError, UnauthorizedLogin):
    """
    401: no credential, a garbled one, or one nobody recognises.

    It is also an L{UnauthorizedLogin} so that checkers speak twisted.cred's
    language while still carrying what the web layer needs.
    """

    status = 401
    default_reason = "invalid_token"

    def __init__(
        self,
        message: str,
        reason: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        reason = reason or self.default_reason
        if headers is None:
            challenge = (
                CHALLENGE if reason in ("missing", "malformed") else INVALID_TOKEN_CHALLENGE
            )
            headers = {"WWW-Authenticate": challenge}
        super().__init__(message, reason, headers)


class Forbidden(AuthError):
    """
    403: a known identity asking for something it may not have.
    """

    status = 403
    default_reason = "forbidden_tenant"


class BadTenant(AuthError):
    """
    400: the tenant header is malformed, missing where required, or names
    several tenants where only one is allowed.
    """

    status = 400
    default_reason = "bad_tenant"


def _retry_after(seconds: float) -> dict[str, str]:
    whole = int(seconds)
    if whole < seconds:
        whole += 1
    return {"Retry-After": str(max(1, whole))}


class IdentityProviderUnavailable(AuthError):
    """
    503: the identity provider could not be asked, so nobody is let in.
    """

    status = 503
    default_reason = "idp_unavailable"

    def __init__(
        self, message: str, retry_after: float = 5.0, reason: Optional[str] = None
    ) -> None:
        super().__init__(message, reason, _retry_after(retry_after))
        self.retry_after = retry_after


class RateLimited(AuthError):
    """
    429: the identity is over one of its limits.

    @ivar retry_after: seconds until the request would be admitted; the
        C{Retry-After} header carries it rounded up to whole seconds.
    """

    status = 429
    default_reason = "rate_limited"

    def __init__(self, message: str, retry_after: float, reason: Optional[str] = None) -> None:
        super().__init__(message, reason, _retry_after(retry_after))
        self.retry_after = retry_after


class Releasable(Protocol):
    """
    Something holding a resource until the request ends.
    """

    def release(self) -> None: ...


class _NoSlot:
    def release(self) -> None:
        pass


@attr.frozen
class Admission:
    """
    A request that was let in.

    @ivar tenant: the value to send upstream in the tenant header.
    """

    identity: Identity
    tenant: str
    _slot: Releasable = attr.field(factory=_NoSlot, eq=False, repr=False)

    def release(self) -> None:
        """
        End the request's concurrency slot; calling it again does nothing.
        """
        self._slot.release()

