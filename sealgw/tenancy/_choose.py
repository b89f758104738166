"""
Which tenant a request runs as: the one the identity may use, as named in
the tenant header or the Basic auth username, checked against what the
identity is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Optional

from sealgw.tenancy._tenant import TenantError, parse_tenant


class TenantRequired(TenantError):
    """
    The identity may use several tenants and the request named none.
    """


class UsernameTenantError(TenantError):
    """
    The Basic auth username is not a tenant id; the message says so
    without repeating it.
    """


class TenantConflict(TenantError):
    """
    The tenant header and the Basic auth username name different tenants.
    """


class TenantForbidden(Exception):
    """
    A well-formed tenant the identity may not use.

    @ivar tenant: the tenant asked for (already known to be a valid id, so
        safe to show).
    """

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} is not allowed for this identity")
        self.tenant = tenant


def parse_tenant_header(value: str, *, federation: bool = False) -> tuple[str, ...]:
    """
    The tenants a tenant header value names, in order, without repeats.

    @param federation: whether C{a|b} (a query across tenants) is allowed.
    @raise TenantError: when a tenant id is malformed or C{a|b} is not allowed.
    """
    if "|" not in value:
        return (parse_tenant(value),)
    if not federation:
        raise TenantError("a multi-tenant id (a|b) is not allowed here")
    tenants: list[str] = []
    for part in value.split("|"):
        tenant = parse_tenant(part)
        if tenant not in tenants:
            tenants.append(tenant)
    return tuple(tenants)


def choose_tenant(
    values: Optional[Sequence[str]],
    allowed: Set[str],
    *,
    header: str = "X-Scope-OrgID",
    federation: bool = False,
    username: Optional[str] = None,
) -> str:
    """
    Decide the tenant header value to send upstream.

    The Basic auth username, when not empty, names a tenant exactly as the
    header does (clients such as Prometheus's C{basic_auth} can set nothing
    else); when both are sent they must agree.

    @param values: the tenant header's values on the request (L{None} or
        empty when it was not sent).
    @param allowed: the tenants the identity may use.
    @param federation: whether this request may name several tenants.
    @param username: the Basic auth username; L{None} when the request did
        not use Basic auth, empty for "no choice".
    @raise TenantRequired: nothing named and several tenants allowed.
    @raise TenantError: a malformed header, sent twice, or C{a|b} refused.
    @raise UsernameTenantError: a username that is not a tenant id.
    @raise TenantConflict: the header and the username disagree.
    @raise TenantForbidden: a tenant outside C{allowed}.
    """
    tenants: Optional[tuple[str, ...]] = None
    if values:
        if len(values) > 1:
            raise TenantError(f"{header} was sent more than once")
        tenants = parse_tenant_header(values[0], federation=federation)
    if username:
        try:
            chosen = parse_tenant_header(username, federation=federation)
        except TenantError as e:
            raise UsernameTenantError(f"the Basic auth username: {e}") from None
        if tenants is None:
            tenants = chosen
        elif set(tenants) != set(chosen):
            raise TenantConflict(
                f"the Basic auth username and {header} name different tenants; "
                "send one of them, or the same tenant in both"
            )
    if tenants is None:
        if len(allowed) == 1:
            (only,) = allowed
            return only
        if not allowed:
            raise TenantForbidden("(none)")
        if username is not None:
            raise TenantRequired(
                f"{header} or the Basic auth username is required: "
                "this identity may use several tenants"
            )
        raise TenantRequired(
            f"{header} is required: this identity may use several tenants"
        )
    for tenant in tenants:
        if tenant not in allowed:
            raise TenantForbidden(tenant)
    return "|".join(tenants)
