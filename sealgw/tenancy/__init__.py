"""
Tenant ids: what a valid one looks like, which one a request gets, and,
for stores without tenants of their own, the label that keeps them apart
(PromQL rewritten on a real parser's syntax tree).
"""

from sealgw.tenancy._choose import (
    TenantConflict,
    TenantForbidden,
    TenantRequired,
    UsernameTenantError,
    choose_tenant,
    parse_tenant_header,
)
from sealgw.tenancy._promql import (
    MAX_NESTING,
    MAX_QUERY_BYTES,
    LabelEnforcementError,
    TenantLabel,
    enforce_query,
    enforce_selector,
)
from sealgw.tenancy._tenant import MAX_TENANT_LENGTH, TenantError, parse_tenant

__all__ = [
    "MAX_NESTING",
    "MAX_QUERY_BYTES",
    "MAX_TENANT_LENGTH",
    "LabelEnforcementError",
    "TenantConflict",
    "TenantError",
    "TenantForbidden",
    "TenantLabel",
    "TenantRequired",
    "UsernameTenantError",
    "choose_tenant",
    "enforce_query",
    "enforce_selector",
    "parse_tenant",
    "parse_tenant_header",
]
