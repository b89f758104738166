"""
End to end, tenancy by label: a real Prometheus holding two tenants'
series (and one series of nobody's), read through a gateway whose
upstream has C{tenancy: {label: tenant}}.

The oracle is a second Prometheus holding only tenant A's series, with the
same labels and samples: whatever A asks through the gateway must answer
exactly what that Prometheus answers directly, for tricky queries too
(C{or}, C{unless}, subqueries, C{label_replace}, C{{__name__=~".+"}},
aggregations, C{absent}, vector matching).  B's series are worth a million
and more, so a leak would also show in any sum.
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import urlencode

from twisted.trial.unittest import TestCase

from tests.e2e_support import (
    TEST_TIMEOUT,
    Prometheus,
    bearer,
    http_client,
    now_ms,
    remote_write_body,
    require_prometheus,
    start_gateway,
    start_prometheus,
    wait_for_series,
    write_request,
)

ALICE = "tok-alice-0123456789"  # team-a
BOB = "tok-bob-0123456789"  # team-b
BOTH = "tok-both-0123456789"  # team-a and team-b
TOKENS = [
    {"name": "alice", "token": ALICE, "tenants": ["team-a"]},
    {"name": "bob", "token": BOB, "tenants": ["team-b"]},
    {"name": "both", "token": BOTH, "tenants": ["team-a", "team-b"]},
]

STEP_MS = 15_000
SAMPLES = 21


def series_of(base: float, step: float, start: int) -> list[tuple[float, int]]:
    return [(base + i * step, start + i * STEP_MS) for i in range(SAMPLES)]


def tenant_a(start: int) -> list[tuple[dict[str, str], list[tuple[float, int]]]]:
    return [
        (
            {"__name__": "e2e_req_total", "tenant": "team-a", "job": "api", "instance": "a1"},
            series_of(1, 1, start),
        ),
        (
            {"__name__": "e2e_req_total", "tenant": "team-a", "job": "web", "instance": "a2"},
            series_of(2, 2, start),
        ),
        ({"__name__": "e2e_up", "tenant": "team-a", "job": "api"}, series_of(1, 0, start)),
        (
            {"__name__": "e2e_info", "tenant": "team-a", "job": "api", "version": "1.2"},
            series_of(1, 0, start),
        ),
    ]


def tenant_b(start: int) -> list[tuple[dict[str, str], list[tuple[float, int]]]]:
    return [
        (
            {"__name__": "e2e_req_total", "tenant": "team-b", "job": "api", "instance": "b1"},
            series_of(1_000_000, 1000, start),
        ),
        (
            {"__name__": "e2e_b_only", "tenant": "team-b", "job": "secret", "b_label": "x"},
            series_of(7_000_000, 0, start),
        ),
        ({"__name__": "e2e_up", "tenant": "team-b", "job": "api"}, series_of(1, 0, start)),
        # Nobody's: no tenant label at all.
        ({"__name__": "e2e_untenanted", "job": "api"}, series_of(5_000_000, 0, start)),
    ]


#: Instant queries as tenant A, each with the query the oracle answers
#: the same (the same query, unless A's own matcher on the label is
#: replaced).
QUERIES: list[tuple[str, Optional[str]]] = [
    ("e2e_req_total", None),
    ('{__name__=~".+"}', None),
    ('{__name__=~"e2e_.*", job=~".+"}', None),
    ("e2e_b_only", None),
    ("e2e_untenanted", None),
    ("e2e_req_total or e2e_b_only", None),
    ('e2e_req_total or {__name__=~".+"}', None),
    ("e2e_up unless e2e_b_only", None),
    ("e2e_up unless on(job) e2e_req_total", None),
    ("e2e_req_total and on() e2e_b_only", None),
    ("max_over_time(e2e_req_total[4m:30s])", None),
    ('sum_over_time({__name__=~".+"}[5m:1m])', None),
    ("rate(e2e_req_total[2m])", None),
    ('label_replace(e2e_req_total, "tenant", "team-b", "", "")', None),
    ('label_replace({__name__=~".+"}, "who", "$1", "tenant", "(.*)")', None),
    ('sum({__name__=~".+"})', None),
    ('sum by (tenant, __name__) ({__name__=~".+"})', None),
    ('count({__name__=~".+"})', None),
    ('count_values("v", {__name__=~".+"})', None),
    ('topk(1, {__name__=~".+"})', None),
    # absent() copies its selector's equality matchers, the tenant's too.
    ("absent(e2e_b_only)", 'absent(e2e_b_only{tenant="team-a"})'),
    ("absent(e2e_nothing)", 'absent(e2e_nothing{tenant="team-a"})'),
    ("absent(e2e_req_total)", None),
    ('absent({__name__="e2e_b_only", tenant="team-b"})', 'absent(e2e_b_only{tenant="team-a"})'),
    ("e2e_req_total * on(job) group_left(version) e2e_info", None),
    ("e2e_req_total / ignoring(instance) group_left e2e_up", None),
    ("e2e_req_total + on(job) group_left e2e_b_only", None),
    ("e2e_req_total + scalar(sum(e2e_b_only))", None),
    ("e2e_req_total > bool 10", None),
    ("-e2e_req_total offset 1m", None),
    ('e2e_req_total{tenant="team-b"}', "e2e_req_total"),
    ('{tenant="team-b"}', '{tenant="team-a"}'),
    ('{tenant!="team-a", job="api"}', '{tenant="team-a", job="api"}'),
    ('{tenant=~".+", __name__=~".+"}', None),
    ("vector(1)", None),
]


class LabelTenancyTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        require_prometheus()
        self.http = http_client(self)
        config = {"global": {"scrape_interval": "15s"}, "scrape_configs": []}
        self.shared = await start_prometheus(self, config, receiver=True)
        self.oracle = await start_prometheus(self, config, receiver=True)
        start = now_ms() - (SAMPLES - 1) * STEP_MS
        self.time = (start + (SAMPLES - 1) * STEP_MS) / 1000
        await self.write(self.shared, tenant_a(start) + tenant_b(start))
        await self.write(self.oracle, tenant_a(start))
        await wait_for_series(self.http, self.shared, '{__name__=~"e2e_.*"}', count=8)
        await wait_for_series(self.http, self.oracle, '{__name__=~"e2e_.*"}', count=4)
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "prometheus": {"url": self.shared.url, "tenancy": {"label": "tenant"}}
                },
                "query": {"prometheus": {"upstream": "prometheus", "timeout": "10s"}},
                "tenancy": {"federation": True},
            },
            TOKENS,
        )

    async def write(self, prometheus: Prometheus, series: Any) -> None:
        response = await self.http.post(
            prometheus.url + "/api/v1/write",
            data=remote_write_body(write_request(series)),
            headers={
                "Content-Type": ["application/x-protobuf"],
                "Content-Encoding": ["snappy"],
                "X-Prometheus-Remote-Write-Version": ["0.1.0"],
            },
        )
        self.assertEqual(response.code, 204, await response.content())

    async def get(self, url: str, token: Optional[str] = None, **headers: str) -> Any:
        response = await self.http.get(
            url, headers=bearer(token, **headers) if token else None, timeout=10
        )
        body = await response.content()
        try:
            return response.code, json.loads(body)
        except ValueError:
            return response.code, body

    async def through_gateway(
        self, path: str, params: dict[str, Any], token: str = ALICE, **headers: str
    ) -> Any:
        return await self.get(
            f"{self.gateway.url}{path}?{urlencode(params, doseq=True)}", token, **headers
        )

    async def direct(self, prometheus: Prometheus, path: str, params: dict[str, Any]) -> Any:
        return await self.get(f"{prometheus.url}{path}?{urlencode(params, doseq=True)}")

    def assertSameAnswer(self, ours: Any, theirs: Any, what: str) -> None:
        (code, doc), (oracle_code, oracle) = ours, theirs
        self.assertEqual(code, oracle_code, f"{what}: {doc} / {oracle}")
        self.assertEqual(doc["status"], oracle["status"], what)
        if doc["status"] != "success":
            self.assertEqual(doc["errorType"], oracle["errorType"], what)
            return
        self.assertEqual(_normal(doc["data"]), _normal(oracle["data"]), what)

    async def test_queries(self) -> None:
        """
        Every query of L{QUERIES}, instant and as a range, answers as the
        Prometheus holding only A's series does.
        """
        range_params = {"start": self.time - 240, "end": self.time, "step": 30}
        for query, oracle_query in QUERIES:
            ours = await self.through_gateway(
                "/api/v1/query", {"query": query, "time": self.time}
            )
            theirs = await self.direct(
                self.oracle, "/api/v1/query", {"query": oracle_query or query, "time": self.time}
            )
            self.assertSameAnswer(ours, theirs, query)
            ours = await self.through_gateway(
                "/api/v1/query_range", {"query": query, **range_params}
            )
            theirs = await self.direct(
                self.oracle, "/api/v1/query_range", {"query": oracle_query or query, **range_params}
            )
            self.assertSameAnswer(ours, theirs, "range " + query)
            self.assertNotIn("team-b", json.dumps(ours[1]).replace('"tenant": "team-b"', ""))

    async def test_post_form(self) -> None:
        response = await self.http.post(
            self.gateway.url + "/api/v1/query",
            data=urlencode({"query": 'sum({__name__=~".+"})', "time": self.time}).encode(),
            headers={
                **bearer(ALICE),
                "Content-Type": ["application/x-www-form-urlencoded"],
            },
            timeout=10,
        )
        doc = json.loads(await response.content())
        self.assertEqual(response.code, 200, doc)
        [sample] = doc["data"]["result"]
        # A's last samples: 21 + 42 + 1 + 1.
        self.assertEqual(sample["value"][1], "65")

    async def test_series_labels_values(self) -> None:
        window = {"start": self.time - 300, "end": self.time + 1}
        for match in ('{__name__=~".+"}', "e2e_b_only", '{tenant="team-b"}', '{job=~".+"}'):
            oracle_match = '{tenant="team-a"}' if "team-b" in match else match
            ours = await self.through_gateway("/api/v1/series", {"match[]": match, **window})
            theirs = await self.direct(
                self.oracle, "/api/v1/series", {"match[]": oracle_match, **window}
            )
            self.assertSameAnswer(ours, theirs, "series " + match)
        code, doc = await self.through_gateway("/api/v1/labels", window)
        self.assertEqual(code, 200, doc)
        self.assertEqual(
            doc["data"], ["__name__", "instance", "job", "tenant", "version"]
        )
        self.assertSameAnswer(
            (code, doc), await self.direct(self.oracle, "/api/v1/labels", window), "labels"
        )
        for name in ("__name__", "tenant", "job", "b_label", "instance"):
            path = f"/api/v1/label/{name}/values"
            ours = await self.through_gateway(path, window)
            self.assertSameAnswer(ours, await self.direct(self.oracle, path, window), path)
            ours = await self.through_gateway(path, {"match[]": '{__name__=~".+"}', **window})
            self.assertSameAnswer(ours, await self.direct(self.oracle, path, window), path)
        code, doc = await self.through_gateway("/api/v1/label/tenant/values", window)
        self.assertEqual(doc["data"], ["team-a"])

    async def test_other_tenant_and_federation(self) -> None:
        """
        B sees B's series (the data is there to leak); an identity allowed
        both may read C{team-a|team-b}; A may not.
        """
        code, doc = await self.through_gateway(
            "/api/v1/query", {"query": "e2e_b_only", "time": self.time}, token=BOB
        )
        self.assertEqual([r["metric"]["job"] for r in doc["data"]["result"]], ["secret"])
        code, doc = await self.through_gateway(
            "/api/v1/query",
            {"query": "count by (tenant) (e2e_req_total)", "time": self.time},
            token=BOTH,
            **{"X-Scope-OrgID": "team-a|team-b"},
        )
        self.assertEqual(code, 200, doc)
        self.assertEqual(
            sorted((r["metric"]["tenant"], r["value"][1]) for r in doc["data"]["result"]),
            [("team-a", "2"), ("team-b", "1")],
        )
        code, _ = await self.through_gateway(
            "/api/v1/query",
            {"query": "e2e_req_total", "time": self.time},
            **{"X-Scope-OrgID": "team-a|team-b"},
        )
        self.assertEqual(code, 403)

    async def test_refused(self) -> None:
        for params, status in [
            ({"query": "sum(", "time": self.time}, 400),
            ({"query": "-" * 300 + "up", "time": self.time}, 400),
            # As Prometheus itself refuses it, before the tenant's matcher
            # is put in.
            ({"query": '{tenant!="team-a"}', "time": self.time}, 400),
        ]:
            code, _ = await self.get(
                f"{self.gateway.url}/api/v1/query?{urlencode(params)}", ALICE
            )
            self.assertEqual(code, status)
        for path in ("/api/v1/metadata", "/api/v1/rules", "/api/v1/alerts"):
            response = await self.http.get(self.gateway.url + path, headers=bearer(ALICE))
            await response.content()
            self.assertEqual(response.code, 404, path)


def _normal(data: Any) -> Any:
    """
    An answer's data in an order that does not depend on the store.
    """
    if isinstance(data, dict) and "result" in data:
        result = data["result"]
        if isinstance(result, list):
            result = sorted(result, key=lambda r: json.dumps(r.get("metric", r), sort_keys=True))
        return {"resultType": data["resultType"], "result": result}
    if isinstance(data, list):
        return sorted(data, key=lambda r: json.dumps(r, sort_keys=True))
    return data
