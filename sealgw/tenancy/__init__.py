"""
Tenant ids: what a valid one looks like, which one a request gets, and,
for stores without tenants of their own, the label that keeps them apart
(PromQL rewritten on a real parser's syntax tree).
"""

from sealgw.tenancy._bounds import (
    MAX_REPEAT,
    PromQLBounds,
    QueryShape,
    check_bounds,
    check_size,
)
from sealgw.tenancy._choose import (
    TenantConflict,
    TenantForbidden,
    TenantRequired,
    UsernameTenantError,
    choose_tenant,
    parse_tenant_header,
)
from sealgw.tenancy._functions import ALLOWED_FUNCTIONS, REFUSED_FUNCTIONS
from sealgw.tenancy._promql import (
    DEFAULT_BOUNDS,
    MAX_NESTING,
    MAX_QUERY_BYTES,
    LabelEnforcementError,
    TenantLabel,
    enforce_query,
    enforce_selector,
)
from sealgw.tenancy._tenant import MAX_TENANT_LENGTH, TenantError, parse_tenant

__all__ = [
    "ALLOWED_FUNCTIONS",
    "DEFAULT_BOUNDS",
    "MAX_NESTING",
    "MAX_QUERY_BYTES",
    "MAX_REPEAT",
    "MAX_TENANT_LENGTH",
    "PromQLBounds",
    "QueryShape",
    "REFUSED_FUNCTIONS",
    "LabelEnforcementError",
    "TenantConflict",
    "TenantError",
    "TenantForbidden",
    "TenantLabel",
    "TenantRequired",
    "UsernameTenantError",
    "check_bounds",
    "check_size",
    "choose_tenant",
    "enforce_query",
    "enforce_selector",
    "parse_tenant",
    "parse_tenant_header",
]
