"""
End to end, availability between tenants: one real Prometheus shared by
two tenants through tenancy by label.  Tenant A is hostile but
authenticated and sends every input that once took the store or the
gateway away from the others (a far-future sample, a timestamp past
int64, a series with 20,000 labels, a 100 KiB label value, 200,000
series in one body, a reserved grouping key, a read whose regular
expressions cost seconds to compile, a function that reaches series no
selector names).  Each is refused with a 4xx naming what was wrong;
tenant B's pushes and reads, interleaved with A's, go on succeeding, and
what B pushes afterwards lands.

The latency figures (B's reads while A floods at its limit) are measured
in C{bench/isolation.py}, not asserted here.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from twisted.trial.unittest import TestCase

from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    bearer,
    http_client,
    now_ms,
    prometheus_query,
    remote_write_body,
    require_prometheus,
    start_gateway,
    start_prometheus,
    wait_for_series,
    write_request,
)

ALICE = "tok-alice-0123456789"  # team-a, the hostile one
BOB = "tok-bob-0123456789"  # team-b
TOKENS = [
    {"name": "alice", "token": ALICE, "tenants": ["team-a"]},
    {"name": "bob", "token": BOB, "tenants": ["team-b"]},
]

TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000


class SharedPrometheusIsolationTests(TestCase):
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
        self.step = 0

    async def remote_write(self, token: str, series: Any) -> tuple[int, bytes]:
        response = await self.http.post(
            self.gateway.url + "/api/v1/push",
            data=remote_write_body(write_request(series)),
            headers={**REMOTE_WRITE_HEADERS, **bearer(token)},
        )
        return response.code, await response.content()

    async def pushgateway(self, token: str, path: str, body: bytes) -> tuple[int, bytes]:
        response = await self.http.put(
            self.gateway.url + path, data=body, headers=bearer(token)
        )
        return response.code, await response.content()

    async def read(self, token: str, query: str) -> tuple[int, Any]:
        response = await self.http.get(
            f"{self.gateway.url}/api/v1/query?{urlencode({'query': query})}",
            headers=bearer(token),
        )
        body = await response.content()
        try:
            return response.code, json.loads(body)
        except ValueError:
            return response.code, body

    async def bob_goes_on(self) -> None:
        """
        One push and one read of tenant B's, both accepted; the read sees
        only B's own series.
        """
        self.step += 1
        code, body = await self.remote_write(
            BOB, [({"__name__": "iso_b_total", "step": str(self.step)}, [(self.step, now_ms())])]
        )
        self.assertEqual(code, 204, body)
        code, doc = await self.read(BOB, '{__name__=~"iso_.*"}')
        self.assertEqual(code, 200, doc)
        tenants = {r["metric"].get("tenant") for r in doc["data"]["result"]}
        self.assertLessEqual(tenants, {"team-b"})

    async def assertRefused(self, got: tuple[int, Any], status: int, *words: str) -> None:
        code, body = got
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else json.dumps(body)
        self.assertEqual(code, status, text)
        for word in words:
            self.assertIn(word, text)
        await self.bob_goes_on()

    async def test_hostile_pushes(self) -> None:
        """
        Every hostile push of A's is refused with a 400 that names the
        limit, none of it reaches the store, and B's pushes before, between
        and after land; the store still takes current samples from anyone.
        """
        await self.bob_goes_on()
        ts = now_ms()
        await self.assertRefused(
            await self.remote_write(ALICE, [({"__name__": "iso_future"}, [(1, ts + TEN_YEARS_MS)])]),
            400, "future",
        )
        await self.assertRefused(
            await self.pushgateway(
                ALICE, "/metrics/job/far", b"iso_pg_far 1 99999999999999999999\n"
            ),
            400,
        )
        for bad in (b"NaN", b"+Inf", b"-Inf"):
            await self.assertRefused(
                await self.pushgateway(ALICE, "/metrics/job/nan", b"iso_pg_nan 1 " + bad + b"\n"),
                400,
            )
        wide = {"__name__": "iso_wide", **{f"l{i:05d}": "v" for i in range(20_000)}}
        await self.assertRefused(
            await self.remote_write(ALICE, [(wide, [(1, ts)])]), 400, "labels"
        )
        await self.assertRefused(
            await self.remote_write(ALICE, [({"__name__": "iso_long", "v": "x" * 100 * 1024}, [(1, ts)])]),
            400, "length",
        )
        many = [({"__name__": "iso_many", "i": str(i)}, [(1, ts)]) for i in range(200_000)]
        await self.assertRefused(await self.remote_write(ALICE, many), 400, "series")
        await self.assertRefused(
            await self.pushgateway(ALICE, "/metrics/job/x/__tenant__/team-b", b"iso_pg_res 1\n"),
            400, "__tenant__",
        )
        # Nothing of A's hostile series reached the store.
        found = await prometheus_query(
            self.http, self.prometheus, '{__name__=~"iso_(future|pg_.*|wide|long|many)"}'
        )
        self.assertEqual(found, [])
        # The store still takes current samples, A's own included.
        code, body = await self.remote_write(ALICE, [({"__name__": "iso_a_ok"}, [(1, now_ms())])])
        self.assertEqual(code, 204, body)
        await wait_for_series(self.http, self.prometheus, "iso_a_ok", count=1)
        await wait_for_series(
            self.http, self.prometheus, "iso_b_total", count=self.step
        )

    async def test_mixed_push(self) -> None:
        """
        A push holding valid series and a far-future one: the valid ones
        land, the answer is a 400 naming what was dropped.
        """
        ts = now_ms()
        code, body = await self.remote_write(
            ALICE,
            [
                ({"__name__": "iso_mixed_ok", "n": "1"}, [(1, ts)]),
                ({"__name__": "iso_mixed_bad"}, [(1, ts + TEN_YEARS_MS)]),
                ({"__name__": "iso_mixed_ok", "n": "2"}, [(2, ts)]),
            ],
        )
        self.assertEqual(code, 400, body)
        self.assertIn(b"future", body)
        await wait_for_series(self.http, self.prometheus, "iso_mixed_ok", count=2)
        self.assertEqual(
            await prometheus_query(self.http, self.prometheus, "iso_mixed_bad"), []
        )
        await self.bob_goes_on()

    async def test_hostile_reads(self) -> None:
        """
        A read whose regular expressions would take seconds to compile, and
        one with a function no selector bounds, are refused at once; B's
        reads go on.
        """
        await self.bob_goes_on()
        costly = "up{" + ",".join(f'l{i}=~"\\\\w{{250}}"' for i in range(200)) + "}"
        await self.assertRefused(
            await self.read(ALICE, costly), 400, "query.promql.max_regex_matchers"
        )
        await self.assertRefused(await self.read(ALICE, "info(up)"), 400, "info")
