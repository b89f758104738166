"""
Tenancy by label, for stores that keep no tenants of their own (plain
Prometheus, VictoriaMetrics single-node, a shared Azure Monitor
workspace): every selector of a PromQL query, and every series selector
(C{match[]}), is made to carry the tenant's matcher, as prom-label-proxy
does for observatorium.

The query is parsed by promql-parser (Prometheus's grammar, in Rust) and
written back out from the syntax tree (L{sealgw.tenancy._writer}), never
edited as text; the result is parsed once more and checked to hold the
tenant's matcher on every selector before it is let out.  Whatever cannot
be parsed, or cannot be written back faithfully, is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attr
import promql_parser as promql

from sealgw.tenancy._bounds import PromQLBounds, check_bounds, nesting
from sealgw.tenancy._errors import LabelEnforcementError
from sealgw.tenancy._functions import function_refusal
from sealgw.tenancy._tenant import parse_tenant
from sealgw.tenancy._writer import (
    LABEL_NAME,
    QueryWriter,
    match_operator,
    quote,
)

#: The bounds a query is held to by default (L{PromQLBounds}).
DEFAULT_BOUNDS = PromQLBounds()
MAX_NESTING = DEFAULT_BOUNDS.max_nesting
MAX_QUERY_BYTES = DEFAULT_BOUNDS.max_query_bytes

#: How much deeper and longer a query may be as written back than as
#: read: up to two parentheses more per operand, the tenant's matcher on
#: every selector, C{\\u} escapes.
_WRITTEN_NESTING = 3
_WRITTEN_BYTES = 8

#: How much of the parser's message a refusal repeats (the parser quotes
#: the input, which may be large).
_MAX_MESSAGE = 200

#: Go's regexp.QuoteMeta: the characters a regular expression must escape.
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


@attr.frozen
class TenantLabel:
    """
    The matcher every selector gets: C{label="tenant"}, or for a federated
    read of several tenants C{label=~"a|b"} (each tenant escaped).

    @ivar label: the label that carries the tenant in the store.
    @ivar tenants: the tenants the read may see; at least one.
    """

    label: str
    tenants: tuple[str, ...]

    def __attrs_post_init__(self) -> None:
        if not LABEL_NAME.fullmatch(self.label) or self.label.startswith("__"):
            raise ValueError(f"{self.label!r} is not a label name sealgw can enforce")
        if not self.tenants:
            raise ValueError("at least one tenant is needed")
        for tenant in self.tenants:
            parse_tenant(tenant)

    @classmethod
    def parse(cls, label: str, tenant: str) -> TenantLabel:
        """
        The matcher for the tenant header value the gate decided (C{a} or,
        federated, C{a|b}).

        @raise TenantError: for a value that is not one or more tenant ids.
        """
        tenants = tuple(dict.fromkeys(tenant.split("|")))
        for one in tenants:
            parse_tenant(one)
        return cls(label, tenants)

    @property
    def operator(self) -> str:
        return "=" if len(self.tenants) == 1 else "=~"

    @property
    def value(self) -> str:
        if len(self.tenants) == 1:
            return self.tenants[0]
        return "|".join(quote_meta(tenant) for tenant in self.tenants)

    def matches(self, matcher: Any) -> bool:
        """
        Whether a parsed matcher is exactly this one.
        """
        return (
            matcher.name == self.label
            and match_operator(matcher.op) == self.operator
            and matcher.value == self.value
        )

    def __str__(self) -> str:
        return f"{self.label}{self.operator}{quote(self.value)}"


def quote_meta(text: str) -> str:
    """
    C{text} as a regular expression matching exactly it (Go's
    C{regexp.QuoteMeta}).
    """
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def enforce_query(query: str, tenant: TenantLabel, bounds: PromQLBounds = DEFAULT_BOUNDS) -> str:
    """
    C{query} with C{tenant}'s matcher on every selector.

    A matcher the query had on the tenant's label is dropped first,
    whatever it said, so a query can neither widen nor narrow its own
    tenant.

    @raise LabelEnforcementError: the query is over one of C{bounds}
        (L{check_bounds}, before it is parsed), does not parse, calls a
        function not reviewed for label tenancy
        (L{sealgw.tenancy._functions}), or holds what cannot be written
        back.
    """
    expr = _parse(query, bounds)
    rewritten = QueryWriter(tenant).expression(expr)
    _verify(_parse_written(rewritten, bounds), tenant)
    return rewritten


def enforce_selector(
    selector: str, tenant: TenantLabel, bounds: PromQLBounds = DEFAULT_BOUNDS
) -> str:
    """
    A series selector (a C{match[]} of C{series}, C{labels} or label
    values) with C{tenant}'s matcher, as L{enforce_query} does.

    @raise LabelEnforcementError: it is not one plain series selector.
    """
    expr = _parse(selector, bounds)
    if not isinstance(expr, promql.VectorSelector) or expr.offset or expr.at:
        raise LabelEnforcementError(
            "match[] must be a series selector, such as up{job=\"api\"}"
        )
    rewritten = QueryWriter(tenant).selector(expr)
    _verify(_parse_written(rewritten, bounds), tenant)
    return rewritten


def _parse(query: str, bounds: PromQLBounds) -> Any:
    check_bounds(query, bounds)
    return _parsed(query)


def _parse_written(query: str, bounds: PromQLBounds) -> Any:
    """
    Parse what was written, under bounds that leave room for what writing
    adds; its regular expressions are the query's own, checked already.
    """
    size = bounds.max_query_bytes * _WRITTEN_BYTES
    if len(query.encode("utf-8", "surrogatepass")) > size:
        raise LabelEnforcementError(f"the query written back is longer than {size} bytes")
    if nesting(query) > bounds.max_nesting * _WRITTEN_NESTING:
        raise LabelEnforcementError("the query written back is nested too deeply")
    return _parsed(query)


def _parsed(query: str) -> Any:
    try:
        return promql.parse(query)
    except ValueError as e:
        message = str(e)
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + "..."
        raise LabelEnforcementError(f"the query cannot be parsed: {message}") from None


def _selectors(node: Any) -> Iterator[Any]:
    """
    Every vector selector of a parsed query, those of range selectors and
    subqueries included.
    """
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, promql.VectorSelector):
            yield node
        elif isinstance(node, promql.MatrixSelector):
            stack.append(node.vector_selector)
        elif isinstance(node, (promql.SubqueryExpr, promql.ParenExpr, promql.UnaryExpr)):
            stack.append(node.expr)
        elif isinstance(node, promql.Call):
            refusal = function_refusal(node.func.name)
            if refusal is not None:
                raise LabelEnforcementError(refusal)
            stack.extend(node.args)
        elif isinstance(node, promql.AggregateExpr):
            stack.append(node.expr)
            if node.param is not None:
                stack.append(node.param)
        elif isinstance(node, promql.BinaryExpr):
            stack.extend((node.lhs, node.rhs))
        elif not isinstance(node, (promql.NumberLiteral, promql.StringLiteral)):
            raise LabelEnforcementError(f"unsupported expression ({type(node).__name__})")


def _verify(expr: Any, tenant: TenantLabel) -> None:
    """
    Check what was written, as parsed again: each selector holds exactly
    one matcher on the tenant's label, the tenant's own.
    """
    for selector in _selectors(expr):
        on_label = [m for m in selector.matchers.matchers if m.name == tenant.label]
        if (
            selector.matchers.or_matchers
            or len(on_label) != 1
            or not tenant.matches(on_label[0])
        ):
            raise LabelEnforcementError("the query cannot be held to the tenant")

