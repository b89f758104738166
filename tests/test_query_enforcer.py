"""
L{sealgw.query._enforcer.LabelEnforcer}: the bounds checked first, the
cache of rewrites (bounded in entries and bytes, refusals kept, refusals
for time not), and which queries are parsed inline and which go to the
parser processes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sealgw.query import _enforcer
from sealgw.query._enforcer import INLINE_BYTES, INLINE_NESTING, LabelEnforcer, RewriteCache
from sealgw.query._pool import (
    InlineParser,
    IPromQLParser,
    ParseBudgetExceeded,
    ParserUnavailable,
)
from sealgw.tenancy import LabelEnforcementError, PromQLBounds, TenantLabel

A = TenantLabel.parse("tenant", "team-a")
B = TenantLabel.parse("tenant", "team-b")


@implementer(IPromQLParser)
class RecordingParser:
    """
    A parser process stand-in: parses inline, records what it was asked,
    or answers with what the test set.
    """

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.answer: Any = None

    def enforce(self, kind: str, text: str, tenant: TenantLabel, bounds: PromQLBounds) -> Deferred[str]:
        self.asked.append((kind, text))
        if self.answer is not None:
            return fail(self.answer) if isinstance(self.answer, Exception) else succeed(self.answer)
        return InlineParser().enforce(kind, text, tenant, bounds)

    def stop(self) -> Deferred[None]:
        return succeed(None)


class EnforcerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.parser = RecordingParser()
        self.enforcer = LabelEnforcer(self.parser)

    def test_inline_or_pool(self) -> None:
        """
        Only small queries without regular expressions, not nested
        deeply, are parsed inline; everything else goes to the parser
        processes.
        """
        inline = [
            "up",
            'sum by (job) (rate(http_requests_total{job="api", code="500"}[5m]))',
            "+".join(["up"] * (INLINE_NESTING + 1)),
            "up{" + "a" * (INLINE_BYTES - 8) + '="b"}',
        ]
        pooled = [
            'up{job=~"api"}',
            'up{job!~"api"}',
            "+".join(["up"] * (INLINE_NESTING + 2)),
            "up{" + "a" * INLINE_BYTES + '="b"}',
        ]
        for text in inline + pooled:
            self.successResultOf(self.enforcer.query(text, A))
        self.assertEqual([text for _, text in self.parser.asked], pooled)

    def test_bounds(self) -> None:
        """
        The length is checked before anything; a short plain query is
        scanned here; the bounds of any other are checked where it is
        parsed, so a long query costs the reactor no scan.
        """
        enforcer = LabelEnforcer(self.parser, PromQLBounds(max_query_bytes=100, max_nesting=3))
        failure = self.failureResultOf(enforcer.query("up" + " " * 99, A), LabelEnforcementError)
        self.assertIn("query.promql.max_query_bytes", str(failure.value))
        failure = self.failureResultOf(enforcer.query("-(-(-(-up)))", A), LabelEnforcementError)
        self.assertIn("query.promql.max_nesting", str(failure.value))
        self.assertEqual(self.parser.asked, [])
        failure = self.failureResultOf(
            enforcer.query('-(-(-(-up{a=~"x"})))', A), LabelEnforcementError
        )
        self.assertIn("query.promql.max_nesting", str(failure.value))
        self.assertEqual(self.parser.asked, [("query", '-(-(-(-up{a=~"x"})))')])

    def test_reactor_cost_bounded(self) -> None:
        """
        What the reactor thread pays for the longest query the bounds
        admit before it goes to the parser process: its length, two
        substring searches; not the scan (tens of milliseconds at this
        length, see C{bench/promql.py}) and not the parser, which both run
        in the parser process.
        """
        hosts = "|".join(f"host-{i:04d}\\\\.example\\\\.com" for i in range(2000))
        query = f'up{{instance=~"{hosts}"}}'
        self.parser.answer = "sent"

        def scanned(*args: object) -> None:
            raise AssertionError("the query was scanned on the reactor thread")

        self.patch(_enforcer, "check_bounds", scanned)
        self.patch(InlineParser, "enforce", scanned)
        self.assertEqual(self.successResultOf(self.enforcer.query(query, A)), "sent")
        self.assertEqual(self.parser.asked, [("query", query)])

    def test_cached(self) -> None:
        """
        A query asked again (a dashboard's refresh) is answered from the
        cache, per tenant and per kind.
        """
        query = 'up{job=~"api|web"}'
        first = self.successResultOf(self.enforcer.query(query, A))
        self.assertEqual(self.successResultOf(self.enforcer.query(query, A)), first)
        self.assertEqual(len(self.parser.asked), 1)
        other = self.successResultOf(self.enforcer.query(query, B))
        self.assertIn('tenant="team-b"', other)
        self.successResultOf(self.enforcer.selector(query, A))
        self.assertEqual(len(self.parser.asked), 3)

    def test_refusals_cached(self) -> None:
        query = 'info(up{a=~"x"})'
        for _ in range(3):
            failure = self.failureResultOf(self.enforcer.query(query, A), LabelEnforcementError)
            self.assertIn("info()", str(failure.value))
        self.assertEqual(len(self.parser.asked), 1)

    def test_time_and_unavailability_not_cached(self) -> None:
        """
        A refusal for time depends on the machine's load, unavailability
        on the moment: both are asked again.
        """
        query = 'up{a=~"x"}'
        self.parser.answer = ParseBudgetExceeded("too long")
        self.failureResultOf(self.enforcer.query(query, A), ParseBudgetExceeded)
        self.parser.answer = ParserUnavailable("stopping")
        self.failureResultOf(self.enforcer.query(query, A), ParserUnavailable)
        self.parser.answer = None
        self.successResultOf(self.enforcer.query(query, A))
        self.assertEqual(len(self.parser.asked), 3)


class RewriteCacheTests(SynchronousTestCase):
    def test_entries_bounded(self) -> None:
        cache = RewriteCache(max_entries=2, max_bytes=10**6)
        for name in "abc":
            cache.put(("query", "t", name), name.upper())
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.get(("query", "t", "a")))
        self.assertEqual(cache.get(("query", "t", "c")), "C")

    def test_least_recently_used_dropped(self) -> None:
        cache = RewriteCache(max_entries=2, max_bytes=10**6)
        cache.put(("query", "t", "a"), "A")
        cache.put(("query", "t", "b"), "B")
        cache.get(("query", "t", "a"))
        cache.put(("query", "t", "c"), "C")
        self.assertEqual(cache.get(("query", "t", "a")), "A")
        self.assertIsNone(cache.get(("query", "t", "b")))

    def test_bytes_bounded(self) -> None:
        cache = RewriteCache(max_entries=100, max_bytes=2000)
        for i in range(10):
            cache.put(("query", "t", f"{i}" * 300), "x" * 300)
        self.assertLessEqual(cache.size, 2000)
        self.assertEqual(len(cache), 2)
        # One entry larger than the whole cache is not kept.
        cache.put(("query", "t", "big"), "x" * 5000)
        self.assertIsNone(cache.get(("query", "t", "big")))
        self.assertEqual(len(cache), 2)
