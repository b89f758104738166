"""
End to end, pushes to an upstream that keeps tenants apart by label: a
remote write, a seal push and a Pushgateway push through sealgw into a
real Prometheus land with C{tenant} set from the identity, whatever the
client wrote, and each tenant reads back only its own through sealgw.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from twisted.trial.unittest import TestCase

from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    bearer,
    http_client,
    now_ms,
    remote_write_body,
    require_prometheus,
    seal_body,
    seal_sample_families,
    start_gateway,
    start_prometheus,
    wait_for_series,
    write_request,
)

TOKENS = [
    {"name": "alice", "token": "tok-alice-0123456789", "tenants": ["team-a"]},
    {"name": "bob", "token": "tok-bob-0123456789", "tenants": ["team-b"]},
]


class LabelTenancyPushTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        require_prometheus()
        self.http = http_client(self)
        self.prometheus = await start_prometheus(
            self, {"global": {"scrape_interval": "15s"}, "scrape_configs": []}, receiver=True
        )
        route = {"upstream": "prometheus", "path": "/api/v1/write"}
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "prometheus": {"url": self.prometheus.url, "tenancy": {"label": "tenant"}}
                },
                "push": {"remote_write": route, "seal": route, "pushgateway": route},
                "query": {"prometheus": {"upstream": "prometheus", "timeout": "10s"}},
            },
            TOKENS,
        )

    async def test_tenant_label_from_identity(self) -> None:
        ts = now_ms()
        # Bob claims team-a's label in his own series: it is overwritten.
        forged = write_request([({"__name__": "e2e_lt_rw", "tenant": "team-a"}, [(2.0, ts)])])
        response = await self.http.post(
            self.gateway.url + "/api/v1/push",
            data=remote_write_body(forged),
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-bob-0123456789")},
        )
        self.assertEqual(response.code, 204, await response.content())
        response = await self.http.post(
            self.gateway.url + "/publish/metrics",
            data=seal_body(seal_sample_families(ts)),
            headers={"Content-Encoding": ["snappy"], **bearer("tok-alice-0123456789")},
        )
        self.assertEqual(response.code, 201, await response.content())
        response = await self.http.put(
            self.gateway.url + "/metrics/job/batch",
            data=b"e2e_lt_pg 3\n",
            headers=bearer("tok-bob-0123456789"),
        )
        self.assertEqual(response.code, 200, await response.content())

        [rw] = await wait_for_series(self.http, self.prometheus, "e2e_lt_rw")
        self.assertEqual(rw["metric"]["tenant"], "team-b")
        [pg] = await wait_for_series(self.http, self.prometheus, "e2e_lt_pg")
        self.assertEqual(pg["metric"]["tenant"], "team-b")
        [seal] = await wait_for_series(self.http, self.prometheus, "current_time")
        self.assertEqual(seal["metric"]["tenant"], "team-a")

        # Read back through sealgw: each sees its own only.
        for token, expected in (("tok-alice-0123456789", []), ("tok-bob-0123456789", ["2"])):
            url = self.gateway.url + "/api/v1/query?" + urlencode({"query": "e2e_lt_rw"})
            response = await self.http.get(url, headers=bearer(token))
            doc = json.loads(await response.content())
            self.assertEqual([r["value"][1] for r in doc["data"]["result"]], expected)

    async def test_far_future_sample_refused(self) -> None:
        """
        The hostile probe: one sample ten years ahead from team-a.  It
        never reaches the shared Prometheus (which would then refuse
        every tenant's samples as out of bounds); team-a's valid series
        lands and team-a hears 400; team-b's later pushes land.
        """
        ts = now_ms()
        far = ts + 10 * 365 * 86_400_000
        body = remote_write_body(
            write_request(
                [
                    ({"__name__": "e2e_lt_good"}, [(1.0, ts)]),
                    ({"__name__": "e2e_lt_evil"}, [(1.0, far)]),
                ]
            )
        )
        response = await self.http.post(
            self.gateway.url + "/api/v1/push",
            data=body,
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-alice-0123456789")},
        )
        message = (await response.content()).decode("utf-8")
        self.assertEqual(response.code, 400, message)
        self.assertIn("1 of 2 series refused and not relayed", message)
        self.assertIn("max_future (10m)", message)
        response = await self.http.put(
            self.gateway.url + "/metrics/job/probe",
            data=b"e2e_lt_pg_evil 1 %d\n" % far,
            headers=bearer("tok-alice-0123456789"),
        )
        self.assertEqual(response.code, 400, await response.content())
        [good] = await wait_for_series(self.http, self.prometheus, "e2e_lt_good")
        self.assertEqual(good["metric"]["tenant"], "team-a")

        later = write_request([({"__name__": "e2e_lt_later"}, [(4.0, now_ms())])])
        response = await self.http.post(
            self.gateway.url + "/api/v1/push",
            data=remote_write_body(later),
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-bob-0123456789")},
        )
        self.assertEqual(response.code, 204, await response.content())
        [landed] = await wait_for_series(self.http, self.prometheus, "e2e_lt_later")
        self.assertEqual(landed["metric"]["tenant"], "team-b")
        # Asked at the far-future time itself: nothing there.
        url = self.prometheus.api("/api/v1/query", query="e2e_lt_evil", time=str(far / 1000))
        response = await self.http.get(url, timeout=5)
        doc = json.loads(await response.content())
        self.assertEqual((doc["status"], doc["data"]["result"]), ("success", []))
