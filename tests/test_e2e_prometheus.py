"""
End to end with a real Prometheus: pushes through sealgw land in
Prometheus's TSDB (it is the remote-write upstream), and a Prometheus in
agent mode remote-writes through sealgw into a second one.
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from twisted.trial.unittest import TestCase

from sealgw.signals.proto import remote_pb2
from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    SEAL_BUCKET_COUNTS,
    SEAL_BUCKETS,
    SEAL_COUNT,
    SEAL_SUM,
    TEST_TIMEOUT,
    TextMetrics,
    bearer,
    free_port,
    http_client,
    now_ms,
    prometheus_query,
    remote_write_body,
    require_prometheus,
    run_gateway,
    seal_body,
    seal_sample_families,
    serve,
    start_gateway,
    start_prometheus,
    wait_for_series,
    write_request,
    write_tokens,
)

TOKENS = [{"name": "node-1", "token": "tok-node-1"}]
RECEIVER_CONFIG = {"global": {"scrape_interval": "15s"}, "scrape_configs": []}


def _only(result: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(result) == 1, f"expected one series, got {result}"
    return result[0]


def _value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


class PrometheusUpstreamTests(TestCase):
    """
    Prometheus (C{--web.enable-remote-write-receiver}) behind sealgw.
    """

    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        require_prometheus()
        self.http = http_client(self)
        self.prometheus = await start_prometheus(self, RECEIVER_CONFIG, receiver=True)
        upstream = {
            "url": self.prometheus.url,
            "retry": {"attempts": 2, "initial_backoff": "50ms", "max_backoff": "100ms"},
        }
        route = {"upstream": "prometheus", "path": "/api/v1/write"}
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {"prometheus": upstream},
                "push": {"remote_write": dict(route), "seal": dict(route)},
            },
            TOKENS,
        )

    async def test_remote_write(self) -> None:
        """
        A remote-write request through the gateway is answered 204 and its
        series and values are in Prometheus.
        """
        ts = now_ms()
        request = write_request(
            [
                (
                    {"__name__": "e2e_rw_total", "job": "e2e", "instance": "a"},
                    [(41.0, ts - 1000), (42.0, ts)],
                ),
                ({"__name__": "e2e_rw_gauge", "job": "e2e", "color": "blue"}, [(0.25, ts)]),
            ]
        )
        response = await self.http.post(
            self.gateway.url + "/api/v1/push",
            data=remote_write_body(request),
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-node-1")},
        )
        body = await response.content()
        self.assertEqual(response.code, 204, body)

        counter = _only(await wait_for_series(self.http, self.prometheus, "e2e_rw_total"))
        self.assertEqual(
            counter["metric"], {"__name__": "e2e_rw_total", "job": "e2e", "instance": "a"}
        )
        self.assertEqual(_value(counter), 42.0)
        gauge = _only(
            await prometheus_query(self.http, self.prometheus, 'e2e_rw_gauge{color="blue"}')
        )
        self.assertEqual(_value(gauge), 0.25)
        # Prometheus sends metadata in requests of their own.
        metadata = remote_pb2.WriteRequest()
        metadata.metadata.add(
            type=remote_pb2.MetricMetadata.COUNTER, metric_family_name="e2e_rw_total", help="h"
        )
        response = await self.http.post(
            self.gateway.url + "/api/v1/push",
            data=remote_write_body(metadata),
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-node-1")},
        )
        self.assertEqual(response.code, 204, await response.content())
        # Both samples of the counter are stored, at their own timestamps.
        ranged = _only(await prometheus_query(self.http, self.prometheus, "e2e_rw_total[5m]"))
        self.assertEqual(
            [(int(round(float(t) * 1000)), float(v)) for t, v in ranged["values"]],
            [(ts - 1000, 41.0), (ts, 42.0)],
        )

    async def test_seal_push(self) -> None:
        """
        The seal sample client's push is answered 201 and every series it
        becomes is in Prometheus with exact values, the C{+Inf} bucket the
        client left out, and C{node_name} set to the token's name.
        """
        ts = now_ms()
        response = await self.http.post(
            self.gateway.url + "/publish/metrics",
            data=seal_body(seal_sample_families(ts), labels={"host": "key-server-7"}),
            headers={"Content-Encoding": ["snappy"], **bearer("tok-node-1")},
        )
        body = await response.content()
        self.assertEqual((response.code, body), (201, b"created"))

        series = await wait_for_series(
            self.http,
            self.prometheus,
            '{__name__=~"seal_request_duration_bucket"}',
            count=len(SEAL_BUCKETS) + 1,
        )
        buckets = {s["metric"]["le"]: _value(s) for s in series}
        # Prometheus's own spelling of le: whole numbers end in ".0".
        les = ["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0"]
        expected = {le: float(c) for le, c in zip(les, SEAL_BUCKET_COUNTS, strict=True)}
        expected["+Inf"] = float(SEAL_COUNT)
        self.assertEqual(buckets, expected)

        first = _only(
            await prometheus_query(
                self.http, self.prometheus, 'seal_request_duration_bucket{le="0.05"}'
            )
        )
        self.assertEqual(
            first["metric"],
            {
                "__name__": "seal_request_duration_bucket",
                "le": "0.05",
                "host": "key-server-7",
                "node_name": "node-1",
                "client_ip": "127.0.0.1",
            },
        )
        self.assertEqual(_value(first), 1.0)
        total = _only(
            await prometheus_query(self.http, self.prometheus, "seal_request_duration_sum")
        )
        self.assertEqual(_value(total), SEAL_SUM)
        count = _only(
            await prometheus_query(self.http, self.prometheus, "seal_request_duration_count")
        )
        self.assertEqual(_value(count), float(SEAL_COUNT))
        self.assertEqual(count["metric"]["node_name"], "node-1")

        current = _only(await prometheus_query(self.http, self.prometheus, "current_time"))
        self.assertEqual(_value(current), float(ts))
        self.assertEqual(current["metric"]["node_name"], "node-1")
        info = _only(
            await prometheus_query(self.http, self.prometheus, 'seal_build_info{version="0.1.0"}')
        )
        self.assertEqual(_value(info), 1.0)
        self.assertEqual(info["metric"]["node_name"], "node-1")

    async def test_seal_proxy_files(self) -> None:
        """
        A seal-proxy deployment's own C{seal-proxy.yaml} and
        C{bearer-tokens.yaml}, unchanged, run a gateway whose pushes land
        in Prometheus with the label actions applied.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = os.path.join(directory, "seal-proxy.yaml")
        with open(config, "w", encoding="utf-8") as f:
            yaml.safe_dump(
                {
                    "listen-address": f"127.0.0.1:{free_port()}",
                    "metrics-address": f"127.0.0.1:{free_port()}",
                    "label-actions": {"add": {"network": "testnet"}, "remove": {"host": ""}},
                    "remote-write": {
                        "url": self.prometheus.url + "/api/v1/write",
                        "pool-max-idle-per-host": 4,
                    },
                },
                f,
            )
        tokens = write_tokens(directory, [{"name": "seal-node-9", "token": "tok-seal-9"}])
        gateway = run_gateway(self, config, bearer_tokens_path=tokens)
        ts = now_ms()
        response = await self.http.post(
            gateway.url + "/publish/metrics",
            data=seal_body(seal_sample_families(ts), labels={"host": "kv-3", "network": "x"}),
            headers={"Content-Encoding": ["snappy"], **bearer("tok-seal-9")},
        )
        self.assertEqual(response.code, 201, await response.content())
        current = _only(
            await wait_for_series(
                self.http, self.prometheus, 'current_time{node_name="seal-node-9"}'
            )
        )
        self.assertEqual(
            current["metric"],
            {
                "__name__": "current_time",
                "network": "testnet",
                "node_name": "seal-node-9",
                "client_ip": "127.0.0.1",
            },
        )
        self.assertEqual(_value(current), float(ts))
        # The metrics address serves the gateway's own metrics.
        admin = gateway.service.listeners[1].port.getHost().port
        response = await self.http.get(f"http://127.0.0.1:{admin}/metrics")
        self.assertEqual(response.code, 200)
        self.assertIn(b"# TYPE", await response.content())

    async def test_upstream_refusal_reaches_client(self) -> None:
        """
        A sample Prometheus refuses (too old for its head block) comes back
        to the client as Prometheus's own 400 and reason, not as a 5xx the
        sender would retry for ever.
        """
        ts = now_ms()
        fresh = write_request([({"__name__": "e2e_order"}, [(1.0, ts)])])
        response = await self.http.post(
            self.gateway.url + "/api/v1/write",
            data=remote_write_body(fresh),
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-node-1")},
        )
        await response.content()
        self.assertEqual(response.code, 204)
        stale = write_request([({"__name__": "e2e_order"}, [(2.0, ts - 3_600_000 * 24)])])
        response = await self.http.post(
            self.gateway.url + "/api/v1/write",
            data=remote_write_body(stale),
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-node-1")},
        )
        body = await response.content()
        self.assertEqual(response.code, 400, body)
        self.assertIn(b"upstream rejected the data", body)
        self.assertIn(b"out of bounds", body)


class PrometheusAgentTests(TestCase):
    """
    A Prometheus agent scrapes a target and remote-writes through sealgw
    into a second Prometheus.
    """

    timeout = TEST_TIMEOUT

    async def test_agent_remote_write_through_gateway(self) -> None:
        require_prometheus()
        http = http_client(self)
        target = TextMetrics(
            "# HELP e2e_agent_marker A value only this test exposes.\n"
            "# TYPE e2e_agent_marker gauge\n"
            'e2e_agent_marker{color="green"} 42\n'
        )
        scraped = serve(self, target)
        receiver = await start_prometheus(self, RECEIVER_CONFIG, receiver=True)
        gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "receiver": {
                        "url": receiver.url + "/api/v1/write",
                        "retry": {"attempts": 2, "initial_backoff": "50ms", "max_backoff": "100ms"},
                    }
                },
                "push": {
                    "remote_write": {
                        "upstream": "receiver",
                        # Proves the data went through the gateway.
                        "labels": {"add": {"via": "sealgw"}},
                    }
                },
            },
            [{"name": "agent-1", "token": "tok-agent-1", "tenants": ["team-a"]}],
        )
        await start_prometheus(
            self,
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "e2e-agent",
                        "static_configs": [{"targets": [f"127.0.0.1:{scraped.port}"]}],
                    }
                ],
                "remote_write": [
                    {
                        "url": gateway.url + "/api/v1/push",
                        "authorization": {"credentials": "tok-agent-1"},
                        "queue_config": {
                            "batch_send_deadline": "1s",
                            "min_backoff": "100ms",
                            "max_backoff": "1s",
                        },
                    }
                ],
            },
            agent=True,
        )
        series = _only(await wait_for_series(http, receiver, "e2e_agent_marker", timeout=60))
        self.assertEqual(
            series["metric"],
            {
                "__name__": "e2e_agent_marker",
                "color": "green",
                "job": "e2e-agent",
                "instance": f"127.0.0.1:{scraped.port}",
                "via": "sealgw",
            },
        )
        self.assertEqual(_value(series), 42.0)
        # The agent's own series about the scrape came along too.
        up = _only(await prometheus_query(http, receiver, 'up{job="e2e-agent"}'))
        self.assertEqual(_value(up), 1.0)
        self.assertGreater(target.scrapes, 0)
