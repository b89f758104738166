"""
Label enforcement on PromQL (L{sealgw.tenancy.enforce_query}): what a query
becomes, what is refused, and, on generated queries, that every selector
of the result carries the tenant's matcher and nothing else changed.
"""

from __future__ import annotations

from typing import Any

import promql_parser as promql
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.tenancy import (
    ALLOWED_FUNCTIONS,
    MAX_NESTING,
    MAX_QUERY_BYTES,
    REFUSED_FUNCTIONS,
    LabelEnforcementError,
    TenantError,
    TenantLabel,
    enforce_query,
    enforce_selector,
)
from sealgw.tenancy._promql import nesting, quote_meta
from sealgw.tenancy._writer import quote

deterministic = settings(derandomize=True, deadline=None, max_examples=300)

A = TenantLabel.parse("tenant", "team-a")
T = '{__name__="%s", tenant="team-a"}'

#: What each query becomes for tenant team-a.
TABLE = [
    ("up", T % "up"),
    ('{__name__=~".+"}', '{__name__=~".+", tenant="team-a"}'),
    ('up{job="api"}', '{__name__="up", job="api", tenant="team-a"}'),
    # Any matcher on the tenant's label is replaced, whatever it said.
    ('up{tenant="team-b"}', T % "up"),
    ('up{tenant=~".*"}', T % "up"),
    ('up{tenant!="team-a", job="x"}', '{__name__="up", job="x", tenant="team-a"}'),
    ('{tenant="team-b"}', '{tenant="team-a"}'),
    ("a or b", f"{T % 'a'} or {T % 'b'}"),
    ("a unless on(job) b", f"{T % 'a'} unless on(job) {T % 'b'}"),
    ("a and ignoring(x) b", f"{T % 'a'} and ignoring(x) {T % 'b'}"),
    ("a + on() b", f"{T % 'a'} + on() {T % 'b'}"),
    ("a + ignoring() b", f"{T % 'a'} + {T % 'b'}"),
    ("a * on(x) group_left(y) b", f"{T % 'a'} * on(x) group_left(y) {T % 'b'}"),
    ("a / ignoring(x) group_right b", f"{T % 'a'} / ignoring(x) group_right() {T % 'b'}"),
    ("a > bool 2", f"{T % 'a'} > bool 2.0"),
    # Operands that are not single terms are parenthesised.
    ("a ^ b ^ c", f"{T % 'a'} ^ ({T % 'b'} ^ {T % 'c'})"),
    ("(a + b) * c", f"({T % 'a'} + {T % 'b'}) * {T % 'c'}"),
    ("a - -1", f"{T % 'a'} - (-1.0)"),
    ("a offset 5m + b", f"({T % 'a'} offset 5m) + {T % 'b'}"),
    ("(a offset 5m)[1h:]", f"({T % 'a'} offset 5m)[1h:]"),
    ("- -a", f"-(-{T % 'a'})"),
    ("sum(rate(x[5m]))", f"sum(rate({T % 'x'}[5m]))"),
    ("sum by (job) (x)", f"sum by (job) ({T % 'x'})"),
    ("sum without () (x)", f"sum without () ({T % 'x'})"),
    ("topk(3, x) by (a)", f"topk by (a) (3.0, {T % 'x'})"),
    ('count_values("v", x)', f'count_values("v", {T % "x"})'),
    ("absent(nothing)", f"absent({T % 'nothing'})"),
    (
        'label_replace(up, "tenant", "team-b", "", "")',
        f'label_replace({T % "up"}, "tenant", "team-b", "", "")',
    ),
    (
        "max_over_time(rate(x[5m])[1h:1m] offset 1h @ 1609746000.5)",
        f"max_over_time(rate({T % 'x'}[5m])[1h:1m] @ 1609746000.500 offset 1h)",
    ),
    ("x offset -5m", f"{T % 'x'} offset -5m"),
    ("x[5m] @ start()", f"{T % 'x'}[5m] @ start()"),
    ("x @ end()", f"{T % 'x'} @ end()"),
    ("x[1d2h3m4s5ms]", f"{T % 'x'}[1d2h3m4s5ms]"),
    ("-x", f"-{T % 'x'}"),
    ("(x)", f"({T % 'x'})"),
    ("-1", "-1.0"),
    ("1e-10", "1e-10"),
    ("NaN", "NaN"),
    ("-Inf", "-Inf"),
    ('"text"', '"text"'),
    ("vector(1)", "vector(1.0)"),
    ("time()", "time()"),
    # Strings come out quoted in ASCII.
    ('x{a="x\\"y\\\\z\\n"}', '{__name__="x", a="x\\"y\\\\z\\u000a", tenant="team-a"}'),
    ('x{a="日本"}', '{__name__="x", a="\\u65e5\\u672c", tenant="team-a"}'),
    # A comment is not written back.
    ('x # "it\'s"\n + y', f"{T % 'x'} + {T % 'y'}"),
]


def selectors(expr: Any) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            found.append(node)

    promql.walk(expr, pre_visit=visit)
    return found


def matchers(selector: Any, label: str = "tenant") -> list[tuple[str, str, str]]:
    out = [(str(m.op), m.name, m.value) for m in selector.matchers.matchers if m.name != label]
    if selector.name is not None and ("MatchOp.Equal", "__name__", selector.name) not in out:
        out.insert(0, ("MatchOp.Equal", "__name__", selector.name))
    return out


class TableTests(SynchronousTestCase):
    def test_table(self) -> None:
        for query, expected in TABLE:
            self.assertEqual(enforce_query(query, A), expected, query)

    def test_results_parse_to_the_tenant_only(self) -> None:
        """
        Every result parses, and each of its selectors has exactly one
        matcher on the label: the tenant's.
        """
        for query, _ in TABLE:
            expr = promql.parse(enforce_query(query, A))
            for selector in selectors(expr):
                on_label = [m for m in selector.matchers.matchers if m.name == "tenant"]
                self.assertEqual(
                    [(m.op, m.value) for m in on_label], [(promql.MatchOp.Equal, "team-a")]
                )

    def test_federation(self) -> None:
        """
        Several tenants become one regular expression, each tenant escaped
        so that a tenant's dot or star matches only itself.
        """
        tenants = TenantLabel.parse("tenant", "team.a|b*|team.a")
        self.assertEqual(tenants.tenants, ("team.a", "b*"))
        self.assertEqual(str(tenants), 'tenant=~"team\\\\.a|b\\\\*"')
        self.assertEqual(
            enforce_query("up", tenants), '{__name__="up", tenant=~"team\\\\.a|b\\\\*"}'
        )
        [selector] = selectors(promql.parse(enforce_query("up", tenants)))
        [matcher] = [m for m in selector.matchers.matchers if m.name == "tenant"]
        self.assertEqual(matcher.value, "team\\.a|b\\*")

    def test_quote_meta(self) -> None:
        self.assertEqual(quote_meta("a.b*(c)-d!'_"), "a\\.b\\*\\(c\\)-d!'_")

    def test_bad_tenants(self) -> None:
        self.assertRaises(TenantError, TenantLabel.parse, "tenant", "a||b")
        self.assertRaises(TenantError, TenantLabel.parse, "tenant", 'a"b')
        self.assertRaises(ValueError, TenantLabel, "__tenant", ("a",))
        self.assertRaises(ValueError, TenantLabel, "1x", ("a",))
        self.assertRaises(ValueError, TenantLabel, "tenant", ())

    def test_series_selector(self) -> None:
        self.assertEqual(
            enforce_selector('up{job="x", tenant="team-b"}', A),
            '{__name__="up", job="x", tenant="team-a"}',
        )
        self.assertEqual(enforce_selector('{tenant=~".+"}', A), '{tenant="team-a"}')
        for bad in ("up[5m]", "up offset 5m", "sum(up)", "up + up", "1"):
            self.assertRaises(LabelEnforcementError, enforce_selector, bad, A)


class RefusalTests(SynchronousTestCase):
    def test_unparsable(self) -> None:
        for query in ("", "up{", "sum(", "up[5x]", "rate(up)", "up{a=~\"(\"}", "a and on(a) group_left b"):
            e = self.assertRaises(LabelEnforcementError, enforce_query, query, A)
            self.assertIn("cannot be parsed", str(e), query)

    def test_message_is_short(self) -> None:
        """
        The parser quotes its input; a refusal does not repeat a large one.
        """
        query = 'up{a=~"' + "(" * 10_000 + '"}'
        e = self.assertRaises(LabelEnforcementError, enforce_query, query, A)
        self.assertLess(len(str(e)), 300)

    def test_or_inside_braces(self) -> None:
        """
        C{{a="1" or b="2"}} would need the tenant in every alternative;
        it is refused rather than half enforced.
        """
        self.assertRaises(LabelEnforcementError, enforce_query, 'up{a="1" or b="2"}', A)

    def test_deep_nesting_refused_before_parsing(self) -> None:
        """
        Queries nested thousands deep crash the parser's process; they are
        refused before it sees them (were they not, this test would take
        the test runner down).
        """
        n = 9000  # deeper than the parser survives (4,000 to 10,000), under 64 KiB
        for query in (
            "(" * n + "up" + ")" * n,
            "-" * n + "up",
            "+".join(["up"] * n),
            "sum(" * n + "up" + ")" * n,
            "abs(" * n + "up" + ")" * n,
            "(" * n + "up" + ")[5m:]" * n,
            "up or " * n + "up",
            'up # "\n' + "-" * n + "up",
            'up{a="b" # "\n' + "-" * n + "up",
            "up + `" + "\\`" + "-" * n + "up",
        ):
            e = self.assertRaises(LabelEnforcementError, enforce_query, query, A)
            self.assertIn(f"more than {MAX_NESTING}", str(e))

    def test_nesting_at_the_limit(self) -> None:
        self.assertEqual(enforce_query("-" * MAX_NESTING + "up", A).count("-("), MAX_NESTING - 1)
        self.assertRaises(
            LabelEnforcementError, enforce_query, "-" * (MAX_NESTING + 1) + "up", A
        )

    def test_nesting_count(self) -> None:
        self.assertEqual(nesting('sum(rate(up{a=~"(a|b)+-*/"}[5m])) by (job)'), 4)
        # A matcher's = nests nothing; == and != count once.
        self.assertEqual(nesting('up{a="1", b=~"2", c!~"3"} == up != bool up'), 2)
        self.assertEqual(nesting("a and b OR c unless d atan2 e"), 4)
        self.assertEqual(nesting("a # (((\n+ b"), 1)
        self.assertEqual(nesting("a{b='(\\'('} + `((\\`"), 1)
        # An unterminated string runs to the end.
        self.assertEqual(nesting('a + "((('), 1)
        # Regular expressions of many values (Grafana's "All") count nothing.
        many = "|".join(f"host-{i}:9100" for i in range(3000))
        self.assertEqual(nesting(f'up{{instance=~"{many}"}}'), 0)
        self.assertIn(many, enforce_query(f'up{{instance=~"{many}"}}', A))

    def test_size(self) -> None:
        """
        The parser compiles every regular expression holding the GIL: a
        query past 64 KiB is refused before it would stall the gateway.
        """
        fits = 'up{a=~"' + "x" * (MAX_QUERY_BYTES - 9) + '"}'
        self.assertEqual(len(fits), MAX_QUERY_BYTES)
        enforce_query(fits, A)
        e = self.assertRaises(LabelEnforcementError, enforce_query, fits + " ", A)
        self.assertEqual(
            str(e),
            f"the query is longer than {MAX_QUERY_BYTES} bytes (query.promql.max_query_bytes)",
        )
        # Bytes, not characters.
        self.assertRaises(
            LabelEnforcementError, enforce_selector, '{a="' + "é" * 40_000 + '"}', A
        )
        # What it is written back to may be longer: escapes, the tenant.
        self.assertIn("\\u00e9" * 10, enforce_query('{a="' + "é" * 30_000 + '"}', A))


class PropertyTests(SynchronousTestCase):
    @deterministic
    @given(st.text())
    def test_quote_round_trip(self, text: str) -> None:
        """
        Whatever a matcher's value, it is written so that the parser reads
        back the same value, and in ASCII.
        """
        written = quote(text)
        self.assertTrue(written.isascii())
        [matcher] = promql.parse("x{a=" + written + "}").matchers.matchers
        self.assertEqual(matcher.value, text)

    @deterministic
    @given(st.text(alphabet="(){}[]\"'`#\n+-*/^%=~!<>,:@ .01569eaorsumbyxtenn_", max_size=60))
    def test_anything_is_enforced_or_refused(self, query: str) -> None:
        """
        Nothing but a refusal comes out of text that is mostly PromQL's
        punctuation; what is accepted holds the tenant everywhere.
        """
        try:
            out = enforce_query(query, A)
        except LabelEnforcementError:
            return
        for selector in selectors(promql.parse(out)):
            self.assertIn(("MatchOp.Equal", "tenant", "team-a"), _all(selector))

    @deterministic
    @given(st.text(max_size=80))
    def test_any_text(self, query: str) -> None:
        try:
            enforce_query(query, A)
        except LabelEnforcementError:
            pass

    @deterministic
    @given(st.deferred(lambda: QUERIES))
    def test_generated_queries(self, query: str) -> None:
        """
        On generated queries: the result is the same tree as the query
        (its own parentheses aside), each selector with its own matchers
        but those on the tenant's label, and the tenant's; enforcing again
        changes nothing.
        """
        try:
            before = promql.parse(query)
        except ValueError:
            assume(False)
        out = enforce_query(query, A)
        after = promql.parse(out)
        self.assertEqual(shape(before), shape(after))
        for selector in selectors(after):
            on_label = [m for m in selector.matchers.matchers if m.name == "tenant"]
            self.assertEqual(
                [(m.op, m.value) for m in on_label], [(promql.MatchOp.Equal, "team-a")]
            )
        self.assertEqual(enforce_query(out, A), out)


def shape(node: Any) -> Any:
    """
    A parsed query as nested tuples, without parentheses and without
    matchers on the tenant's label, to compare trees.
    """
    if isinstance(node, promql.ParenExpr):
        return shape(node.expr)
    if isinstance(node, promql.VectorSelector):
        return ("selector", tuple(matchers(node)), node.offset, _at(node.at))
    if isinstance(node, promql.MatrixSelector):
        return ("range", shape(node.vector_selector), node.range)
    if isinstance(node, promql.SubqueryExpr):
        return ("subquery", shape(node.expr), node.range, node.step, node.offset, _at(node.at))
    if isinstance(node, promql.UnaryExpr):
        return ("minus", shape(node.expr))
    if isinstance(node, (promql.NumberLiteral, promql.StringLiteral)):
        return (type(node).__name__, node.val)
    if isinstance(node, promql.Call):
        return ("call", node.func.name, tuple(shape(a) for a in node.args))
    if isinstance(node, promql.AggregateExpr):
        modifier = node.modifier
        grouping = None if modifier is None else (str(modifier.type), tuple(modifier.labels))
        param = None if node.param is None else shape(node.param)
        return ("aggregation", str(node.op), grouping, param, shape(node.expr))
    if isinstance(node, promql.BinaryExpr):
        return ("binary", str(node.op), _vector_matching(node.modifier), shape(node.lhs),
                shape(node.rhs))
    raise AssertionError(f"unexpected node {node!r}")


def _at(at: Any) -> Any:
    return None if at is None else (str(at.type), at.at)


def _vector_matching(modifier: Any) -> Any:
    if modifier is None:
        return (None, None, False, ())
    card = str(modifier.card)
    group = card if card in ("VectorMatchCardinality.ManyToOne",
                             "VectorMatchCardinality.OneToMany") else None
    matching = modifier.matching
    on = None
    if matching is not None and (
        matching.type == promql.LabelModifierType.Include or matching.labels or group
    ):
        on = (str(matching.type), tuple(matching.labels))
    return (group, on, modifier.return_bool, tuple(modifier.group_labels or ()))


def _all(selector: Any) -> list[tuple[str, str, str]]:
    return [(str(m.op), m.name, m.value) for m in selector.matchers.matchers]


_names = st.sampled_from(["up", "http_requests_total", "x", "sum_thing", "by", "offset"])
_labels = st.sampled_from(["job", "instance", "tenant", "le", "__name__"])
_values = st.text(max_size=8)
_matcher = st.builds(
    lambda label, op, value: f"{label}{op}{quote(value)}",
    _labels,
    st.sampled_from(["=", "!=", "=~", "!~"]),
    st.sampled_from(["", "a", ".*", "team-b", "x|y", "\\\\d+"]) | _values.filter(
        lambda v: True
    ),
)


def _selector_text(name: str, ms: list[str]) -> str:
    # A metric name that is a keyword needs the braces form.
    if name in ("by", "offset"):
        return "{" + ", ".join([f'__name__="{name}"', *ms]) + "}"
    return name + ("{" + ", ".join(ms) + "}" if ms else "")


_selector = st.builds(_selector_text, _names, st.lists(_matcher, max_size=3))
_range = st.sampled_from(["1m", "5m", "1h30m", "250ms"])
_modifier = st.sampled_from(["", " offset 5m", " offset -1m", " @ 1700000000", " @ start()"])
_vector = st.builds(lambda s, m: s + m, _selector, _modifier)
_matrix = st.builds(lambda s, r, m: f"{s}[{r}]{m}", _selector, _range, _modifier)


def _extend(inner: Any) -> Any:
    return st.one_of(
        st.builds(lambda f, m: f"{f}({m})", st.sampled_from(["rate", "increase", "max_over_time"]), _matrix),
        st.builds(lambda a: f"abs({a})", inner),
        st.builds(lambda a: f"absent({a})", inner),
        st.builds(
            lambda op, by, a: f"{op} {by} ({a})",
            st.sampled_from(["sum", "max", "count", "group"]),
            st.sampled_from(["by (job)", "without (instance)", "by ()"]),
            inner,
        ),
        st.builds(lambda k, a: f"topk({k}, {a})", st.integers(1, 5), inner),
        st.builds(
            lambda a, op, mod, b: f"({a}) {op} {mod} ({b})",
            inner,
            st.sampled_from(["+", "-", "*", "/", ">", "== bool"]),
            st.sampled_from(["", "on(job)", "ignoring(instance)", "on(job) group_left(le)"]),
            inner,
        ),
        st.builds(
            lambda a, op, mod, b: f"({a}) {op} {mod} ({b})",
            inner,
            st.sampled_from(["and", "or", "unless"]),
            st.sampled_from(["", "on(job)", "ignoring(instance)"]),
            inner,
        ),
        st.builds(lambda a, r: f"max_over_time(({a})[{r}:1m])", inner, _range),
        st.builds(
            lambda a: f'label_replace({a}, "tenant", "team-b", "", "")', inner
        ),
        st.builds(lambda a: f"-({a})", inner),
    )


QUERIES = st.recursive(_vector, _extend, max_leaves=8)


class FunctionTests(SynchronousTestCase):
    """
    The allow-list of functions under label tenancy
    (L{sealgw.tenancy._functions}).
    """

    def test_info_refused(self) -> None:
        """
        C{info()} joins C{target_info} series no selector names: refused,
        wherever it sits in the query.
        """
        for query in ("info(up)", 'sum(info(rate(up[5m]), {k8s_cluster_name=~".+"}))'):
            e = self.assertRaises(LabelEnforcementError, enforce_query, query, A)
            self.assertEqual(
                str(e),
                "the function info() is not allowed on this gateway's label-tenancy reads: "
                "it joins target_info series that no selector of the query names",
            )

    def test_allowed_are_known(self) -> None:
        """
        Every function allowed is one the parser knows by that name (the
        list holds no misspelling that would leave a real one out).
        """
        for name in ALLOWED_FUNCTIONS:
            try:
                promql.parse(f"{name}()")
            except ValueError as e:
                self.assertNotIn("unknown function", str(e), name)
        self.assertEqual(ALLOWED_FUNCTIONS & REFUSED_FUNCTIONS.keys(), set())

    def test_allowed_pass(self) -> None:
        for query in (
            'absent_over_time(nothing{job="x"}[5m])',
            'label_join(up, "x", ",", "job", "instance")',
            'sort_by_label(up, "job")',
            "histogram_quantile(0.9, rate(x_bucket[5m]))",
            "vector(1) + scalar(up) + time()",
        ):
            self.assertIn('tenant="team-a"', enforce_query(query, A), query)

    def test_unreviewed_refused(self) -> None:
        """
        A function the parser learns of but nobody reviewed (one
        registered as an extra, one Prometheus adds later) is refused.
        """
        promql.register_extra_functions([
            promql.Function(
                "sealgw_test_lookup", [promql.ValueType.Vector], promql.ValueType.Vector
            )
        ])
        self.addCleanup(promql.clear_extra_functions)
        e = self.assertRaises(
            LabelEnforcementError, enforce_query, "sealgw_test_lookup(up)", A
        )
        self.assertEqual(
            str(e),
            "the function sealgw_test_lookup() is not allowed on this gateway's label-tenancy "
            "reads: it has not been reviewed as reading only the series of the query's selectors",
        )
