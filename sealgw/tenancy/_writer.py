"""
Writing a parsed PromQL query back out, with a tenant's matcher on every
selector: every string quoted here, every operand that is not a single
term parenthesised, so that the text parses to the same tree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Optional

import promql_parser as promql

from sealgw.tenancy._errors import LabelEnforcementError
from sealgw.tenancy._functions import function_refusal

if TYPE_CHECKING:
    from sealgw.tenancy._promql import TenantLabel


#: A label name as the writer writes one; others (Prometheus 3's quoted
#: UTF-8 names) are refused.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_FUNCTION_NAME = re.compile(r"[a-z_][a-z0-9_]*")

#: Binary operators, and the aggregations, as written back.  Anything the
#: parser knows and this module does not is refused rather than guessed.
BINARY_OPERATORS = frozenset(
    "+ - * / % ^ == != > < >= <= and or unless atan2".split()
)
AGGREGATIONS = frozenset(
    "sum avg count min max group stddev stdvar topk bottomk count_values quantile "
    "limitk limit_ratio".split()
)

# The parser's enums compare equal but do not hash: pairs, not a dict.
MATCH_OPERATORS = (
    (promql.MatchOp.Equal, "="),
    (promql.MatchOp.NotEqual, "!="),
    (promql.MatchOp.Re, "=~"),
    (promql.MatchOp.NotRe, "!~"),
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def quote(text: str) -> str:
    """
    C{text} as a PromQL double-quoted string, in ASCII: printable
    characters as they are (but C{"} and C{\\}), everything else as a
    C{\\u} or C{\\U} escape, which Prometheus's lexer reads back to the
    same text.
    """
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


class QueryWriter:
    """
    Writes a parsed query back out with the tenant's matcher on every
    selector.  Every operand that is not a single term (a selector without
    modifiers, a call, an aggregation, a literal, a parenthesis) is
    parenthesised, so the text parses to this tree whatever the operators'
    precedence, and writing the result again gives the same text.
    """

    def __init__(self, tenant: TenantLabel) -> None:
        self.tenant = tenant

    def expression(self, node: Any) -> str:
        if isinstance(node, promql.VectorSelector):
            return self.selector(node) + _modifiers(node.offset, node.at)
        if isinstance(node, promql.MatrixSelector):
            inner = node.vector_selector
            return (
                f"{self.selector(inner)}[{_duration(node.range)}]"
                + _modifiers(inner.offset, inner.at)
            )
        if isinstance(node, promql.SubqueryExpr):
            if node.range is None:
                raise LabelEnforcementError("a subquery needs a range")
            step = _duration(node.step) if node.step else ""
            return (
                f"{self.operand(node.expr)}[{_duration(node.range)}:{step}]"
                + _modifiers(node.offset, node.at)
            )
        if isinstance(node, promql.ParenExpr):
            return f"({self.expression(node.expr)})"
        if isinstance(node, promql.UnaryExpr):
            return f"-{self.operand(node.expr)}"
        if isinstance(node, promql.NumberLiteral):
            return _number(node.val)
        if isinstance(node, promql.StringLiteral):
            return quote(node.val)
        if isinstance(node, promql.Call):
            name = node.func.name
            if not _FUNCTION_NAME.fullmatch(name):
                raise LabelEnforcementError(f"unsupported function {name!r}")
            refusal = function_refusal(name)
            if refusal is not None:
                raise LabelEnforcementError(refusal)
            args = ", ".join(self.expression(arg) for arg in node.args)
            return f"{name}({args})"
        if isinstance(node, promql.AggregateExpr):
            return self._aggregation(node)
        if isinstance(node, promql.BinaryExpr):
            return self._binary(node)
        raise LabelEnforcementError(f"unsupported expression ({type(node).__name__})")

    def operand(self, node: Any) -> str:
        """
        C{node} as an operand: in parentheses unless it is a single term.
        """
        text = self.expression(node)
        if isinstance(node, (promql.ParenExpr, promql.Call, promql.AggregateExpr)):
            return text
        if isinstance(node, promql.StringLiteral):
            return text
        if isinstance(node, promql.NumberLiteral) and not node.val < 0:
            return text
        if isinstance(node, promql.VectorSelector) and not node.offset and node.at is None:
            return text
        return f"({text})"

    def selector(self, node: Any) -> str:
        """
        A vector selector's braces: its metric name as a C{__name__}
        matcher (which no keyword can be mistaken for), its matchers but
        those on the tenant's label, then the tenant's.
        """
        matchers = node.matchers
        if matchers.or_matchers:
            raise LabelEnforcementError("'or' inside a selector's braces is not supported")
        parts = []
        if node.name is not None:
            parts.append(f"__name__={quote(node.name)}")
        for matcher in matchers.matchers:
            if matcher.name == self.tenant.label:
                continue
            parts.append(_label(matcher.name) + match_operator(matcher.op) + quote(matcher.value))
        parts.append(str(self.tenant))
        return "{" + ", ".join(parts) + "}"

    def _aggregation(self, node: Any) -> str:
        op = str(node.op)
        if op not in AGGREGATIONS:
            raise LabelEnforcementError(f"unsupported aggregation {op!r}")
        grouping = ""
        modifier = node.modifier
        if modifier is not None:
            word = "by" if modifier.type == promql.AggModifierType.By else "without"
            grouping = f" {word} ({_labels(modifier.labels)}) "
        args = [self.expression(node.expr)]
        if node.param is not None:
            args.insert(0, self.expression(node.param))
        return f"{op}{grouping}({', '.join(args)})"

    def _binary(self, node: Any) -> str:
        op = str(node.op)
        if op not in BINARY_OPERATORS:
            raise LabelEnforcementError(f"unsupported operator {op!r}")
        words = [op]
        modifier = node.modifier
        if modifier is not None:
            fill = modifier.fill_values
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise LabelEnforcementError("fill() modifiers are not supported")
            if modifier.return_bool:
                words.append("bool")
            card = modifier.card
            group = ""
            if card == promql.VectorMatchCardinality.ManyToOne:
                group = f"group_left({_labels(modifier.group_labels or [])})"
            elif card == promql.VectorMatchCardinality.OneToMany:
                group = f"group_right({_labels(modifier.group_labels or [])})"
            matching = modifier.matching
            if matching is not None:
                word = "on" if matching.type == promql.LabelModifierType.Include else "ignoring"
                if word == "on" or matching.labels or group:
                    words.append(f"{word}({_labels(matching.labels)})")
            elif group:
                words.append("ignoring()")
            if group:
                words.append(group)
        return f"{self.operand(node.lhs)} {' '.join(words)} {self.operand(node.rhs)}"


def match_operator(op: Any) -> str:
    for known, text in MATCH_OPERATORS:
        if op == known:
            return text
    raise LabelEnforcementError(f"unsupported matcher operator {op!r}")


def _label(name: str) -> str:
    if not LABEL_NAME.fullmatch(name):
        raise LabelEnforcementError(f"label name {name!r} is not supported here")
    return name


def _labels(names: Sequence[str]) -> str:
    return ", ".join(_label(name) for name in names)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(value)


def _milliseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _duration(delta: timedelta) -> str:
    """
    A duration as Prometheus writes one (C{1d2h}, C{90s}, C{250ms}); a
    negative one (only offsets) with a leading C{-}.
    """
    ms = _milliseconds(delta)
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in _DURATION_UNITS:
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return sign + "".join(parts)


def _modifiers(offset: Optional[timedelta], at: Any) -> str:
    out = ""
    if at is not None:
        if at.type == promql.AtModifierType.Start:
            out += " @ start()"
        elif at.type == promql.AtModifierType.End:
            out += " @ end()"
        else:
            ms = _milliseconds(at.at - _EPOCH)
            sign = "-" if ms < 0 else ""
            out += f" @ {sign}{abs(ms) // 1000}.{abs(ms) % 1000:03d}"
    if offset:
        out += f" offset {_duration(offset)}"
    return out
