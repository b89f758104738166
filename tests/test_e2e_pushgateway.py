"""
End to end, Pushgateway clients against sealgw: C{prometheus_client}'s own
C{push_to_gateway}, C{pushadd_to_gateway} and C{delete_from_gateway}, run
unchanged (in a thread: they block), with the token as a bearer header or
as the Basic-auth password, relayed into a real Prometheus.
"""

from __future__ import annotations

import base64
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    delete_from_gateway,
    push_to_gateway,
    pushadd_to_gateway,
)
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.e2e_support import (
    TEST_TIMEOUT,
    http_client,
    require_prometheus,
    start_gateway,
    start_prometheus,
    wait_for_series,
)

TOKENS = [
    {"name": "batch-host", "token": "tok-batch-0123456789"},
    {"name": "team", "token": "tok-team-0123456789", "tenants": ["t1", "t2"]},
]


def bearer_handler(url: str, method: str, timeout: Any, headers: list, data: bytes) -> Any:
    return default_handler(
        url, method, timeout, [*headers, ("Authorization", "Bearer tok-batch-0123456789")], data
    )


class PushgatewayClientTests(TestCase):
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
                "upstreams": {"prometheus": {"url": self.prometheus.url}},
                "push": {"pushgateway": {**route, "labels": {"add": {"via": "sealgw"}}}},
            },
            TOKENS,
        )
        self.address = self.gateway.url.removeprefix("http://")

    async def test_push_to_gateway(self) -> None:
        registry = CollectorRegistry()
        Counter("e2e_pg_jobs", "jobs", registry=registry).inc(4)
        Histogram("e2e_pg_seconds", "took", buckets=(1.0,), registry=registry).observe(0.5)
        await deferToThread(
            push_to_gateway,
            self.address,
            job="nightly",
            registry=registry,
            grouping_key={"instance": "/srv/a", "tenant_hint": ""},
            handler=bearer_handler,
        )
        [series] = await wait_for_series(self.http, self.prometheus, "e2e_pg_jobs_total")
        self.assertEqual(
            series["metric"],
            {
                "__name__": "e2e_pg_jobs_total",
                "job": "nightly",
                "instance": "/srv/a",  # sent as instance@base64
                "via": "sealgw",
            },
        )
        self.assertEqual(series["value"][1], "4")
        buckets = await wait_for_series(
            self.http, self.prometheus, 'e2e_pg_seconds_bucket{job="nightly"}', count=2
        )
        self.assertEqual({b["metric"]["le"] for b in buckets}, {"1.0", "+Inf"})

    async def test_basic_auth_token_as_password(self) -> None:
        def handler(url: str, method: str, timeout: Any, headers: list, data: bytes) -> Any:
            return basic_auth_handler(
                url, method, timeout, headers, data, "t2", "tok-team-0123456789"
            )

        registry = CollectorRegistry()
        Counter("e2e_pg_basic", "b", registry=registry).inc()
        await deferToThread(
            pushadd_to_gateway, self.address, job="basic", registry=registry, handler=handler
        )
        await wait_for_series(self.http, self.prometheus, "e2e_pg_basic_total")

    async def test_delete_is_answered(self) -> None:
        await deferToThread(
            delete_from_gateway, self.address, job="nightly", handler=bearer_handler
        )

    async def test_refusals(self) -> None:
        registry = CollectorRegistry()
        Counter("e2e_pg_refused", "r", registry=registry).inc()
        with self.assertRaises(Exception) as caught:
            await deferToThread(push_to_gateway, self.address, job="x", registry=registry)
        self.assertIn("401", str(caught.exception))
        response = await self.http.put(
            self.gateway.url + "/metrics/job/x/bad@base64/!!!",
            data=b"up 1\n",
            headers={"Authorization": "Bearer tok-batch-0123456789"},
        )
        self.assertEqual(response.code, 400)
        self.assertIn(b"base64", await response.content())
        encoded = base64.urlsafe_b64encode(b"a/b").decode()
        response = await self.http.put(
            self.gateway.url + f"/metrics/job@base64/{encoded}",
            data=b"not a metric {",
            headers={"Authorization": "Bearer tok-batch-0123456789"},
        )
        self.assertEqual(response.code, 400)
