"""
The read path's pure parts: the allow-list and canonical paths, the header
policy, the query string and form checks, and the status mapping.
"""

from __future__ import annotations

from twisted.internet import error as ierror
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers

from sealgw.http import CredentialsUnavailable, OperationTimedOut
from sealgw.query import (
    READ_ROUTES,
    NotCanonical,
    QuerySettings,
    ReadRefused,
    ReadUpstream,
    answer_headers,
    answer_status,
    canonical_segments,
    failure_refusal,
    form_body,
    forwarded_headers,
    klein_rules,
    match_read_path,
    query_string,
)
from sealgw.testing import MemoryHTTPClient, script

#: The routes as issue 9 lists them, by API (without the extra prefixes).
ISSUE_PROMETHEUS = {
    "/api/v1/query", "/api/v1/query_range", "/api/v1/query_exemplars", "/api/v1/series",
    "/api/v1/labels", "/api/v1/label/{name}/values", "/api/v1/metadata", "/api/v1/rules",
    "/api/v1/alerts", "/api/v1/status/buildinfo", "/api/v1/format_query",
}
ISSUE_LOKI = {
    "/loki/api/v1/query", "/loki/api/v1/query_range", "/loki/api/v1/labels",
    "/loki/api/v1/label/{name}/values", "/loki/api/v1/series", "/loki/api/v1/index/stats",
    "/loki/api/v1/index/volume", "/loki/api/v1/detected_labels", "/loki/api/v1/patterns",
    "/loki/api/v1/tail",
}
ISSUE_TEMPO = {
    "/api/traces/{trace_id}", "/api/v2/traces/{trace_id}", "/api/search", "/api/search/tags",
    "/api/v2/search/tags", "/api/search/tag/{tag}/values", "/api/v2/search/tag/{tag}/values",
    "/api/echo",
}

#: Paths that try to reach somewhere else upstream, or are not written the
#: one way the allow-list matches.
NOT_CANONICAL = [
    b"/api/v1/../../admin",
    b"/api/v1/query/..",
    b"/api/v1/query/.",
    b"/api/v1/./query",
    b"//api/v1/query",
    b"/api//v1/query",
    b"/api/v1/query/",
    b"/prometheus//api/v1/query",
    b"/api/v1/query%2F..",
    b"/api/v1/query%2f..%2f..%2fadmin",
    b"/api/v1/%2e%2e/admin",
    b"/api/v1/%2E%2E/admin",
    b"/api/v1/label/%2e%2e/values",
    b"/api/v1/label/..%2F..%2Fadmin/values",
    b"/api/v1/label/a%5C..%5Cb/values",
    b"/api/v1/label/..%5cadmin/values",
    b"/api/v1/label/a\\..\\b/values",
    b"/api/v1/label/../values",
    b"/api/v1/query;jsessionid=1",
    b"/api/v1/qu%65ry",
    b"/api/v1/label/caf\xc3\xa9/values",
    b"/api/v1/label/a b/values",
    b"/api/v1/label/a\x00/values",
    b"api/v1/query",
    b"http://mimir.internal/api/v1/query",
    b"",
]


class AllowListTests(SynchronousTestCase):
    def test_routes_are_the_issues(self) -> None:
        """
        The allow-list is exactly issue 9's, API by API.
        """
        by_api: dict[str, set[str]] = {"prometheus": set(), "loki": set(), "tempo": set()}
        for route in READ_ROUTES:
            by_api[route.api].add(route.path)
        self.assertEqual(by_api["prometheus"], ISSUE_PROMETHEUS)
        self.assertEqual(by_api["loki"], ISSUE_LOKI)
        self.assertEqual(by_api["tempo"], ISSUE_TEMPO)

    def test_labels_are_unique(self) -> None:
        labels = [route.label for route in READ_ROUTES]
        self.assertEqual(len(labels), len(set(labels)))

    def test_methods(self) -> None:
        """
        Prometheus and Loki take GET and POST (a form); Tempo and Loki's
        tail only GET.
        """
        for route in READ_ROUTES:
            if route.api == "tempo" or route.websocket:
                self.assertEqual(route.methods, ("GET",), route)
            else:
                self.assertEqual(route.methods, ("GET", "POST"), route)

    def test_match_prefixes(self) -> None:
        """
        Prometheus's routes match with and without C{/prometheus}, Tempo's
        with and without C{/tempo}; the upstream path is the API's own.
        """
        for raw, api, path in [
            (b"/api/v1/query", "prometheus", "/api/v1/query"),
            (b"/prometheus/api/v1/query_range", "prometheus", "/api/v1/query_range"),
            (b"/prometheus/api/v1/status/buildinfo", "prometheus", "/api/v1/status/buildinfo"),
            (b"/loki/api/v1/index/volume", "loki", "/loki/api/v1/index/volume"),
            (b"/api/search/tags", "tempo", "/api/search/tags"),
            (b"/tempo/api/v2/search/tags", "tempo", "/api/v2/search/tags"),
            (b"/tempo/api/echo", "tempo", "/api/echo"),
        ]:
            match = match_read_path(raw)
            assert match is not None, raw
            self.assertEqual((match.route.api, match.path), (api, path), raw)

    def test_match_parameters(self) -> None:
        for raw, path, params in [
            (b"/api/v1/label/job/values", "/api/v1/label/job/values", {"name": "job"}),
            (
                b"/prometheus/api/v1/label/U__my_2e_label/values",
                "/api/v1/label/U__my_2e_label/values",
                {"name": "U__my_2e_label"},
            ),
            (
                b"/loki/api/v1/label/service_name/values",
                "/loki/api/v1/label/service_name/values",
                {"name": "service_name"},
            ),
            (
                b"/api/traces/0af7651916cd43dd8448eb211c80319c",
                "/api/traces/0af7651916cd43dd8448eb211c80319c",
                {"trace_id": "0af7651916cd43dd8448eb211c80319c"},
            ),
            (
                b"/tempo/api/v2/search/tag/span.http.status_code/values",
                "/api/v2/search/tag/span.http.status_code/values",
                {"tag": "span.http.status_code"},
            ),
            (
                b"/api/v2/search/tag/event:name/values",
                "/api/v2/search/tag/event:name/values",
                {"tag": "event:name"},
            ),
        ]:
            match = match_read_path(raw)
            assert match is not None, raw
            self.assertEqual((match.path, dict(match.params)), (path, params), raw)

    def test_unknown_paths(self) -> None:
        """
        Canonical paths that name no read route match nothing (404).
        """
        for raw in [
            b"/api/v1/admin/tsdb/delete_series",
            b"/api/v1/status/config",
            b"/api/v1/targets",
            b"/api/v1/write",
            b"/api/v1/push",
            b"/loki/api/v1/push",
            b"/loki/api/v1/delete",
            b"/loki/api/v1/query_range/extra",
            b"/api/v1/label/job/values/extra",
            b"/api/v1/label/values",
            b"/loki/api/v1/status/buildinfo",
            b"/tempo/api/v1/query",
            b"/prometheus/loki/api/v1/query",
            b"/tempo/loki/api/v1/query",
            b"/prometheus/api/traces/1",
            b"/api/traces",
            b"/config",
        ]:
            self.assertIsNone(match_read_path(raw), raw)
        self.assertRaises(NotCanonical, match_read_path, b"/")

    def test_not_canonical(self) -> None:
        for raw in NOT_CANONICAL:
            self.assertRaises(NotCanonical, canonical_segments, raw)

    def test_not_canonical_says_why(self) -> None:
        for raw, why in [
            (b"/api/v1/query%2F..", "percent-encoded"),
            (b"//api/v1/query", "'//'"),
            (b"/api/v1/../admin", "'..'"),
            (b"/api/v1/label/a\\b/values", "letters, digits"),
            (b"/api/v1/label/caf\xc3\xa9/values", "ASCII"),
            (b"http://x/api/v1/query", "start with '/'"),
        ]:
            with self.assertRaises(NotCanonical) as caught:
                canonical_segments(raw)
            self.assertIn(why, str(caught.exception), raw)

    def test_klein_rules(self) -> None:
        """
        The router gets every route under each prefix of its API, with
        werkzeug's parameter syntax.
        """
        rules = {rule for rule, _ in klein_rules()}
        self.assertIn("/api/v1/label/<name>/values", rules)
        self.assertIn("/prometheus/api/v1/label/<name>/values", rules)
        self.assertIn("/tempo/api/v2/traces/<trace_id>", rules)
        self.assertIn("/loki/api/v1/tail", rules)
        self.assertNotIn("/prometheus/loki/api/v1/query", rules)
        self.assertEqual(len(rules), 11 * 2 + 10 + 8 * 2)


class HeaderPolicyTests(SynchronousTestCase):
    def test_forwarded(self) -> None:
        """
        Content negotiation, cache control, query tags, Grafana's ids and
        trace context pass; credentials, cookies, hop-by-hop headers, the
        tenant header and anything unknown do not.
        """
        headers = Headers(
            {
                b"Accept": [b"application/json"],
                b"Accept-Encoding": [b"gzip", b"br"],
                b"Cache-Control": [b"no-store"],
                b"X-Query-Tags": [b"source=grafana"],
                b"X-Dashboard-Uid": [b"abc"],
                b"X-Panel-Id": [b"4"],
                b"X-Grafana-Org-Id": [b"1"],
                b"traceparent": [b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
                b"Authorization": [b"Bearer client-secret"],
                b"Proxy-Authorization": [b"Basic eDp5"],
                b"Cookie": [b"grafana_session=1"],
                b"X-Scope-OrgID": [b"other"],
                b"Connection": [b"keep-alive"],
                b"Keep-Alive": [b"timeout=5"],
                b"TE": [b"trailers"],
                b"Upgrade": [b"websocket"],
                b"Transfer-Encoding": [b"chunked"],
                b"Host": [b"gateway"],
                b"Content-Length": [b"3"],
                b"X-Forwarded-For": [b"10.0.0.1"],
                b"X-Grafana-Id": [b"a.jwt.token"],
                b"X-Loki-Query-Limits": [b"{}"],
            }
        )
        self.assertEqual(
            forwarded_headers(headers),
            {
                "accept": "application/json",
                "accept-encoding": "gzip, br",
                "cache-control": "no-store",
                "x-query-tags": "source=grafana",
                "x-dashboard-uid": "abc",
                "x-panel-id": "4",
                "x-grafana-org-id": "1",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            },
        )

    def test_connection_names_hop_by_hop(self) -> None:
        """
        A header C{Connection} names is for this connection only, whatever
        its name.
        """
        headers = Headers(
            {
                b"Connection": [b"close, Accept-Encoding", b" X-Query-Tags "],
                b"Accept-Encoding": [b"gzip"],
                b"X-Query-Tags": [b"a=b"],
                b"Accept": [b"*/*"],
            }
        )
        self.assertEqual(forwarded_headers(headers), {"accept": "*/*"})

    def test_not_ascii_dropped(self) -> None:
        headers = Headers({b"Accept": [b"caf\xc3\xa9"], b"X-Panel-Id": [b"2"]})
        self.assertEqual(forwarded_headers(headers), {"x-panel-id": "2"})

    def test_answer_headers(self) -> None:
        """
        Back to the client: the type, the encoding and C{Retry-After}, and
        C{Cache-Control: no-store} whatever the upstream said.
        """
        headers = Headers(
            {
                b"Content-Type": [b"application/json"],
                b"Content-Encoding": [b"gzip"],
                b"Retry-After": [b"7"],
                b"Cache-Control": [b"public, max-age=600"],
                b"Set-Cookie": [b"lb=1"],
                b"WWW-Authenticate": [b"Basic realm=mimir"],
                b"Content-Length": [b"10"],
                b"Connection": [b"close"],
                b"Location": [b"http://internal/"],
                b"X-Internal": [b"1"],
            }
        )
        self.assertEqual(
            answer_headers(headers),
            [
                (b"content-type", b"application/json"),
                (b"retry-after", b"7"),
                (b"content-encoding", b"gzip"),
                (b"cache-control", b"no-store"),
            ],
        )

    def test_accept_encoding_as_sent(self) -> None:
        """
        The client's C{Accept-Encoding} goes upstream as the client wrote
        it, preferences and all; none when it sent none.
        """
        for sent in (b"gzip", b"br, gzip", b"gzip;q=1.0, identity;q=0.5, *;q=0", b"identity"):
            self.assertEqual(
                forwarded_headers(Headers({b"Accept-Encoding": [sent]})),
                {"accept-encoding": sent.decode()},
            )
        self.assertNotIn("accept-encoding", forwarded_headers(Headers({b"Accept": [b"*/*"]})))

    def test_answer_encoding(self) -> None:
        """
        The body passes as encoded, so its C{Content-Encoding} comes with
        it, every coding in the order applied; an answer that names none
        (or only an empty one) gets none, never an empty header.
        """
        for given, expected in (
            ([b"gzip"], b"gzip"),
            ([b"gzip", b"br"], b"gzip, br"),
            ([b"deflate,  gzip"], b"deflate, gzip"),
            ([b""], None),
            ([b" , "], None),
            (None, None),
        ):
            headers = Headers({b"Content-Type": [b"application/json"]})
            if given is not None:
                headers.setRawHeaders(b"Content-Encoding", given)
            answer = dict(answer_headers(headers))
            self.assertEqual(answer.get(b"content-encoding"), expected, given)
            self.assertEqual(answer[b"content-type"], b"application/json")

    def test_answer_vary(self) -> None:
        """
        Of the upstream's C{Vary}, the request headers the gateway passes
        on (C{Accept-Encoding} first of all); headers that never reach the
        upstream cannot have shaped its answer.
        """
        for given, expected in (
            ([b"Accept-Encoding"], b"Accept-Encoding"),
            ([b"Origin", b"accept-encoding, Accept"], b"accept-encoding, Accept"),
            ([b"Origin, Authorization"], None),
            ([b"*"], None),
            (None, None),
        ):
            headers = Headers({b"Content-Encoding": [b"gzip"]})
            if given is not None:
                headers.setRawHeaders(b"Vary", given)
            self.assertEqual(dict(answer_headers(headers)).get(b"vary"), expected, given)


class RequestTests(SynchronousTestCase):
    def test_query_string_passes_as_it_came(self) -> None:
        for uri, query in [
            (b"/api/v1/query", ""),
            (b"/api/v1/query?", ""),
            (b"/api/v1/query?query=up%7Bjob%3D%22a%22%7D&time=1.5",
             "query=up%7Bjob%3D%22a%22%7D&time=1.5"),
            (b"/api/v1/series?match%5B%5D=up&match[]=x&start=1", "match%5B%5D=up&match[]=x&start=1"),
            (b"/api/v1/query?query=a+b&x=%2F..%2F", "query=a+b&x=%2F..%2F"),
            (b"/api/v1/query?a=1?b=2", "a=1?b=2"),
        ]:
            self.assertEqual(query_string(uri), query, uri)

    def test_query_string_refused(self) -> None:
        for uri in [b"/q?a=b c", b"/q?a=\xc3\xa9", b"/q?a=\x00", b"/q?a=b#frag", b"/q?a=\tb"]:
            with self.assertRaises(ReadRefused) as caught:
                query_string(uri)
            self.assertEqual(caught.exception.status, 400, uri)

    def test_form_body(self) -> None:
        form = "application/x-www-form-urlencoded"
        self.assertEqual(form_body("GET", b"ignored", None, None, 10), (None, None))
        self.assertEqual(form_body("POST", b"", None, None, 10), (None, None))
        self.assertEqual(form_body("POST", b"query=up", form, None, 10), (b"query=up", form))
        self.assertEqual(
            form_body("POST", b"q=1", form + "; charset=UTF-8", "identity", 10),
            (b"q=1", form + "; charset=UTF-8"),
        )
        self.assertEqual(form_body("POST", b"", form, None, 10), (b"", form))
        self.assertEqual(form_body("POST", b"q=1", "Application/X-WWW-Form-Urlencoded", None, 10),
                         (b"q=1", "Application/X-WWW-Form-Urlencoded"))

    def test_form_body_refused(self) -> None:
        form = "application/x-www-form-urlencoded"
        for args, status in [
            (("POST", b"x" * 11, form, None, 10), 413),
            (("POST", b"{}", "application/json", None, 10), 415),
            (("POST", b"q=1", None, None, 10), 415),
            (("POST", b"q=1", "multipart/form-data; boundary=x", None, 10), 415),
            (("POST", b"q=1", form, "gzip", 10), 415),
        ]:
            with self.assertRaises(ReadRefused) as caught:
                form_body(*args)  # type: ignore[arg-type]
            self.assertEqual(caught.exception.status, status, args)


class OutcomeTests(SynchronousTestCase):
    def test_answer_status(self) -> None:
        for upstream, client in [
            (200, 200), (204, 204), (206, 206),
            (400, 400), (404, 404), (406, 406), (413, 413), (422, 422), (429, 429),
            (499, 499),
            (500, 502), (501, 502), (502, 502), (503, 503), (504, 504), (599, 502),
        ]:
            self.assertEqual(answer_status(upstream, "prometheus"), client, upstream)

    def test_answer_status_refused(self) -> None:
        for upstream in (401, 403, 407, 100, 301, 302, 304, 307, 600, 0):
            with self.assertRaises(ReadRefused) as caught:
                answer_status(upstream, "loki")
            self.assertEqual(caught.exception.status, 502, upstream)
            self.assertIn("loki", caught.exception.message)

    def test_failures(self) -> None:
        refused = ierror.ConnectionRefusedError("111: Connection refused")
        for exc, status in [
            (OperationTimedOut("waiting for the response", 30), 504),
            (ierror.TimeoutError(), 504),
            (ierror.TCPTimedOutError(), 504),
            (CredentialsUnavailable("no token"), 503),
            (refused, 503),
            (ierror.DNSLookupError("mimir.internal"), 503),
            (ResponseNeverReceived([Failure(ierror.ConnectionLost())]), 503),
            (ResponseFailed([Failure(ierror.ConnectionLost())]), 502),
            (ValueError("surprise"), 502),
        ]:
            refusal = failure_refusal(exc, "tempo")
            self.assertEqual(refusal.status, status, exc)
            # Never the upstream's address or error text.
            self.assertNotIn("mimir.internal", refusal.message)
            self.assertNotIn("111", refusal.message)
        # The unforeseen one is logged with its traceback.
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class SettingsTests(SynchronousTestCase):
    def client(self) -> MemoryHTTPClient:
        return MemoryHTTPClient(script())

    def test_url_for(self) -> None:
        mimir = ReadUpstream(self.client(), "http://mimir:8080", "/prometheus")
        self.assertEqual(
            mimir.url_for("/api/v1/query", "query=up&time=1"),
            "http://mimir:8080/prometheus/api/v1/query?query=up&time=1",
        )
        prometheus = ReadUpstream(self.client(), "http://prometheus:9090/")
        self.assertEqual(
            prometheus.url_for("/api/v1/labels", ""), "http://prometheus:9090/api/v1/labels"
        )
        azure = ReadUpstream(self.client(), "https://ws.example/base?api-version=1", "/p/")
        self.assertEqual(
            azure.url_for("/api/v1/query", "query=up"),
            "https://ws.example/base/p/api/v1/query?api-version=1&query=up",
        )

    def test_validation(self) -> None:
        self.assertRaises(ValueError, ReadUpstream, self.client(), "http://m", "prometheus")
        self.assertRaises(ValueError, ReadUpstream, self.client(), "http://m", "/p?x=1")
        self.assertRaises(ValueError, ReadUpstream, self.client(), "http://m", "", 0)
        self.assertRaises(ValueError, QuerySettings, max_form_bytes=0)

    def test_upstream_by_api(self) -> None:
        loki = ReadUpstream(self.client(), "http://loki:3100")
        settings = QuerySettings(loki=loki)
        self.assertIs(settings.upstream("loki"), loki)
        self.assertIsNone(settings.upstream("prometheus"))
        self.assertIsNone(settings.upstream("tempo"))
