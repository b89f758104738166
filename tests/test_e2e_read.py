"""
End to end, the read path as the gateway's configuration builds it: a
push through sealgw into a real Prometheus, read back through sealgw's
query routes with requests shaped as Grafana sends them.
"""

from __future__ import annotations

import gzip
import json
from urllib.parse import urlencode

from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    bearer,
    http_client,
    now_ms,
    reactor,
    remote_write_body,
    require_prometheus,
    start_gateway,
    start_prometheus,
    wait_for_series,
    write_request,
)

TOKENS = [
    {"name": "grafana", "token": "tok-grafana-0123456789"},
    {"name": "team", "token": "tok-team-0123456789", "tenants": ["a", "b"]},
]


class ReadThroughGatewayTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        require_prometheus()
        self.http = http_client(self)
        self.prometheus = await start_prometheus(
            self, {"global": {"scrape_interval": "15s"}, "scrape_configs": []}, receiver=True
        )
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {"prometheus": {"url": self.prometheus.url}},
                "push": {"remote_write": {"upstream": "prometheus", "path": "/api/v1/write"}},
                "query": {"prometheus": {"upstream": "prometheus", "timeout": "10s"}},
            },
            TOKENS,
        )

    async def test_push_then_read(self) -> None:
        ts = now_ms()
        body = remote_write_body(
            write_request([({"__name__": "e2e_read_total", "job": "read"}, [(7.0, ts)])])
        )
        response = await self.http.post(
            self.gateway.url + "/api/v1/push",
            data=body,
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-grafana-0123456789")},
        )
        self.assertEqual(response.code, 204, await response.content())
        await wait_for_series(self.http, self.prometheus, "e2e_read_total")

        # Grafana's instant query: GET with query and time.
        url = self.gateway.url + "/api/v1/query?" + urlencode(
            {"query": "e2e_read_total", "time": f"{ts / 1000:.3f}"}
        )
        response = await self.http.get(url, headers=bearer("tok-grafana-0123456789"))
        doc = json.loads(await response.content())
        self.assertEqual(response.code, 200, doc)
        [series] = doc["data"]["result"]
        self.assertEqual(series["metric"], {"__name__": "e2e_read_total", "job": "read"})
        self.assertEqual(series["value"][1], "7")

        # Grafana's range query: POST, form-encoded.
        form = urlencode(
            {
                "query": "e2e_read_total",
                "start": f"{ts / 1000 - 60:.3f}",
                "end": f"{ts / 1000 + 60:.3f}",
                "step": "15",
            }
        ).encode()
        response = await self.http.post(
            self.gateway.url + "/api/v1/query_range",
            data=form,
            headers={
                **bearer("tok-grafana-0123456789"),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        doc = json.loads(await response.content())
        self.assertEqual(response.code, 200, doc)
        self.assertEqual(doc["data"]["resultType"], "matrix")
        self.assertEqual(len(doc["data"]["result"]), 1)

    async def test_reads_need_auth_and_their_tenant(self) -> None:
        url = self.gateway.url + "/api/v1/labels"
        response = await self.http.get(url)
        self.assertEqual(response.code, 401)
        response = await self.http.get(
            url, headers={**bearer("tok-team-0123456789"), "X-Scope-OrgID": "c"}
        )
        self.assertEqual(response.code, 403)
        # Federation is off in this configuration.
        response = await self.http.get(
            url, headers={**bearer("tok-team-0123456789"), "X-Scope-OrgID": "a|b"}
        )
        self.assertEqual(response.code, 400)
        response = await self.http.get(
            url, headers={**bearer("tok-team-0123456789"), "X-Scope-OrgID": "a"}
        )
        self.assertEqual(response.code, 200)
        # Refused or not, each read is counted under its route.
        for status, tenant in (("401", ""), ("403", ""), ("400", ""), ("200", "a")):
            self.assertEqual(
                self.gateway.registry.get_sample_value(
                    "sealgw_http_requests_total",
                    {
                        "route": "read_prometheus_labels",
                        "method": "GET",
                        "status": status,
                        "tenant": tenant,
                    },
                ),
                1.0,
                status,
            )

    async def test_not_configured_api(self) -> None:
        response = await self.http.get(
            self.gateway.url + "/loki/api/v1/labels", headers=bearer("tok-grafana-0123456789")
        )
        self.assertEqual(response.code, 404)
        self.assertIn(b"loki", (await response.content()).lower())

    async def test_answers_keep_their_compression(self) -> None:
        """
        Through the gateway as its configuration builds it, Prometheus's
        answer comes as Prometheus encoded it for the client's
        C{Accept-Encoding}: gzip, with C{Content-Encoding: gzip}, for a
        client that accepts it; plain, with no C{Content-Encoding}, for
        one that sent none.  The client here inflates nothing itself.
        """
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.retryAutomatically = False
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)
        url = (self.gateway.url + "/api/v1/labels").encode()
        answers = {}
        for accept_encoding in (b"gzip", None):
            headers = Headers({b"Authorization": [b"Bearer tok-grafana-0123456789"]})
            if accept_encoding is not None:
                headers.setRawHeaders(b"Accept-Encoding", [accept_encoding])
            response = await agent.request(b"GET", url, headers)
            body = await readBody(response)
            self.assertEqual(response.code, 200, body[:200])
            answers[accept_encoding] = (response.headers.getRawHeaders(b"content-encoding"), body)
        encoding, body = answers[b"gzip"]
        self.assertEqual(encoding, [b"gzip"])
        self.assertEqual(body[:2], b"\x1f\x8b")
        document = json.loads(gzip.decompress(body))
        self.assertEqual(document["status"], "success")
        encoding, body = answers[None]
        self.assertIsNone(encoding)
        self.assertEqual(json.loads(body), document)
