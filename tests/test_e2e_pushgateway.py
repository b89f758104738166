"""
End to end, Pushgateway clients against sealgw: C{prometheus_client}'s own
C{push_to_gateway}, C{pushadd_to_gateway} and C{delete_from_gateway}, run
unchanged (in a thread: they block), with the token as a bearer header or
as the Basic-auth password, and the Pushgateway README's C{curl} line as
curl sends it, relayed into a real Prometheus.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    delete_from_gateway,
    push_to_gateway,
    pushadd_to_gateway,
)
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e_support import (
    TEST_TIMEOUT,
    http_client,
    prometheus_query,
    require_prometheus,
    start_gateway,
    start_prometheus,
    wait_for_series,
)
from tests.subprocesses import Child

TOKENS = [
    {"name": "batch-host", "token": "tok-batch-0123456789"},
    {"name": "team", "token": "tok-team-0123456789", "tenants": ["t1", "t2"]},
]


def bearer_handler(url: str, method: str, timeout: Any, headers: list, data: bytes) -> Any:
    return default_handler(
        url, method, timeout, [*headers, ("Authorization", "Bearer tok-batch-0123456789")], data
    )


async def run_shell(command: str) -> Child:
    """
    Run C{command} with C{bash -c} and wait for it to end.
    """
    child = Child()
    reactor.spawnProcess(child, "/bin/bash", ["bash", "-c", command], env=dict(os.environ))
    await child.ended
    return child


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

    async def test_readme_curl_line(self) -> None:
        """
        The Pushgateway README's one-liner, C{echo "some_metric 3.14" |
        curl --data-binary @- http://HOST/metrics/job/some_job}, with the
        token added: curl sends it as a form
        (C{application/x-www-form-urlencoded}), and a Pushgateway takes it
        as the text format; so does sealgw.
        """
        if shutil.which("curl") is None:
            if os.environ.get("CI"):
                raise AssertionError("CI runs the Pushgateway README's curl line, which needs curl")
            raise SkipTest("curl is not installed")
        curl = await run_shell(
            'echo "some_metric 3.14" | curl -sS -v -w \'%{http_code}\' '
            '-H "Authorization: Bearer tok-batch-0123456789" '
            f"--data-binary @- {self.gateway.url}/metrics/job/some_job"
        )
        sent = [
            line for line in curl.err.decode().splitlines() if line.lower().startswith("> content-type")
        ]
        # What makes this the README's case: curl's own Content-Type.
        self.assertEqual(sent, ["> Content-Type: application/x-www-form-urlencoded"])
        self.assertEqual((curl.exit_code, curl.out), (0, b"200"))
        [series] = await wait_for_series(self.http, self.prometheus, "some_metric")
        self.assertEqual(
            (series["metric"], series["value"][1]),
            ({"__name__": "some_metric", "job": "some_job", "via": "sealgw"}, "3.14"),
        )

    async def test_own_timestamp_kept(self) -> None:
        """
        A sample's own timestamp (which a Pushgateway refuses) reaches
        Prometheus as the sample's time.
        """
        stamp = int(time.time() * 1000) - 60_000
        response = await self.http.put(
            self.gateway.url + "/metrics/job/stamped",
            data=f"e2e_pg_stamped 7 {stamp}\n".encode(),
            headers={"Authorization": "Bearer tok-batch-0123456789"},
        )
        self.assertEqual(response.code, 200, await response.content())
        await wait_for_series(self.http, self.prometheus, "e2e_pg_stamped")
        [series] = await prometheus_query(
            self.http, self.prometheus, "timestamp(e2e_pg_stamped)"
        )
        self.assertEqual(round(float(series["value"][1]) * 1000), stamp)

    async def test_pushgateway_refusals(self) -> None:
        """
        Over a real socket: what a Pushgateway refuses with a 400 and
        sealgw does too, and nothing of it reaches Prometheus.
        """
        token = {"Authorization": "Bearer tok-batch-0123456789"}
        for path, body, words in (
            ("/metrics/job/", b"e2e_pg_nojob 1\n", b"job name is required"),
            ("/metrics/job/j/path/a%2Fb", b"e2e_pg_slash 1\n", b"%2F"),
            ("/metrics/job/j", b"e2e_pg_twice 1\ne2e_pg_twice 2\n", b"more than once"),
        ):
            response = await self.http.put(self.gateway.url + path, data=body, headers=token)
            self.assertEqual(response.code, 400, path)
            self.assertIn(words, await response.content())
        # A push after them lands; they did not.
        response = await self.http.put(
            self.gateway.url + "/metrics/job/j", data=b"e2e_pg_after 1\n", headers=token
        )
        self.assertEqual(response.code, 200)
        await wait_for_series(self.http, self.prometheus, "e2e_pg_after")
        for name in ("e2e_pg_nojob", "e2e_pg_slash", "e2e_pg_twice"):
            self.assertEqual(await prometheus_query(self.http, self.prometheus, name), [], name)
