"""
Tenant ids: what a valid one looks like, and which one a request gets.
"""

from sealgw.tenancy._choose import (
    TenantForbidden,
    TenantRequired,
    choose_tenant,
    parse_tenant_header,
)
from sealgw.tenancy._tenant import MAX_TENANT_LENGTH, TenantError, parse_tenant

__all__ = [
    "MAX_TENANT_LENGTH",
    "TenantError",
    "TenantForbidden",
    "TenantRequired",
    "choose_tenant",
    "parse_tenant",
    "parse_tenant_header",
]
