"""
The bounds a PromQL query is counted against before it is parsed
(L{sealgw.tenancy.check_bounds}): each bound and its refusal, the scan's
reading of strings and regular expressions, and, on generated queries,
that what the scan admits parses in bounded time, that it refuses what
is over the limits, and that it admits what dashboards send.
"""

from __future__ import annotations

import time

import promql_parser as promql
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.tenancy import (
    DEFAULT_BOUNDS,
    MAX_REPEAT,
    LabelEnforcementError,
    PromQLBounds,
    TenantLabel,
    check_bounds,
    enforce_query,
)
from sealgw.tenancy._bounds import measure, regex_cost, unquote
from sealgw.tenancy._writer import quote

deterministic = settings(derandomize=True, deadline=None, max_examples=200)

A = TenantLabel.parse("tenant", "team-a")

#: The probe that held a gateway for 24 s: 200 matchers like l0=~"\w{250}".
HOSTILE = "up{" + ",".join(f'l{i}=~"\\\\w{{250}}"' for i in range(200)) + "}"


def refusal(query: str, bounds: PromQLBounds = DEFAULT_BOUNDS) -> str:
    e = SynchronousTestCase().assertRaises(LabelEnforcementError, check_bounds, query, bounds)
    return str(e)


class BoundTests(SynchronousTestCase):
    def test_hostile_probe(self) -> None:
        """
        The probe is refused by the scan, without the parser (the scan's
        own cost is measured by C{bench/promql.py}).
        """
        self.assertIn("200 regular-expression matchers", refusal(HOSTILE))
        self.assertIn("query.promql.max_regex_matchers", refusal(HOSTILE))
        # One of them alone is refused by its size.
        one = 'up{l0=~"\\\\w{250}"}'
        self.assertIn("query.promql.max_regex_size", refusal(one))
        self.assertIn("1024000 units", refusal(one))

    def test_query_bytes(self) -> None:
        bounds = PromQLBounds(max_query_bytes=10)
        check_bounds("up" + " " * 8, bounds)
        self.assertEqual(
            refusal("up" + " " * 9, bounds),
            "the query is longer than 10 bytes (query.promql.max_query_bytes)",
        )
        # UTF-8 bytes, not characters.
        self.assertIn("longer than 10 bytes", refusal('{a="ééééé"}', bounds))

    def test_nesting(self) -> None:
        bounds = PromQLBounds(max_nesting=3)
        check_bounds("sum(rate(x[5m]))", bounds)
        self.assertEqual(
            refusal("sum(rate(x[5m])) + 1", bounds),
            "the query holds more than 3 operators and brackets (query.promql.max_nesting)",
        )

    def test_matchers(self) -> None:
        bounds = PromQLBounds(max_matchers=3)
        check_bounds('a{x="1", y!="2"} + b{z=~"3"}', bounds)
        self.assertEqual(
            refusal('a{x="1", y!="2"} + b{z=~"3", w!~"4"}', bounds),
            "the query holds 4 label matchers: the gateway takes at most 3 "
            "(query.promql.max_matchers)",
        )
        # Comparisons outside braces are not matchers.
        self.assertEqual(measure('a == b != c{x="1"}').matchers, 1)

    def test_regex_matchers(self) -> None:
        bounds = PromQLBounds(max_regex_matchers=2)
        check_bounds('a{x=~"1", y!~"2", z="3"}', bounds)
        self.assertEqual(
            refusal('a{x=~"1", y!~"2"} or b{z=~"3"}', bounds),
            "the query holds 3 regular-expression matchers (=~, !~): the gateway takes "
            "at most 2 (query.promql.max_regex_matchers)",
        )

    def test_regex_bytes(self) -> None:
        bounds = PromQLBounds(max_regex_bytes=8)
        check_bounds('a{x=~"12345678", y="123456789"}', bounds)
        self.assertEqual(
            refusal('a{x=~"123456789"}', bounds),
            "a regular expression of the query is 9 bytes long: the gateway takes at most 8 "
            "(query.promql.max_regex_bytes)",
        )
        # Decoded: an escape is the one character it stands for.
        check_bounds('a{x=~"\\u0041234567\\x38"}', bounds)

    def test_regex_size(self) -> None:
        bounds = PromQLBounds(max_regex_size=4096 * 3)
        check_bounds('a{x=~"\\\\w{3}"}', bounds)
        check_bounds('a{x=~"\\\\w"} + b{y=~"\\\\d\\\\s"}', bounds)
        message = refusal('a{x=~"\\\\w"} + b{y=~"\\\\d\\\\s\\\\pL"}', bounds)
        self.assertIn("about 16384 units, more than the 12288", message)
        self.assertIn("query.promql.max_regex_size", message)

    def test_repeat(self) -> None:
        check_bounds(f'a{{x=~"a{{{MAX_REPEAT}}}"}}', DEFAULT_BOUNDS)
        self.assertEqual(
            refusal(f'a{{x=~"a{{2,{MAX_REPEAT + 1}}}"}}'),
            "a regular expression of the query repeats something 1001 times: Prometheus "
            "takes a count of at most 1000",
        )

    def test_bounds_validated(self) -> None:
        e = self.assertRaises(ValueError, PromQLBounds, max_matchers=0)
        self.assertEqual(str(e), "max_matchers must be at least 1, not 0")

    def test_grafana_all(self) -> None:
        """
        Grafana's "All" over thousands of hosts is one long alternation,
        escaped: admitted, and enforced.
        """
        hosts = "|".join(f"host-{i:04d}\\\\.example\\\\.com" for i in range(2000))
        query = f'sum by (instance) (rate(node_cpu_seconds_total{{instance=~"{hosts}"}}[5m]))'
        shape = check_bounds(query, DEFAULT_BOUNDS)
        self.assertEqual(shape.regex_matchers, 1)
        self.assertIn('tenant="team-a"', enforce_query(query, A))


class ScanTests(SynchronousTestCase):
    def test_regex_found_after_comments_and_space(self) -> None:
        shape = measure('a{x =~ # a comment\n "\\\\w{10}"}')
        self.assertEqual(shape.regex_size, 40960)
        self.assertEqual(shape.largest_repeat, 10)

    def test_strings_not_regexes(self) -> None:
        """
        Strings that are not a matcher's regex cost nothing:
        label_replace's regex is compiled by Prometheus, not the parser.
        """
        shape = measure('label_replace(a{x="\\\\w{250}"}, "d", "$1", "s", "\\\\w{250}")')
        self.assertEqual((shape.regex_matchers, shape.regex_size), (0, 0))

    def test_raw_and_single_quoted(self) -> None:
        self.assertEqual(measure("a{x=~`\\w{2}`}").regex_size, 8192)
        self.assertEqual(measure("a{x=~'\\\\w{2}'}").regex_size, 8192)

    def test_escapes_cannot_hide_a_class(self) -> None:
        """
        A backslash written as an escape (\\x5c, \\u005c, \\134) is a
        backslash to the regex, and counted so.
        """
        for escape in ("\\\\x5c", "\\\\u005c", "\\\\134", "\\\\U0000005c"):
            query = 'a{x=~"' + escape.replace("\\\\", "\\") + 'w{10}"}'
            self.assertEqual(measure(query).regex_size, 40960, query)

    def test_regex_costs(self) -> None:
        for regex, cost in [
            ("abc", 3),
            ("a|b|c", 3),
            (".", 32),
            ("[a-z]", 32),
            ("[\\w-]", 4096),
            ("\\w+", 4096),
            ("\\pL", 4096),
            ("\\p{Greek}x", 4097),
            ("(?i)ab", 32 + 32 + 32),
            ("a{10}", 10),
            ("a{2,5}", 5),
            ("a{3,}", 4),
            ("a{0}", 1),
            ("(ab){10}", 20),
            ("(a{10}){10}", 100),
            ("\\w*{100}", 409600),
            ("(?:){1000}", 1000),
            ("[]a]{2}", 64),
            ("[[:alpha:]]{3}", 96),
            ("\\x{10FFFF}{3}", 3),
        ]:
            self.assertEqual(regex_cost(regex)[0], cost, regex)

    @deterministic
    @given(st.text())
    def test_unquote_reads_what_the_writer_wrote(self, text: str) -> None:
        """
        The scan decodes strings as the parser does: whatever the writer
        quotes reads back the same.
        """
        self.assertEqual(unquote(quote(text)[1:-1]), text)


#: Pieces of regular expressions, the costly ones among them.
REGEX_PIECES = st.sampled_from([
    "a", "b", ".", "\\w", "\\W", "\\d", "\\D", "\\s", "\\S", "\\pL", "\\p{Greek}", "\\PL",
    "[a-z]", "[^a]", "[\\w-]", "(?i)", "|", "\\b", "^", "$", "\\.", "x{1000}",
])
QUANTIFIERS = st.sampled_from(["", "", "*", "+", "?", "{2}", "{10}", "{50}", "{3,20}", "{0,100}", "{2,}"])


def regexes() -> st.SearchStrategy[str]:
    """
    Regular expressions of those pieces, in groups, each maybe repeated.
    """
    atoms = st.tuples(REGEX_PIECES, QUANTIFIERS).map("".join)
    return st.recursive(
        st.lists(atoms, max_size=6).map("".join),
        lambda inner: st.tuples(
            st.sampled_from(["(", "(?:"]), inner, st.just(")"), QUANTIFIERS, inner
        ).map("".join),
        max_leaves=8,
    )


def matcher_query(regex_list: list[str]) -> str:
    return "up{" + ",".join(f"l{i}=~{quote(r)}" for i, r in enumerate(regex_list)) + "}"


#: A label name or value as dashboards have them.
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
HOSTS = st.lists(
    st.from_regex(r"[a-z]{2,10}-[0-9]{1,4}(\.[a-z]{2,8}){0,3}(:[0-9]{2,5})?", fullmatch=True),
    min_size=1,
    max_size=50,
)


@st.composite
def dashboard_queries(draw: st.DrawFn) -> str:
    """
    Queries as Grafana dashboards send them: a metric, a few matchers,
    variables expanded to alternations (escaped as Grafana escapes them)
    or to .* / .+, a range function, an aggregation, maybe a quantile.
    """
    metric = draw(WORDS)
    matchers = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(WORDS)
        kind = draw(st.sampled_from(["=", "!=", "=~", "!~"]))
        if kind in ("=~", "!~"):
            value = draw(st.one_of(
                st.sampled_from([".*", ".+", "$^", "5..", "2..|3..", "(?i)error|warn", "/api/.*",
                                 "\\d+", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}", "\\w+"]),
                HOSTS.map(lambda hosts: "|".join(h.replace(".", "\\.") for h in hosts)),
            ))
        else:
            value = draw(WORDS)
        matchers.append(f"{name}{kind}{quote(value)}")
    selector = f"{metric}{{{', '.join(matchers)}}}"
    window = draw(st.sampled_from(["1m", "5m", "$__rate_interval".replace("$__rate_interval", "2m")]))
    inner = f"{draw(st.sampled_from(['rate', 'increase', 'irate', 'avg_over_time']))}({selector}[{window}])"
    grouping = draw(st.sampled_from(["", " by (job)", " by (instance, le)", " without (pod)"]))
    query = f"{draw(st.sampled_from(['sum', 'avg', 'max', 'count']))}{grouping} ({inner})"
    if draw(st.booleans()):
        query = f"histogram_quantile(0.99, {query})"
    if draw(st.booleans()):
        query = f"{query} / ignoring(code) group_left {query}"
    return query


class PropertyTests(SynchronousTestCase):
    @settings(derandomize=True, deadline=None, max_examples=100)
    @given(st.lists(regexes(), min_size=1, max_size=8))
    def test_admitted_parses_in_bounded_time(self, regex_list: list[str]) -> None:
        """
        Whatever the scan admits, the parser takes at most a bounded time
        over (in the parser's own CPU time, which other processes do not
        lengthen): at the defaults, measured worst cases are some tens of
        milliseconds, and this allows many times that.
        """
        query = matcher_query(regex_list)
        try:
            check_bounds(query, DEFAULT_BOUNDS)
        except LabelEnforcementError:
            assume(False)
        start = time.thread_time()
        try:
            promql.parse(query)
        except ValueError:
            pass
        self.assertLess(time.thread_time() - start, 0.5, query)

    @deterministic
    @given(regexes(), st.integers(1, MAX_REPEAT))
    def test_repetition_multiplies(self, regex: str, count: int) -> None:
        """
        A group repeated n times is estimated at least n times the group:
        no way of writing a repetition escapes the count.
        """
        alone = regex_cost(f"(?:{regex})")[0]
        self.assertGreaterEqual(regex_cost(f"(?:{regex}){{{count}}}")[0], alone * count)
        self.assertGreaterEqual(regex_cost(f"(?:{regex}){{{count},}}")[0], alone * count)

    @deterministic
    @given(st.lists(regexes(), min_size=1, max_size=30))
    def test_never_admits_over_the_limits(self, regex_list: list[str]) -> None:
        """
        The scan's counts are what the parser finds: as many regex
        matchers, and together no smaller than the sum of each regex's
        own estimate; over a bound, refused.
        """
        query = matcher_query(regex_list)
        shape = measure(query)
        tree = None
        if shape.regex_size <= DEFAULT_BOUNDS.max_regex_size and shape.largest_repeat <= MAX_REPEAT:
            # Cheap enough to ask the parser what it reads.
            try:
                tree = promql.parse(query)
            except ValueError:
                pass
        self.assertEqual(shape.regex_matchers, len(regex_list))
        self.assertEqual(shape.regex_size, sum(regex_cost(r)[0] for r in regex_list))
        if tree is not None:
            values = [m.value for m in tree.matchers.matchers]
            self.assertEqual(values, regex_list)
        bounds = PromQLBounds(max_regex_matchers=10, max_regex_size=50_000)
        over = len(regex_list) > 10 or shape.regex_size > 50_000
        over = over or shape.largest_repeat > MAX_REPEAT
        if over:
            self.assertRaises(LabelEnforcementError, check_bounds, query, bounds)
        else:
            check_bounds(query, bounds)

    @deterministic
    @given(dashboard_queries())
    def test_dashboards_admitted(self, query: str) -> None:
        """
        What dashboards send passes the default bounds, and is enforced.
        """
        check_bounds(query, DEFAULT_BOUNDS)
        self.assertIn('tenant="team-a"', enforce_query(query, A))
