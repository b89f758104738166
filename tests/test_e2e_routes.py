"""
End to end over loopback sockets: remote write split by a tenant label
(C{tenant_from_label}), per-tenant upstreams and copies to more upstreams
(C{tenants}, C{also}), against scripted upstreams that record what they
were sent.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from prometheus_client import CollectorRegistry
from treq.client import HTTPClient
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from sealgw.signals import remote_write, snappy_decompress
from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    Gateway,
    Received,
    ScriptedUpstream,
    answer,
    bearer,
    free_port,
    http_client,
    now_ms,
    prometheus_query,
    remote_write_body,
    serve,
    start_gateway,
    start_prometheus,
    wait_until,
    write_request,
)
from tests.test_spool_e2e import Prometheus as SpoolPrometheus

TOKENS = [
    {"name": "prometheus-1", "token": "tok-1", "tenants": ["platform", "team-a", "team-b"]},
    {"name": "scraper", "token": "tok-2", "tenants": ["team-a", "team-b"]},
]
FAST_RETRY = {"attempts": 2, "initial_backoff": "10ms", "max_backoff": "20ms", "deadline": "5s"}


def _names(received: Received) -> list[str]:
    request = remote_write.decode(snappy_decompress(received.body, 1 << 24))
    return [
        next(label.value for label in series.labels if label.name == "__name__")
        for series in request.timeseries
    ]


def _refused(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value(
        "sealgw_series_refused_total", {"route": "remote_write", "reason": reason}
    )
    return value or 0.0


class RoutesEndToEndTests(TestCase):
    timeout = TEST_TIMEOUT

    def setUp(self) -> None:
        self.http: HTTPClient = http_client(self)

    def upstream(self, *script: Any) -> tuple[ScriptedUpstream, str]:
        upstream = ScriptedUpstream(*script)
        return upstream, serve(self, upstream).url

    async def push(self, gateway: Gateway, series: Any, token: str, **headers: str) -> Any:
        body = remote_write_body(write_request(series))
        response = await self.http.post(
            gateway.url + "/api/v1/push",
            data=body,
            headers={**REMOTE_WRITE_HEADERS, **bearer(token, **headers)},
        )
        return response.code, (await response.content()).decode("utf-8")

    async def test_tenants_from_a_label(self) -> None:
        """
        A stream whose series carry three tenants' labels, from an identity
        allowed two of them: each allowed tenant's series reach the
        upstream in a request with that tenant's header; the third
        tenant's are refused (400 naming them, counted), nothing of them
        relayed.
        """
        mimir, url = self.upstream()
        gateway = await start_gateway(
            self,
            {
                "upstreams": {"mimir": {"url": url, "retry": FAST_RETRY}},
                "push": {
                    "remote_write": {
                        "upstream": "mimir",
                        "path": "/api/v1/push",
                        "tenant_from_label": {"label": "team", "keep": False},
                    }
                },
            },
            TOKENS,
        )
        now = now_ms()
        series = [
            ({"__name__": "a1", "team": "team-a"}, [(1.0, now)]),
            ({"__name__": "c1", "team": "team-c"}, [(2.0, now)]),
            ({"__name__": "b1", "team": "team-b"}, [(3.0, now)]),
            ({"__name__": "a2", "team": "team-a"}, [(4.0, now)]),
        ]
        events: list[Any] = []
        globalLogPublisher.addObserver(events.append)
        try:
            code, text = await self.push(gateway, series, "tok-2", X_Scope_OrgID="team-a")
        finally:
            globalLogPublisher.removeObserver(events.append)
        self.assertEqual(code, 400, text)
        self.assertIn("1 of 4 series refused and not relayed, the other 3 accepted", text)
        lines = [formatEvent(e) for e in events if "push refused" in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(
            lines[0].startswith(
                "push refused for a tenant the identity may not use (tenant_not_allowed): "
                "identity scraper, tenant team-a, route remote_write: remote write: 1 of 4"
            ),
            lines[0],
        )
        self.assertIn("tenant 'team-c' (label 'team') is not one identity 'scraper' may use", text)
        by_tenant = {r.header("X-Scope-OrgID"): _names(r) for r in mimir.received}
        self.assertEqual(by_tenant, {"team-a": ["a1", "a2"], "team-b": ["b1"]})
        for received in mimir.received:
            self.assertEqual(received.header_values("X-Scope-OrgID"), [received.header("X-Scope-OrgID")])
            request = remote_write.decode(snappy_decompress(received.body, 1 << 24))
            self.assertNotIn("team", {label.name for s in request.timeseries for label in s.labels})
        self.assertEqual(_refused(gateway.registry, "tenant_not_allowed"), 1.0)

        # Every series allowed: 204, and unlabelled ones go to the tenant
        # the request names.
        del mimir.received[:]
        code, text = await self.push(
            gateway,
            [({"__name__": "p"}, [(1.0, now)]), ({"__name__": "b", "team": "team-b"}, [(1.0, now)])],
            "tok-1",
            X_Scope_OrgID="platform",
        )
        self.assertEqual(code, 204, text)
        self.assertEqual(
            {r.header("X-Scope-OrgID"): _names(r) for r in mimir.received},
            {"platform": ["p"], "team-b": ["b"]},
        )

    async def test_one_tenants_part_fails(self) -> None:
        """
        Each tenant's part goes to its own upstream, whatever becomes of
        the others: one store refusing its part (400) and another down
        (503) do not keep the third part from its store.  The client hears
        503, a status it retries, over the 400: sent again, the push
        reaches the store that was down.
        """
        mimir, url = self.upstream()
        eu, eu_url = self.upstream(answer(400, b"per-tenant limit"))
        down, down_url = self.upstream(answer(503, b"down"))
        gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "mimir": {"url": url, "retry": FAST_RETRY},
                    "mimir-eu": {"url": eu_url, "retry": FAST_RETRY},
                    "mimir-down": {"url": down_url, "retry": FAST_RETRY},
                },
                "push": {
                    "remote_write": {
                        "upstream": "mimir",
                        "tenants": {"team-a": "mimir-down", "team-b": "mimir-eu"},
                        "tenant_from_label": "team",
                    }
                },
            },
            TOKENS,
        )
        now = now_ms()
        series = [
            ({"__name__": "a", "team": "team-a"}, [(1.0, now)]),
            ({"__name__": "b", "team": "team-b"}, [(1.0, now)]),
            ({"__name__": "p"}, [(1.0, now)]),
        ]
        code, text = await self.push(gateway, series, "tok-1", X_Scope_OrgID="platform")
        self.assertEqual(code, 503, text)
        self.assertIn("down", text)
        self.assertEqual([(r.header("X-Scope-OrgID"), _names(r)) for r in mimir.received],
                         [("platform", ["p"])])
        self.assertEqual([r.header("X-Scope-OrgID") for r in eu.received], ["team-b"])
        self.assertEqual({r.header("X-Scope-OrgID") for r in down.received}, {"team-a"})

    async def test_copies(self) -> None:
        """
        With C{also}, every push reaches both upstreams; while one of them
        is failing the client hears a status it retries, and 204 only once
        both have it.
        """
        mimir, url = self.upstream()
        azure, azure_url = self.upstream(answer(503, b"busy"), answer(503, b"busy"), answer(204))
        gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "mimir": {"url": url, "retry": FAST_RETRY},
                    "azure": {"url": azure_url, "retry": FAST_RETRY},
                },
                "push": {"remote_write": {"upstream": "mimir", "also": ["azure"]}},
            },
            TOKENS,
        )
        series = [({"__name__": "x"}, [(1.0, now_ms())])]
        code, text = await self.push(gateway, series, "tok-2", X_Scope_OrgID="team-a")
        self.assertEqual(code, 503, text)
        self.assertEqual(len(mimir.received), 1)
        self.assertEqual(len(azure.received), 2)  # its own retries
        code, text = await self.push(gateway, series, "tok-2", X_Scope_OrgID="team-a")
        self.assertEqual(code, 204, text)
        self.assertEqual(len(mimir.received), 2)
        self.assertEqual(mimir.received[-1].body, azure.received[-1].body)
        self.assertEqual(azure.received[-1].header("X-Scope-OrgID"), "team-a")


class FanOutToPrometheusTests(TestCase):
    """
    Copies to two real Prometheus servers, one of them down behind a
    spool.
    """

    timeout = 180

    async def test_both_hold_every_acknowledged_sample(self) -> None:
        """
        While the second Prometheus is down its copies go to its spool, so
        every push is still acknowledged 204; once it is up, it holds every
        acknowledged sample, as the first does.
        """
        http = http_client(self)
        first = await start_prometheus(self, {"global": {"scrape_interval": "1h"}}, receiver=True)
        second = SpoolPrometheus(self, free_port())
        gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "first": {"url": first.url, "retry": FAST_RETRY},
                    "second": {
                        "url": second.url,
                        "retry": {"attempts": 1, "initial_backoff": "50ms",
                                  "max_backoff": "500ms"},
                        "timeouts": {"connect": "1s", "response": "5s"},
                        "spool": {"directory": os.path.abspath(self.mktemp())},
                    },
                },
                "push": {
                    "remote_write": {
                        "upstream": "first",
                        "path": "/api/v1/write",
                        "also": ["second"],
                    }
                },
            },
            TOKENS,
        )
        pushed = 30
        for n in range(pushed):
            if n == 20:
                # Twenty copies wait in the second's spool, none delivered.
                queued = gateway.registry.get_sample_value(
                    "sealgw_spool_queued_records", {"upstream": "second"}
                )
                self.assertEqual(queued, 20.0)
                await second.start(self)
            series = [({"__name__": "fanout_e2e", "n": str(n)}, [(1.0, now_ms())])]
            body = remote_write_body(write_request(series))
            response = await http.post(
                gateway.url + "/api/v1/push",
                data=body,
                headers={**REMOTE_WRITE_HEADERS, **bearer("tok-2", X_Scope_OrgID="team-a")},
                timeout=10,
            )
            self.assertEqual(response.code, 204, await response.text())
        for prometheus in (first, second):

            async def count(p: Any = prometheus) -> Optional[bool]:
                result = await prometheus_query(http, p, "count(fanout_e2e)")
                return True if result and int(result[0]["value"][1]) == pushed else None

            await wait_until(count, what=f"{pushed} series in {prometheus.url}", timeout=60)
        forwarded = gateway.registry.get_sample_value(
            "sealgw_spool_forwarded_total", {"upstream": "second"}
        )
        self.assertEqual(forwarded, float(pushed))
