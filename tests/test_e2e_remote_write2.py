"""
End to end, remote write 2.0: bodies built to the specification, pushed
through sealgw over real sockets into a real Prometheus 2.x (which reads
only 1.0, so sealgw converts) and queried there; every refusal a 1.0 push
gets, and the 2.0 bomb (references to a large symbol), refused with
nothing reaching the store; and, to an upstream that reads 2.0, the body
relayed as it came with the upstream's written counts passed back.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from sealgw.signals import remote_write2
from sealgw.signals.proto import remote_v2_pb2 as v2
from tests.e2e_support import (
    TEST_TIMEOUT,
    ScriptedUpstream,
    answer,
    bearer,
    http_client,
    now_ms,
    prometheus_query,
    require_prometheus,
    serve,
    start_gateway,
    start_prometheus,
    wait_for_series,
)
from tests.rw2_support import RW2_HEADERS, body_v2, request_v2

ALICE = "tok-alice-0123456789"  # team-a
BOB = "tok-bob-0123456789"  # team-b
CAROL = "tok-carol-0123456789"  # team-c, one push allowed
TOKENS = [
    {"name": "alice", "token": ALICE, "tenants": ["team-a"]},
    {"name": "bob", "token": BOB, "tenants": ["team-b"]},
    {
        "name": "carol",
        "token": CAROL,
        "tenants": ["team-c"],
        "limits": {"requests_per_second": 0.001, "burst": 1},
    },
]
WRITTEN = (
    "X-Prometheus-Remote-Write-Samples-Written",
    "X-Prometheus-Remote-Write-Histograms-Written",
    "X-Prometheus-Remote-Write-Exemplars-Written",
)


def _written(response: Any) -> list[str | None]:
    return [response.headers.getRawHeaders(name, [None])[0] for name in WRITTEN]


class ConvertedIntoPrometheusTests(TestCase):
    """
    A Prometheus 2.x shared by two tenants through a label, behind sealgw
    with the default C{remote_write_version: 1}.
    """

    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        require_prometheus()
        self.http = http_client(self)
        self.prometheus = await start_prometheus(
            self,
            {"global": {"scrape_interval": "15s"}, "scrape_configs": []},
            receiver=True,
            features=("native-histograms", "exemplar-storage"),
        )
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "prometheus": {
                        "url": self.prometheus.url,
                        "tenancy": {"label": "tenant"},
                        "retry": {"attempts": 2, "initial_backoff": "50ms"},
                    }
                },
                "push": {
                    "remote_write": {
                        "upstream": "prometheus",
                        "path": "/api/v1/write",
                        "labels": {"add": {"via": "sealgw"}},
                    }
                },
            },
            TOKENS,
        )

    async def push(self, token: str, request: v2.Request, **headers: str) -> tuple[Any, bytes]:
        response = await self.http.post(
            self.gateway.url + "/api/v1/write",
            data=body_v2(request),
            headers={**RW2_HEADERS, **bearer(token, **headers)},
        )
        return response, await response.content()

    async def test_converted_and_queryable(self) -> None:
        """
        Samples, a native histogram and an exemplar of a 2.0 request are
        in Prometheus, with the tenant's label (the client's own value
        for it replaced) and the label action; the client is told what
        was written.
        """
        ts = now_ms()
        request = request_v2(
            [
                (
                    [("job", "e2e"), ("__name__", "rw2_requests_total"), ("tenant", "team-b")],
                    [(41.0, ts - 1000), (42.0, ts)],
                ),
            ],
            histograms=[({"__name__": "rw2_latency_seconds", "job": "e2e"}, ts)],
            exemplar=({"trace_id": "4bf92f3577b34da6"}, 42.0, ts),
            metadata=(v2.Metadata.METRIC_TYPE_COUNTER, "Requests served.", ""),
        )
        request.timeseries[0].created_timestamp = ts - 60_000
        response, body = await self.push(ALICE, request)
        self.assertEqual(response.code, 204, body)
        self.assertEqual(_written(response), ["2", "1", "1"])

        [counter] = await wait_for_series(self.http, self.prometheus, "rw2_requests_total")
        self.assertEqual(
            counter["metric"],
            {"__name__": "rw2_requests_total", "job": "e2e", "tenant": "team-a", "via": "sealgw"},
        )
        [ranged] = await prometheus_query(self.http, self.prometheus, "rw2_requests_total[5m]")
        self.assertEqual(
            [(round(float(t) * 1000), float(v)) for t, v in ranged["values"]],
            [(ts - 1000, 41.0), (ts, 42.0)],
        )
        [count] = await prometheus_query(
            self.http, self.prometheus, 'histogram_count(rw2_latency_seconds{tenant="team-a"})'
        )
        self.assertEqual(float(count["value"][1]), 3.0)
        [total] = await prometheus_query(
            self.http, self.prometheus, "histogram_sum(rw2_latency_seconds)"
        )
        self.assertEqual(float(total["value"][1]), 4.5)
        response = await self.http.get(
            self.prometheus.api(
                "/api/v1/query_exemplars",
                query="rw2_requests_total",
                start=str((ts - 60_000) / 1000),
                end=str((ts + 60_000) / 1000),
            )
        )
        exemplars = json.loads(await response.content())["data"]
        self.assertEqual(len(exemplars), 1, exemplars)
        [one] = exemplars[0]["exemplars"]
        self.assertEqual(one["labels"], {"trace_id": "4bf92f3577b34da6"})
        self.assertEqual(float(one["value"]), 42.0)

    async def test_refusals(self) -> None:
        """
        A wrong token, a tenant not the token's, a push over the
        identity's rate, a sample past the sample limits, an odd list of
        references, a bomb: each refused with its status and reason, none
        of it in Prometheus, and the other tenant's push between them
        lands.
        """
        ts = now_ms()

        def one(name: str, when: int = ts) -> v2.Request:
            return request_v2([({"__name__": name}, [(1.0, when)])])

        response, body = await self.push(CAROL, one("rw2_carol_first"))
        self.assertEqual(response.code, 204, body)
        response, body = await self.push(CAROL, one("rw2_carol_second"))
        self.assertEqual(response.code, 429, body)
        self.assertIsNotNone(response.headers.getRawHeaders("Retry-After"))

        cases: list[tuple[str, dict[str, str], v2.Request, int, str]] = [
            ("tok-nobody-0123456789", {}, one("rw2_bad_token"), 401, ""),
            (ALICE, {"X-Scope-OrgID": "team-b"}, one("rw2_foreign"), 403, "team-b"),
            (ALICE, {}, one("rw2_future", ts + 10 * 365 * 86_400_000), 400, "max_future"),
            (ALICE, {}, request_v2([({"__name__": "rw2_reserved", "__x": "y"}, [(1.0, ts)])]), 400, "reserved"),
        ]
        bad_refs = one("rw2_bad_refs")
        bad_refs.timeseries[0].labels_refs.extend([1])
        cases.append((ALICE, {}, bad_refs, 400, "odd number of references"))
        bomb = request_v2([])
        bomb.symbols.extend(["__name__", "rw2_bomb", "padding", "x" * 1_000_000])
        for _ in range(100):
            bomb.timeseries.add(labels_refs=[1, 2, 3, 4]).samples.add(value=1.0, timestamp=ts)
        cases.append((ALICE, {}, bomb, 413, "references name come to more"))
        for step, (token, headers, request, status, words) in enumerate(cases):
            response, body = await self.push(token, request, **headers)
            self.assertEqual(response.code, status, body)
            self.assertIn(words.encode(), body)
            self.assertEqual(_written(response), [None, None, None])
            response, body = await self.push(BOB, one(f"rw2_bob_{step}"))
            self.assertEqual(response.code, 204, body)
        await wait_for_series(
            self.http, self.prometheus, '{__name__=~"rw2_bob_.*"}', count=len(cases)
        )
        [first] = await prometheus_query(self.http, self.prometheus, "rw2_carol_first")
        self.assertEqual(first["metric"]["tenant"], "team-c")
        self.assertEqual(
            await prometheus_query(
                self.http,
                self.prometheus,
                '{__name__=~"rw2_.*", __name__!~"rw2_bob_.*|rw2_carol_first"}',
            ),
            [],
        )


class RelayedAsItCameTests(TestCase):
    """
    An upstream set to C{remote_write_version: 2}, answering as a 2.0
    receiver does.
    """

    timeout = TEST_TIMEOUT

    async def test_counts_passed_back(self) -> None:
        http = http_client(self)
        written = remote_write2.Written(7, 2, 1).headers()
        upstream = ScriptedUpstream(answer(204, headers=written))
        server = serve(self, upstream)
        gateway = await start_gateway(
            self,
            {
                "upstreams": {"store": {"url": server.url, "remote_write_version": 2}},
                "push": {"remote_write": {"upstream": "store", "path": "/api/v1/write"}},
            },
            TOKENS,
        )
        body = body_v2(request_v2([({"__name__": "up"}, [(1.0, now_ms())])]))
        response = await http.post(
            gateway.url + "/api/v1/write", data=body, headers={**RW2_HEADERS, **bearer(ALICE)}
        )
        self.assertEqual(response.code, 204, await response.content())
        self.assertEqual(_written(response), ["7", "2", "1"])
        [received] = upstream.received
        self.assertEqual(received.body, body)
        self.assertEqual(received.header("Content-Type"), remote_write2.CONTENT_TYPE)
        self.assertEqual(received.header("X-Prometheus-Remote-Write-Version"), "2.0.0")
        self.assertEqual(received.header("X-Scope-OrgID"), "team-a")

        # A receiver that does not read 2.0 says 415: the client hears it,
        # so that a Prometheus sender falls back to 1.0.
        upstream.script[:] = [answer(415, b"unsupported proto")]
        response = await http.post(
            gateway.url + "/api/v1/write", data=body, headers={**RW2_HEADERS, **bearer(ALICE)}
        )
        self.assertEqual(response.code, 415, await response.content())
