"""
Reads of a store that keeps tenants apart by label (an upstream with
C{tenancy: {label: tenant}}), in memory: every PromQL query and series
selector in the query string and the form body is held to the tenant, no
tenant header is sent, and the reads no label can narrow are refused.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sealgw.query import READ_ROUTES, ReadRequest, encode_form, label_read, parse_form
from sealgw.query._enforcer import LabelEnforcer
from sealgw.query._outcome import ReadRefused
from sealgw.query._pool import InlineParser, IPromQLParser, ParserUnavailable
from sealgw.testing import SentRequest
from tests.test_query_support import MIMIR, PAIR, SOLO, TRIO, Reads

FORM = {"Content-Type": ["application/x-www-form-urlencoded"]}
UP_A = '{__name__="up", tenant="team-a"}'


def params(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))


def sent_query(sent: SentRequest) -> list[tuple[str, str]]:
    return params(urlsplit(sent.url).query)


def sent_body(sent: SentRequest) -> list[tuple[str, str]]:
    return params(sent.body.decode("ascii"))


class LabelReadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reads = Reads(self, tenant_label="tenant", prometheus_path="")

    def only(self) -> SentRequest:
        sent = self.reads.sent()
        self.assertEqual(len(sent), 1, sent)
        return sent[0]

    def get(self, path: str, **kw: Any) -> tuple[int, bytes]:
        response, body = self.reads.get(path, **kw)
        return response.code, body

    def test_query(self) -> None:
        """
        The query is held to the tenant; the other parameters pass; no
        tenant header goes to a store that has no tenants.
        """
        code, _ = self.get("/api/v1/query?query=sum%28up%29&time=1700000000")
        self.assertEqual(code, 200)
        sent = self.only()
        self.assertEqual(urlsplit(sent.url).path, "/api/v1/query")
        self.assertEqual(sent_query(sent), [("query", f"sum({UP_A})"), ("time", "1700000000")])
        self.assertIsNone(sent.header("X-Scope-OrgID"))

    def test_tenant_matcher_replaced(self) -> None:
        self.get('/api/v1/query?query=up{tenant%3D"team-b"}+or+up{tenant%3D~".%2B"}')
        self.assertEqual(sent_query(self.only()), [("query", f"{UP_A} or {UP_A}")])

    def test_every_query_route(self) -> None:
        for route in ("query", "query_range", "query_exemplars"):
            self.get(f"/prometheus/api/v1/{route}?query=up&start=1&end=2")
            self.assertEqual(dict(sent_query(self.reads.sent()[-1]))["query"], UP_A)

    def test_post_form_and_query_string(self) -> None:
        """
        A POST's form body and its query string are both rewritten: the
        upstream reads parameters from both.
        """
        response, _ = self.reads.post(
            "/api/v1/query_range?query=down",
            data=b"query=up&start=1&end=2&step=15",
            headers=FORM,
        )
        self.assertEqual(response.code, 200)
        sent = self.only()
        self.assertEqual(
            sent_body(sent),
            [("query", UP_A), ("start", "1"), ("end", "2"), ("step", "15")],
        )
        self.assertEqual(sent_query(sent), [("query", '{__name__="down", tenant="team-a"}')])
        self.assertEqual(sent.header("Content-Type"), "application/x-www-form-urlencoded")

    def test_federation(self) -> None:
        """
        C{a|b}, allowed to an identity that may read both, becomes one
        regular expression.
        """
        code, _ = self.get(
            "/api/v1/query?query=up", token=TRIO, headers={"X-Scope-OrgID": ["team-a|team-c"]}
        )
        self.assertEqual(code, 200)
        self.assertEqual(
            sent_query(self.only()), [("query", '{__name__="up", tenant=~"team-a|team-c"}')]
        )
        code, _ = self.get(
            "/api/v1/query?query=up", token=PAIR, headers={"X-Scope-OrgID": ["team-a|team-c"]}
        )
        self.assertEqual(code, 403)
        self.assertEqual(len(self.reads.sent()), 1)

    def test_series(self) -> None:
        code, _ = self.get(
            "/api/v1/series?match[]=up&match[]=%7Bjob%3D%22x%22%7D&start=1&end=2"
        )
        self.assertEqual(code, 200)
        self.assertEqual(
            sent_query(self.only()),
            [
                ("match[]", UP_A),
                ("match[]", '{job="x", tenant="team-a"}'),
                ("start", "1"),
                ("end", "2"),
            ],
        )

    def test_series_without_match(self) -> None:
        code, body = self.get("/api/v1/series?start=1")
        self.assertEqual(code, 400)
        self.assertIn(b"match[]", body)
        self.assertEqual(self.reads.sent(), [])

    def test_labels_and_values(self) -> None:
        """
        Without a C{match[]}, one naming the tenant is added: label names
        and values would otherwise come from every tenant's series.
        """
        for path in ("/api/v1/labels", "/api/v1/label/job/values"):
            code, _ = self.get(path + "?start=1")
            self.assertEqual(code, 200)
            self.assertEqual(
                sent_query(self.reads.sent()[-1]),
                [("start", "1"), ("match[]", '{tenant="team-a"}')],
            )
            self.get(path + "?match[]=up")
            self.assertEqual(sent_query(self.reads.sent()[-1]), [("match[]", UP_A)])
        response, _ = self.reads.post("/api/v1/labels", data=b"match%5B%5D=up", headers=FORM)
        self.assertEqual(response.code, 200)
        sent = self.reads.sent()[-1]
        self.assertEqual((sent_query(sent), sent_body(sent)), ([], [("match[]", UP_A)]))

    def test_reads_no_label_narrows(self) -> None:
        """
        Metadata, rules and alerts answer about every series in the store:
        refused, and the upstream is not asked.
        """
        for path in ("/api/v1/metadata", "/api/v1/rules", "/prometheus/api/v1/alerts"):
            code, body = self.get(path)
            self.assertEqual(code, 404, path)
            self.assertIn(b"keeps tenants apart by label", body)
        self.assertEqual(self.reads.sent(), [])

    def test_plain_reads_pass(self) -> None:
        for path in ("/api/v1/status/buildinfo", "/api/v1/format_query?query=up%7Ba%3D%22b%22%7D"):
            code, _ = self.get(path)
            self.assertEqual(code, 200)
            sent = self.reads.sent()[-1]
            self.assertEqual(sent.url, MIMIR + path)
            self.assertIsNone(sent.header("X-Scope-OrgID"))

    def test_refused(self) -> None:
        """
        What cannot be parsed, or held to the tenant, is 400 and never
        reaches the upstream.
        """
        for path, words in [
            ("/api/v1/query?query=sum%28", b"cannot be parsed"),
            ("/api/v1/query?query=", b"cannot be parsed"),
            ("/api/v1/query?query=" + "-" * 300 + "up", b"operators and brackets"),
            ("/api/v1/query?query=up%7Ba%3D%221%22+or+b%3D%222%22%7D", b"'or'"),
            ("/api/v1/query?query=up;x", b"';'"),
            ("/api/v1/query?query=up%zz", b"'%'"),
            ("/api/v1/query?query=%ff", b"UTF-8"),
            ("/api/v1/series?match[]=up%5B5m%5D", b"series selector"),
        ]:
            code, body = self.get(path)
            self.assertEqual(code, 400, path)
            self.assertIn(words, body, path)
        self.assertEqual(self.reads.sent(), [])

    def test_bounds_and_functions(self) -> None:
        """
        A query over a bound is refused naming the bound and its value; a
        function not reviewed for label tenancy naming the function.
        """
        hostile = "up{" + ",".join(f'l{i}=~"\\\\w{{250}}"' for i in range(200)) + "}"
        for query, words in [
            (hostile, b"holds 200 regular-expression matchers (=~, !~): the gateway takes at most "
                      b"100 (query.promql.max_regex_matchers)"),
            ('up{a=~"\\\\w{250}"}', b"(query.promql.max_regex_size"),
            ("info(up)", b"the function info() is not allowed"),
            ("sum(info(rate(up[5m])))", b"target_info series that no selector"),
        ]:
            code, body = self.get("/api/v1/query?" + urlencode({"query": query}))
            self.assertEqual(code, 400, query)
            self.assertIn(words, body, query)
        self.assertEqual(self.reads.sent(), [])

    def test_other_apis_unaffected(self) -> None:
        """
        The label is the Prometheus upstream's; Loki's reads keep the
        tenant header.
        """
        code, _ = self.get("/loki/api/v1/query?query=%7Bjob%3D%22x%22%7D")
        self.assertEqual(code, 200)
        [sent] = self.reads.sent("loki")
        self.assertEqual(sent.header("X-Scope-OrgID"), "team-a")
        self.assertEqual(urlsplit(sent.url).query, "query=%7Bjob%3D%22x%22%7D")

    def test_header_upstream_unchanged(self) -> None:
        reads = Reads(self, prometheus_path="")
        reads.get("/api/v1/query?query=up", token=SOLO)
        [sent] = reads.sent()
        self.assertEqual(sent.url, MIMIR + "/api/v1/query?query=up")
        self.assertEqual(sent.header("X-Scope-OrgID"), "team-a")


class FormTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(
            parse_form(b"a=1&&b=x+y%2B&c&match%5B%5D=%7B%7D&=z"),
            [(b"a", b"1"), (b"b", b"x y+"), (b"c", b""), (b"match[]", b"{}"), (b"", b"z")],
        )

    def test_refused(self) -> None:
        for data in (b"a=1;b=2", b"a=%", b"a=%2", b"a=%g0", b"%zz=1"):
            self.assertRaises(ReadRefused, parse_form, data)

    def test_encode(self) -> None:
        pairs = [(b"match[]", b'{a="b c"}'), (b"q", "é&=".encode())]
        text = encode_form(pairs)
        self.assertEqual(text, "match%5B%5D=%7Ba%3D%22b+c%22%7D&q=%C3%A9%26%3D")
        self.assertEqual(parse_form(text.encode()), pairs)


class TenantRequiredTests(SynchronousTestCase):
    """
    The label path takes only reads with a tenant (the type says so); a
    read without one, from whatever caller, is refused rather than passed
    on unrewritten.
    """

    def read(self, route_name: str, tenant: Any, query: str = "query=up") -> Any:
        [route] = [r for r in READ_ROUTES if r.api == "prometheus" and r.name == route_name]
        return ReadRequest(route=route, method="GET", path=route.path, tenant=tenant, query=query)

    def label_read(self, read: Any, enforcer: Any = None) -> Any:
        return Deferred.fromCoroutine(
            label_read(read, "tenant", enforcer or LabelEnforcer(InlineParser()))
        )

    def test_no_tenant_refused(self) -> None:
        for name in ("query", "series", "buildinfo", "metadata"):
            for tenant in (None, ""):
                refused = self.failureResultOf(self.label_read(self.read(name, tenant)), ReadRefused)
                self.assertEqual(refused.value.status, 403, name)
                self.assertIn("names no tenant", refused.value.message)

    def test_with_tenant(self) -> None:
        sent = self.successResultOf(self.label_read(self.read("query", "team-a")))
        self.assertIsNone(sent.tenant)
        self.assertEqual(params(sent.query), [("query", UP_A)])

    def test_parser_unavailable(self) -> None:
        """
        No parser process to take the query: 503, to try again.
        """

        @implementer(IPromQLParser)
        class Unavailable:
            def enforce(self, *args: Any) -> Deferred[str]:
                return fail(ParserUnavailable("the gateway is stopping"))

            def stop(self) -> Deferred[None]:
                return succeed(None)

        read = self.read("query", "team-a", "query=" + quote('up{a=~"x"}'))
        refused = self.failureResultOf(
            self.label_read(read, LabelEnforcer(Unavailable())), ReadRefused
        ).value
        self.assertEqual(refused.status, 503)
        self.assertEqual(refused.headers, {"Retry-After": "1"})
        self.assertIn("the gateway is stopping", refused.message)
