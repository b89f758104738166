"""
End to end: seal-proxy pushes through the gateway to a recording
remote-write upstream — the labels every series gets (C{node_name},
C{client_ip} as far as trusted proxies vouch for it, the route's label
actions), the sui-proxy variant, and batching.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from twisted.trial.unittest import TestCase

from sealgw.signals import snappy_compress, snappy_decompress
from sealgw.signals.proto import metrics_pb2, remote_pb2
from tests.e2e_support import (
    TEST_TIMEOUT,
    HeaderMap,
    PeakMemory,
    Received,
    ScriptedUpstream,
    bearer,
    delimited,
    http_client,
    now_ms,
    seal_body,
    seal_sample_families,
    serve,
    start_gateway,
)

TOKENS = [{"name": "validator-7", "token": "tok-7", "tenants": ["sui-mainnet"]}]
SUI_CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)


def series_of(received: Received) -> list[dict[str, Any]]:
    request = remote_pb2.WriteRequest()
    request.ParseFromString(snappy_decompress(received.body, 64 << 20))
    return [
        {
            "labels": {label.name: label.value for label in ts.labels},
            "samples": [(s.value, s.timestamp) for s in ts.samples],
        }
        for ts in request.timeseries
    ]


def find(series: list[dict[str, Any]], name: str, **labels: str) -> dict[str, Any]:
    found = [
        s
        for s in series
        if s["labels"]["__name__"] == name
        and all(s["labels"].get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def value_of(series: list[dict[str, Any]], name: str, sent_ms: int, **labels: str) -> float:
    """
    The value of the one sample of series C{name}, checking that it is
    stamped within a few seconds after C{sent_ms}.
    """
    [(value, timestamp)] = find(series, name, **labels)["samples"]
    assert sent_ms <= timestamp < sent_ms + 5000, (sent_ms, timestamp)
    return float(value)


class SealPushTests(TestCase):
    timeout = TEST_TIMEOUT

    async def start(
        self,
        *,
        trusted: Optional[list[str]] = None,
        labels: Optional[dict[str, Any]] = None,
        batch_size: Optional[int] = None,
        endpoint: str = "tcp:0:interface=127.0.0.1",
    ) -> None:
        self.upstream = ScriptedUpstream()
        server = serve(self, self.upstream)
        seal: dict[str, Any] = {"upstream": "mimir", "path": "/api/v1/push"}
        if labels is not None:
            seal["labels"] = labels
        if batch_size is not None:
            seal["batch_size"] = batch_size
        config: dict[str, Any] = {
            "listeners": [{"endpoint": endpoint}],
            "upstreams": {"mimir": {"url": server.url}},
            "push": {"seal": seal},
        }
        if trusted is not None:
            config["trusted_proxies"] = trusted
        self.gateway = await start_gateway(self, config, TOKENS)
        self.http = http_client(self)

    async def push(
        self,
        body: bytes,
        headers: Optional[HeaderMap] = None,
        token: str = "tok-7",
        url: Optional[str] = None,
    ) -> tuple[int, bytes]:
        all_headers = {"Content-Encoding": ["snappy"], **bearer(token), **(headers or {})}
        response = await self.http.post(
            (url or self.gateway.url) + "/publish/metrics", data=body, headers=all_headers
        )
        return response.code, await response.content()

    async def test_labels(self) -> None:
        """
        Every series carries the client's labels, C{node_name} (the
        token's name) and C{client_ip}; a client cannot set either of the
        last two itself.  Series come as remote write 1.0 with the tenant.
        """
        await self.start()
        ts = now_ms()
        code, text = await self.push(
            seal_body(
                seal_sample_families(ts),
                labels={"host": "kv-1", "node_name": "someone-else", "client_ip": "10.9.9.9"},
            ),
            headers={"X-Forwarded-For": ["203.0.113.50"]},
        )
        self.assertEqual((code, text), (201, b"created"))
        [received] = self.upstream.received
        self.assertEqual(received.path, b"/api/v1/push")
        self.assertEqual(received.header("Content-Type"), "application/x-protobuf")
        self.assertEqual(received.header("Content-Encoding"), "snappy")
        self.assertEqual(received.header("X-Prometheus-Remote-Write-Version"), "0.1.0")
        self.assertEqual(received.header_values("X-Scope-OrgID"), ["sui-mainnet"])
        series = series_of(received)
        # 1 + 1 + (8 buckets, +Inf, _sum, _count)
        self.assertEqual(len(series), 13)
        for one in series:
            self.assertEqual(one["labels"]["node_name"], "validator-7")
            self.assertEqual(one["labels"]["client_ip"], "127.0.0.1")
            self.assertEqual(one["labels"]["host"], "kv-1")
            self.assertEqual(list(one["labels"]), sorted(one["labels"]))
        # The client sets no timestamps: every sample gets the receive time.
        self.assertEqual(value_of(series, "current_time", ts), float(ts))
        self.assertEqual(value_of(series, "seal_build_info", ts, version="0.1.0"), 1.0)
        self.assertEqual(value_of(series, "seal_request_duration_bucket", ts, le="+Inf"), 8.0)
        self.assertEqual(value_of(series, "seal_request_duration_bucket", ts, le="10.0"), 7.0)
        self.assertEqual(value_of(series, "seal_request_duration_bucket", ts, le="0.05"), 1.0)
        self.assertEqual(value_of(series, "seal_request_duration_sum", ts), 12.5)
        self.assertEqual(value_of(series, "seal_request_duration_count", ts), 8.0)

    async def test_receive_time(self) -> None:
        """
        Metrics without a timestamp get the time the push arrived.
        """
        await self.start()
        family = metrics_pb2.MetricFamily(name="no_ts", type=metrics_pb2.COUNTER)
        family.metric.add().counter.value = 3
        before = int(time.time() * 1000)
        code, _ = await self.push(seal_body([family]))
        after = int(time.time() * 1000)
        self.assertEqual(code, 201)
        [one] = series_of(self.upstream.received[0])
        [(value, ts)] = one["samples"]
        self.assertEqual(value, 3.0)
        self.assertTrue(before - 1000 <= ts <= after + 1000, (before, ts, after))

    async def test_label_actions(self) -> None:
        """
        C{add} wins over the client's labels; C{remove} (a list, or
        seal-proxy's mapping) deletes labels, the gateway's own included.
        """
        await self.start(
            labels={"add": {"network": "mainnet"}, "remove": {"client_ip": "", "host": ""}}
        )
        code, _ = await self.push(
            seal_body(seal_sample_families(now_ms()), labels={"network": "testnet", "host": "x"})
        )
        self.assertEqual(code, 201)
        for one in series_of(self.upstream.received[0]):
            self.assertEqual(one["labels"]["network"], "mainnet")
            self.assertNotIn("client_ip", one["labels"])
            self.assertNotIn("host", one["labels"])
            self.assertEqual(one["labels"]["node_name"], "validator-7")

    async def test_trusted_proxy(self) -> None:
        """
        From a trusted proxy, C{client_ip} is the nearest address in
        C{X-Forwarded-For} that is not itself a trusted proxy.
        """
        await self.start(trusted=["127.0.0.1/32", "10.0.0.0/8"])
        cases = [
            (["198.51.100.1, 203.0.113.9"], "203.0.113.9"),
            (["203.0.113.9, 10.1.2.3"], "203.0.113.9"),
            (["203.0.113.9", "10.1.2.3"], "203.0.113.9"),
            (["not-an-address"], "127.0.0.1"),
            (None, "127.0.0.1"),
        ]
        for forwarded, expected in cases:
            self.upstream.received.clear()
            headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
            code, _ = await self.push(seal_body(seal_sample_families(now_ms())), headers=headers)
            self.assertEqual(code, 201)
            ips = {s["labels"]["client_ip"] for s in series_of(self.upstream.received[0])}
            self.assertEqual(ips, {expected}, forwarded)

    async def test_dual_stack_listener(self) -> None:
        """
        On an IPv6 listener that also takes IPv4, an IPv4 client is named
        by its IPv4 address, and a trusted IPv4 proxy is recognised.
        """
        await self.start(trusted=["127.0.0.1/32"], endpoint=r"tcp6:0:interface=\:\:")
        url = f"http://127.0.0.1:{self.gateway.port}"
        code, text = await self.push(seal_body(seal_sample_families(now_ms())), url=url)
        self.assertEqual(code, 201, text)
        code, text = await self.push(
            seal_body(seal_sample_families(now_ms())),
            headers={"X-Forwarded-For": ["203.0.113.9"]},
            url=url,
        )
        self.assertEqual(code, 201, text)
        first, second = self.upstream.received
        self.assertEqual({s["labels"]["client_ip"] for s in series_of(first)}, {"127.0.0.1"})
        self.assertEqual({s["labels"]["client_ip"] for s in series_of(second)}, {"203.0.113.9"})

    async def test_sui_proxy_variant(self) -> None:
        """
        The older sui-proxy push: the bare delimited stream, snappy or not.
        """
        await self.start()
        ts = now_ms()
        stream = delimited(*seal_sample_families(ts))
        for body, encoding in [(stream, []), (snappy_compress(stream), ["snappy"])]:
            self.upstream.received.clear()
            response = await self.http.post(
                self.gateway.url + "/publish/metrics",
                data=body,
                headers={
                    "Content-Type": [SUI_CONTENT_TYPE],
                    "Content-Encoding": encoding,
                    **bearer("tok-7"),
                },
            )
            self.assertEqual(response.code, 201, await response.content())
            series = series_of(self.upstream.received[0])
            self.assertEqual(len(series), 13)
            self.assertEqual(value_of(series, "current_time", ts), float(ts))

    async def test_batches(self) -> None:
        """
        With C{batch_size} 5, 13 series go up in three requests, all with
        the tenant; the client is answered once, after the last.
        """
        await self.start(batch_size=5)
        code, _ = await self.push(seal_body(seal_sample_families(now_ms())))
        self.assertEqual(code, 201)
        self.assertEqual(len(self.upstream.received), 3)
        self.assertEqual([len(series_of(r)) for r in self.upstream.received], [5, 5, 3])
        self.assertEqual(
            {r.header("X-Scope-OrgID") for r in self.upstream.received}, {"sui-mainnet"}
        )


class SealResourceTests(TestCase):
    """
    What one small seal push may cost the gateway.
    """

    timeout = TEST_TIMEOUT

    async def test_empty_families_are_cheap(self) -> None:
        """
        A ~20 KB body of 200,000 zero bytes is 200,000 empty metric
        families.  Turning it into nothing must take neither much memory
        nor much of the reactor's time (the families are never built).
        """
        upstream = ScriptedUpstream()
        server = serve(self, upstream)
        gateway = await start_gateway(
            self,
            {"upstreams": {"m": {"url": server.url}}, "push": {"seal": {"upstream": "m"}}},
            TOKENS,
        )
        http = http_client(self)
        body = snappy_compress(b'{"buf": [' + b"0," * 199_999 + b"0]}")
        self.assertLess(len(body), 32 * 1024)
        memory = PeakMemory()
        response = await http.post(
            gateway.url + "/publish/metrics",
            data=body,
            headers={"Content-Encoding": ["snappy"], **bearer("tok-7")},
        )
        await response.content()
        growth = memory.growth()
        self.assertLess(growth, 20 * 1024 * 1024, f"peak memory grew by {growth >> 20} MiB")
