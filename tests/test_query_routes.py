"""
The read routes in memory: C{QueryRoutes} served to treq's C{StubTreq},
its upstreams L{sealgw.testing.MemoryHTTPClient}s, the gate over a token
file.  What passes, with which tenant and headers; what is refused; and
what the client hears for each kind of upstream answer.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Optional

from klein import Klein
from treq.testing import StubTreq
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from werkzeug.exceptions import HTTPException
from zope.interface import implementer

from sealgw.credentials import ICredentials
from sealgw.http import HTTPClient, OperationTimedOut
from sealgw.query import PREFIXES, READ_ROUTES
from sealgw.testing import MemoryResponse, SentRequest, script
from sealgw.web import GatewayRoot
from sealgw.web._errors import answer_routing_error
from sealgw.web.query import TAIL_NOT_PROXIED, ReadAndPushRoutes
from tests.test_query_support import (
    JSON_OK,
    LOKI,
    MIMIR,
    PAIR,
    SOLO,
    TEMPO,
    TRIO,
    Reads,
    header,
)

BASES = {"prometheus": MIMIR + "/prometheus", "loki": LOKI, "tempo": TEMPO}
PARAMS = {"name": "job", "trace_id": "0af7651916cd43dd8448eb211c80319c", "tag": "span.http.method"}


@implementer(ICredentials)
class GatewayToken:
    """
    The gateway's own credentials for an upstream.
    """

    def authorization(self) -> Deferred[Optional[bytes]]:
        return succeed(b"Bearer gateway-secret")


def _only(reads: Reads, api: str = "prometheus") -> SentRequest:
    sent = reads.sent(api)
    assert len(sent) == 1, f"expected one upstream request, got {sent}"
    return sent[0]


class RoutesTests(SynchronousTestCase):
    def test_every_route_passes(self) -> None:
        """
        Every read route, under each of its API's prefixes, reaches its
        API's upstream at the API's own path (under the configured prefix),
        with the query string and the identity's tenant.
        """
        reads = Reads(self)
        for route in READ_ROUTES:
            if route.websocket:
                continue
            path = route.path.format_map(PARAMS)
            for prefix in PREFIXES[route.api]:
                before = len(reads.sent(route.api))
                response, body = reads.get(prefix + path + "?start=1&end=2")
                self.assertEqual((response.code, body), (200, JSON_OK), prefix + path)
                sent = reads.sent(route.api)[before:]
                self.assertEqual(len(sent), 1, prefix + path)
                self.assertEqual(sent[0].method, "GET")
                self.assertEqual(sent[0].url, BASES[route.api] + path + "?start=1&end=2")
                self.assertEqual(sent[0].header("X-Scope-OrgID"), "team-a")

    def test_query_string_as_it_came(self) -> None:
        """
        The query string reaches the upstream byte for byte: Grafana's
        percent-encoding, C{match[]} repeated, C{+} for spaces.
        """
        reads = Reads(self)
        query = (
            "match%5B%5D=up%7Bjob%3D%22node%22%7D&match%5B%5D=process_start_time_seconds"
            "&start=1700000000&end=1700003600"
        )
        response, _ = reads.get("/api/v1/series?" + query)
        self.assertEqual(response.code, 200)
        self.assertEqual(_only(reads).url, MIMIR + "/prometheus/api/v1/series?" + query)

    def test_upstream_without_prefix(self) -> None:
        """
        The C{/prometheus} a client writes is its own choice; a plain
        Prometheus upstream (no configured prefix) gets C{/api/v1/...}.
        """
        reads = Reads(self, prometheus_path="")
        reads.get("/prometheus/api/v1/query?query=up")
        reads.get("/api/v1/query?query=up")
        self.assertEqual(
            [s.url for s in reads.sent()],
            [MIMIR + "/api/v1/query?query=up"] * 2,
        )

    def test_post_form(self) -> None:
        """
        A POST form, as Grafana's Prometheus datasource sends it, is
        relayed as it came with its content type.
        """
        reads = Reads(self)
        body = b"query=sum%28rate%28up%5B5m%5D%29%29&start=1700000000&end=1700003600&step=15"
        response, answer = reads.post(
            "/api/v1/query_range",
            data=body,
            headers={"Content-Type": ["application/x-www-form-urlencoded"]},
        )
        self.assertEqual((response.code, answer), (200, JSON_OK))
        sent = _only(reads)
        self.assertEqual((sent.method, sent.body), ("POST", body))
        self.assertEqual(sent.url, MIMIR + "/prometheus/api/v1/query_range")
        self.assertEqual(sent.header("Content-Type"), "application/x-www-form-urlencoded")

    def test_post_loki_form(self) -> None:
        reads = Reads(self)
        response, _ = reads.post(
            "/loki/api/v1/query_range", data={"query": '{job="x"}', "limit": "100"}
        )
        self.assertEqual(response.code, 200)
        sent = _only(reads, "loki")
        self.assertEqual(sent.body, b"query=%7Bjob%3D%22x%22%7D&limit=100")

    def test_post_without_body(self) -> None:
        """
        A POST whose parameters are all in the query string has no body
        to relay.
        """
        reads = Reads(self)
        response, _ = reads.post("/api/v1/labels?match[]=up")
        self.assertEqual(response.code, 200)
        sent = _only(reads)
        self.assertEqual((sent.method, sent.body, sent.header("Content-Type")), ("POST", b"", None))

    def test_post_refused(self) -> None:
        reads = Reads(self, max_form_bytes=100)
        for headers, data, status in [
            ({"Content-Type": ["application/json"]}, b'{"query":"up"}', 415),
            ({"Content-Type": ["text/plain"]}, b"query=up", 415),
            ({"Content-Type": ["application/x-www-form-urlencoded"],
              "Content-Encoding": ["gzip"]}, b"x", 415),
            ({"Content-Type": ["application/x-www-form-urlencoded"]}, b"q=" + b"x" * 100, 413),
        ]:
            response, body = reads.post("/api/v1/query", headers=headers, data=data)
            self.assertEqual(response.code, status, body)
        self.assertEqual(reads.sent(), [])

    def test_get_body_not_sent(self) -> None:
        reads = Reads(self)
        reads.request("GET", "/api/v1/query?query=up", data=b"query=other")
        self.assertEqual(_only(reads).body, b"")

    def test_tempo_is_get_only(self) -> None:
        reads = Reads(self)
        response, body = reads.post("/api/search", data={"q": "{}"})
        self.assertEqual(response.code, 405)
        self.assertIn("GET", header(response, "Allow") or "")
        self.assertEqual(reads.sent("tempo"), [])

    def test_other_methods(self) -> None:
        reads = Reads(self)
        for method in ("PUT", "DELETE", "PATCH"):
            response, _ = reads.request(method, "/api/v1/query")
            self.assertEqual(response.code, 405, method)
        self.assertEqual(reads.sent(), [])

    def test_api_not_enabled(self) -> None:
        """
        An API with no upstream answers 404 on all its routes, before
        authentication.
        """
        reads = Reads(self, apis=("prometheus",))
        for path in ("/loki/api/v1/query?query=x", "/api/search", "/tempo/api/echo"):
            response, body = reads.get(path, token=None)
            self.assertEqual(response.code, 404, path)
            self.assertIn(b"reads are not enabled on this gateway", body)

    def test_unknown_paths(self) -> None:
        reads = Reads(self)
        for path in (
            "/api/v1/admin/tsdb/delete_series",
            "/api/v1/status/config",
            "/api/v1/targets",
            "/api/v1/query/extra",
            "/loki/api/v1/delete",
            "/api/v1/label/job/values/extra",
            "/prometheus/api/search",
            "/metrics",
        ):
            response, body = reads.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(body, b"no route serves this path on this listener\n")
        for api in ("prometheus", "loki", "tempo"):
            self.assertEqual(reads.sent(api), [])

    def test_tail_is_501(self) -> None:
        """
        Loki's tail (a WebSocket) is not proxied: an authenticated client
        is told so with 501; nothing goes upstream.
        """
        reads = Reads(self)
        response, body = reads.get(
            "/loki/api/v1/tail?query=%7Bjob%3D%22x%22%7D",
            headers={"Connection": ["Upgrade"], "Upgrade": ["websocket"]},
        )
        self.assertEqual(response.code, 501)
        self.assertEqual(body.decode(), TAIL_NOT_PROXIED + "\n")
        response, _ = reads.get("/loki/api/v1/tail", token=None)
        self.assertEqual(response.code, 401)
        self.assertEqual(reads.sent("loki"), [])


class PathTests(SynchronousTestCase):
    """
    Paths that try to reach another upstream path are refused, 400 or 404,
    and never sent.
    """

    def test_traversal_refused(self) -> None:
        reads = Reads(self)
        for path in (
            "/api/v1/../../admin",
            "/api/v1/query/../../admin",
            "/api/v1/query%2F..",
            "/api/v1/query%2f..%2f..%2fapi%2fv1%2fadmin",
            "//api/v1/query",
            "/api//v1/query",
            "/prometheus//api/v1/query",
            "/api/v1/query/",
            "/api/v1/%2e%2e/admin",
            "/api/v1/label/%2e%2e/values",
            "/api/v1/label/%2E%2E%2F%2E%2E%2Fadmin/values",
            "/api/v1/label/..%2F..%2Fadmin/values",
            "/api/v1/label/..%5C..%5Cadmin/values",
            "/api/v1/label/../values",
            "/api/v1/label/./values",
            "/api/v1/qu%65ry",
            "/api/v1/query;x=1",
            "/loki/api/v1/label/%2e%2e/values",
            "/api/traces/..%2F..%2Fadmin",
            "/tempo/api/search/tag/%2e%2e/values",
        ):
            response, body = reads.get(path + "?query=up")
            self.assertIn(response.code, (400, 404), (path, body))
        for api in ("prometheus", "loki", "tempo"):
            self.assertEqual(reads.sent(api), [])

    def test_non_canonical_is_400_saying_why(self) -> None:
        """
        A path the router would match once tidied (Twisted merges a
        leading C{//}; percent-decoding makes C{%2e%2e} a parameter) is
        refused, not tidied.
        """
        reads = Reads(self)
        for path, why in [
            ("//api/v1/query", b"'//'"),
            ("/api/v1/label/%2e%2e/values", b"percent-encoded"),
            ("/api/v1/qu%65ry", b"percent-encoded"),
        ]:
            response, body = reads.get(path)
            self.assertEqual(response.code, 400, path)
            self.assertIn(b"not a canonical read path", body)
            self.assertIn(why, body)


class TenantTests(SynchronousTestCase):
    def tenant_of(self, reads: Reads, token: str, tenant: str | None) -> tuple[int, Any]:
        headers = {"X-Scope-OrgID": [tenant]} if tenant is not None else {}
        before = len(reads.sent())
        response, body = reads.get("/api/v1/query?query=up", token=token, headers=headers)
        sent = reads.sent()[before:]
        return response.code, (sent[0].header("X-Scope-OrgID") if sent else body)

    def test_tenant_from_identity(self) -> None:
        reads = Reads(self)
        self.assertEqual(self.tenant_of(reads, SOLO, None), (200, "team-a"))
        self.assertEqual(self.tenant_of(reads, SOLO, "team-a"), (200, "team-a"))
        self.assertEqual(self.tenant_of(reads, PAIR, "team-b"), (200, "team-b"))

    def test_foreign_tenant_403(self) -> None:
        reads = Reads(self)
        status, body = self.tenant_of(reads, SOLO, "team-b")
        self.assertEqual(status, 403)
        self.assertIn(b"'team-b'", body)
        self.assertEqual(self.tenant_of(reads, PAIR, "team-c")[0], 403)
        self.assertEqual(reads.sent(), [])

    def test_tenant_required(self) -> None:
        reads = Reads(self)
        self.assertEqual(self.tenant_of(reads, PAIR, None)[0], 400)

    def test_federation_allowed(self) -> None:
        """
        C{a|b} passes when the identity may read every tenant named.
        """
        reads = Reads(self)
        self.assertEqual(self.tenant_of(reads, PAIR, "team-a|team-b"), (200, "team-a|team-b"))
        self.assertEqual(
            self.tenant_of(reads, TRIO, "team-c|team-a|team-c"), (200, "team-c|team-a")
        )
        for api, path in (("loki", "/loki/api/v1/labels"), ("tempo", "/api/search")):
            response, _ = reads.get(path, token=TRIO, headers={"X-Scope-OrgID": ["team-a|team-b"]})
            self.assertEqual(response.code, 200)
            self.assertEqual(_only(reads, api).header("X-Scope-OrgID"), "team-a|team-b")

    def test_federation_denied(self) -> None:
        """
        C{a|b} naming a tenant the identity may not read is 403, and 400
        when federation is off.
        """
        reads = Reads(self)
        self.assertEqual(self.tenant_of(reads, PAIR, "team-a|team-c")[0], 403)
        self.assertEqual(self.tenant_of(reads, SOLO, "team-a|team-b")[0], 403)
        self.assertEqual(reads.sent(), [])
        off = Reads(self, federation=False)
        status, body = self.tenant_of(off, PAIR, "team-a|team-b")
        self.assertEqual(status, 400)
        self.assertIn(b"a|b", body)
        self.assertEqual(off.sent(), [])

    def test_unauthenticated(self) -> None:
        reads = Reads(self)
        response, _ = reads.get("/api/v1/query?query=up", token=None)
        self.assertEqual(response.code, 401)
        self.assertIn("Bearer", header(response, "WWW-Authenticate") or "")
        response, _ = reads.get("/api/v1/query?query=up", token="not-a-token-0123456789")
        self.assertEqual(response.code, 401)
        self.assertEqual(reads.sent(), [])

    def test_basic_auth_username_is_tenant(self) -> None:
        reads = Reads(self)
        basic = base64.b64encode(f"team-b:{PAIR}".encode()).decode()
        response, _ = reads.get(
            "/api/v1/query?query=up", token=None, headers={"Authorization": [f"Basic {basic}"]}
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(_only(reads).header("X-Scope-OrgID"), "team-b")


class HeaderTests(SynchronousTestCase):
    def test_authorization_never_forwarded(self) -> None:
        """
        The client's token stays here; the upstream gets the gateway's own
        credentials (or none).
        """
        reads = Reads(self)
        reads.get("/api/v1/query?query=up")
        self.assertIsNone(_only(reads).header("Authorization"))
        gateway = Reads(self, credentials=GatewayToken())
        gateway.get("/loki/api/v1/labels")
        sent = _only(gateway, "loki")
        self.assertEqual(sent.header("Authorization"), "Bearer gateway-secret")
        for _, values in sent.headers.getAllRawHeaders():
            self.assertNotIn(SOLO.encode(), b" ".join(values))

    def test_request_headers(self) -> None:
        """
        Accept-Encoding, Accept and Grafana's headers pass; hop-by-hop
        headers, cookies, forwarding headers and a forged tenant do not.
        """
        reads = Reads(self)
        reads.get(
            "/api/v1/query?query=up",
            headers={
                "Accept": ["application/json"],
                "Accept-Encoding": ["br"],
                "X-Query-Tags": ["source=grafana"],
                "X-Dashboard-Uid": ["d1"],
                "Keep-Alive": ["timeout=5"],
                "TE": ["trailers"],
                "Upgrade": ["h2c"],
                "Proxy-Authorization": ["Basic eDp5"],
                "Cookie": ["grafana_session=abc"],
                "X-Forwarded-For": ["10.1.1.1"],
                "X-Something": ["else"],
            },
        )
        sent = _only(reads)
        self.assertEqual(sent.header("Accept"), "application/json")
        # treq, the test's client, adds its own gzip.
        self.assertIn("br", sent.header("Accept-Encoding") or "")
        self.assertEqual(sent.header("X-Query-Tags"), "source=grafana")
        self.assertEqual(sent.header("X-Dashboard-Uid"), "d1")
        for name in ("Keep-Alive", "TE", "Upgrade", "Proxy-Authorization", "Cookie",
                     "X-Forwarded-For", "X-Something", "Authorization"):
            self.assertIsNone(sent.header(name), name)

    def test_response_headers(self) -> None:
        """
        The upstream's status, content type and content encoding pass;
        its cookies, challenges and other headers do not; nothing caches.
        """
        answer = MemoryResponse(
            200,
            b"\x01\x02compressed",
            {
                "Content-Type": "application/x-protobuf",
                "Content-Encoding": "br",
                "Set-Cookie": "lb=abc",
                "WWW-Authenticate": "Basic realm=internal",
                "X-Internal-Host": "mimir-7",
                "Cache-Control": "public, max-age=300",
            },
        )
        reads = Reads(self, {"tempo": script(answer)})
        response, body = reads.get("/api/v2/traces/abc", headers={"Accept-Encoding": ["br"]})
        self.assertEqual((response.code, body), (200, b"\x01\x02compressed"))
        self.assertEqual(header(response, "Content-Type"), "application/x-protobuf")
        self.assertEqual(header(response, "Content-Encoding"), "br")
        self.assertEqual(header(response, "Cache-Control"), "no-store")
        for name in ("Set-Cookie", "WWW-Authenticate", "X-Internal-Host"):
            self.assertIsNone(header(response, name), name)

    def test_no_content_type(self) -> None:
        """
        An answer without a type is not given Twisted's C{text/html}.
        """
        reads = Reads(self, {"prometheus": script(MemoryResponse(200, b"x"))})
        response, _ = reads.get("/api/v1/query")
        self.assertIsNone(header(response, "Content-Type"))


def _json_error(status: int, kind: str, **headers: str) -> MemoryResponse:
    body = json.dumps({"status": "error", "errorType": kind, "error": "x"}).encode()
    return MemoryResponse(status, body, {"Content-Type": "application/json", **headers})


class UpstreamAnswerTests(SynchronousTestCase):
    def answer(self, answer: Any, api: str = "prometheus") -> tuple[Any, bytes, Reads]:
        reads = Reads(self, {api: script(answer)})
        path = {"prometheus": "/api/v1/query?query=up", "loki": "/loki/api/v1/query",
                "tempo": "/api/search"}[api]
        response, body = reads.get(path)
        return response, body, reads

    def test_4xx_passed_through(self) -> None:
        """
        The upstream's 4xx, body and type reach the client (Grafana shows
        Prometheus's own error message), C{Retry-After} with a 429.
        """
        for answer in (
            _json_error(400, "bad_data"),
            _json_error(404, "not_found"),
            _json_error(422, "execution"),
            _json_error(429, "too_many", **{"Retry-After": "9"}),
        ):
            response, body, _ = self.answer(answer)
            self.assertEqual((response.code, body), (answer.status, answer.body))
            self.assertEqual(header(response, "Content-Type"), "application/json")
        self.assertEqual(header(response, "Retry-After"), "9")

    def test_5xx_never_2xx(self) -> None:
        """
        A 5xx is 502 (503 and 504 keep theirs), the upstream's error body
        with it.
        """
        for status, expected in ((500, 502), (501, 502), (502, 502), (503, 503), (504, 504)):
            answer = _json_error(status, "internal", **{"Retry-After": "3"})
            response, body, _ = self.answer(answer, "loki")
            self.assertEqual((response.code, body), (expected, answer.body), status)
        self.assertEqual(header(response, "Retry-After"), "3")

    def test_credentials_refused_is_502(self) -> None:
        """
        The upstream refusing the gateway is not the client's fault: 502,
        without the upstream's challenge.
        """
        for status in (401, 403, 407):
            answer = MemoryResponse(
                status, b"bad token", {"WWW-Authenticate": 'Basic realm="x"'}
            )
            response, body, _ = self.answer(answer, "tempo")
            self.assertEqual(response.code, 502, status)
            self.assertIn(b"refused the gateway's credentials", body)
            self.assertIsNone(header(response, "WWW-Authenticate"))

    def test_redirect_is_502(self) -> None:
        answer = MemoryResponse(302, b"", {"Location": "http://elsewhere/"})
        response, _, _ = self.answer(answer)
        self.assertEqual(response.code, 502)
        self.assertIsNone(header(response, "Location"))

    def test_failures(self) -> None:
        """
        Connection refused, DNS failures and resets before an answer are
        503, a broken answer 502, a timeout 504; the client never learns
        the upstream's address.
        """
        for exc, status in [
            (ierror.ConnectionRefusedError("mimir.internal:8080"), 503),
            (ierror.DNSLookupError("mimir.internal"), 503),
            (ResponseNeverReceived([Failure(ierror.ConnectionDone())]), 503),
            (ResponseFailed([Failure(ierror.ConnectionLost())]), 502),
            (OperationTimedOut("waiting for the response", 30), 504),
        ]:
            response, body, reads = self.answer(exc)
            self.assertEqual(response.code, status, exc)
            self.assertNotIn(b"mimir.internal", body)
            self.assertEqual(len(reads.sent()), 1, "reads are not retried")
        self.flushLoggedErrors()

    def test_not_retried(self) -> None:
        reads = Reads(self, {"prometheus": script(_json_error(503, "unavailable"))})
        response, _ = reads.get("/api/v1/query?query=up")
        self.assertEqual(response.code, 503)
        self.assertEqual(len(reads.sent()), 1)

    def test_credentials_unavailable(self) -> None:
        class Broken:
            def authorization(self) -> Deferred[bytes]:
                return fail(RuntimeError("token endpoint said no"))

        reads = Reads(self, credentials=Broken())  # type: ignore[arg-type]
        response, body = reads.get("/api/v1/query?query=up")
        self.assertEqual(response.code, 503)
        self.assertNotIn(b"token endpoint", body)

    def test_response_timeout_on_clock(self) -> None:
        """
        Through the real client: no status and headers within its
        C{response} timeout is 504, and the upstream request is cancelled.
        """
        clock = Clock()
        cancelled: list[str] = []

        class Silent:
            def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:
                # The URL as treq would send it.
                return Deferred(lambda _: cancelled.append(url.to_uri().to_text()))

        client = HTTPClient(clock, name="mimir", treq=Silent())
        reads = Reads(self, clients={"prometheus": client})
        d = reads.stub.get("http://gateway.example/api/v1/query?query=up",
                           headers={"Authorization": [f"Bearer {SOLO}"]})
        reads.stub.flush()
        self.assertNoResult(d)
        clock.advance(client.timeouts.response)
        reads.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 504)
        self.assertEqual(cancelled, [MIMIR + "/prometheus/api/v1/query?query=up"])


class CapTests(SynchronousTestCase):
    def test_declared_length_over_cap(self) -> None:
        """
        An answer that says it is larger than the cap is refused before
        any of it is sent.
        """
        reads = Reads(self, {"loki": script(MemoryResponse(200, b"x" * 101))},
                      max_response_bytes=100)
        response, body = reads.get("/loki/api/v1/query_range?query=x")
        self.assertEqual(response.code, 502)
        self.assertIn(b"larger than the gateway's limit of 100 bytes", body)

    def test_at_cap(self) -> None:
        reads = Reads(self, {"loki": script(MemoryResponse(200, b"x" * 100, chunks=7))},
                      max_response_bytes=100)
        response, body = reads.get("/loki/api/v1/query_range?query=x")
        self.assertEqual((response.code, body), (200, b"x" * 100))

    def test_streamed_past_cap_is_cut(self) -> None:
        """
        An answer of no declared length that grows past the cap is cut off:
        the client's connection drops, so it cannot take the part for the
        whole.
        """
        answer = MemoryResponse(200, b"y" * 250, {"Content-Type": "application/json"},
                                chunks=40, hold=True)
        reads = Reads(self, {"prometheus": script(answer)}, max_response_bytes=100)
        d = reads.stub.get("http://gateway.example/api/v1/query_range?query=up",
                           headers={"Authorization": [f"Bearer {SOLO}"]})
        reads.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = response.content()
        reads.stub.flush()
        self.failureResultOf(body, ResponseFailed)


class _Pushes:
    """
    Stands in for the push routes: their paths, and their 404.
    """

    app = Klein()

    @app.route("/api/v1/push", methods=["POST"])
    @app.route("/loki/api/v1/push", methods=["POST"])
    def push(self, request: Any) -> bytes:
        return b"pushed"

    @app.handle_errors(HTTPException)
    def routing_error(self, request: Any, failure: Any) -> bytes:
        return answer_routing_error(request, failure.value)


class ReadAndPushTests(SynchronousTestCase):
    """
    A listener serving both: read paths (any method) go to the read
    routes, everything else to the push routes, unchanged.
    """

    def setUp(self) -> None:
        self.reads = Reads(self)
        resource = ReadAndPushRoutes(self.reads.routes, _Pushes().app.resource())
        self.reads.stub = StubTreq(GatewayRoot(routes=resource, ops=None))

    def test_reads(self) -> None:
        for path in ("/api/v1/query?query=up", "/prometheus/api/v1/labels", "/loki/api/v1/labels",
                     "/api/search", "/tempo/api/echo"):
            response, body = self.reads.get(path)
            self.assertEqual((response.code, body), (200, JSON_OK), path)

    def test_pushes(self) -> None:
        for path in ("/api/v1/push", "/loki/api/v1/push"):
            response, body = self.reads.post(path, data=b"x")
            self.assertEqual((response.code, body), (200, b"pushed"), path)
        response, _ = self.reads.get("/api/v1/push")
        self.assertEqual(response.code, 405)

    def test_read_path_wrong_method(self) -> None:
        response, _ = self.reads.post("/api/search")
        self.assertEqual(response.code, 405)
        self.assertEqual(header(response, "Allow"), "GET, HEAD")

    def test_neither(self) -> None:
        for path in ("/nothing", "/api/v1/targets", "/api/v1/../v1/query", "/api/v1/query%2F.."):
            response, body = self.reads.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(body, b"no route serves this path on this listener\n")
        self.assertEqual(self.reads.sent(), [])

    def test_tidied_read_path_refused(self) -> None:
        """
        C{//api/v1/query} is a read path once Twisted has merged its
        slashes: the read routes refuse it as not canonical.
        """
        response, body = self.reads.get("//api/v1/query")
        self.assertEqual(response.code, 400)
        self.assertIn(b"not a canonical read path", body)
