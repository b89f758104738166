"""
Tenant ids: what a valid one looks like, and which one a request gets.
"""

from sealgw.tenancy._choose import (
    TenantConflict,
    TenantForbidden,
    TenantRequired,
    UsernameTenantError,
    choose_tenant,
    parse_tenant_header,
)
from sealgw.tenancy._tenant import MAX_TENANT_LENGTH, TenantError, parse_tenant

__all__ = [
    "MAX_TENANT_LENGTH",
    "TenantConflict",
    "TenantError",
    "TenantForbidden",
    "TenantRequired",
    "UsernameTenantError",
    "choose_tenant",
    "parse_tenant",
    "parse_tenant_header",
]
