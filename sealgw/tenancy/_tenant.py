"""
The tenant id rules shared by Mimir, Loki and Tempo.
"""

from __future__ import annotations

import re

MAX_TENANT_LENGTH = 150
# fullmatch, not match with "$": "$" also matches before a final newline.
_TENANT = re.compile(r"[A-Za-z0-9!\-_.*'()]+")


class TenantError(ValueError):
    """
    A tenant id that no backend would accept.
    """


def parse_tenant(value: str) -> str:
    """
    Return C{value} if it is a valid single tenant id.

    @raise TenantError: naming what is wrong, without echoing long input.
    """
    if not value:
        raise TenantError("tenant id is empty")
    if len(value) > MAX_TENANT_LENGTH:
        raise TenantError(f"tenant id is longer than {MAX_TENANT_LENGTH} characters")
    if value in (".", ".."):
        raise TenantError("tenant id cannot be '.' or '..'")
    if "|" in value:
        raise TenantError("a multi-tenant id (a|b) is not allowed here")
    if not _TENANT.fullmatch(value):
        raise TenantError(
            "tenant id may only contain letters, digits and !-_.*'()"
        )
    return value
