"""
End to end: how each way an upstream can fail reaches the client through
the gateway.  Senders retry 5xx and 429 and never other 4xx, so the
gateway must keep the two apart (PROTOCOLS.md, section 2): a scripted
upstream on loopback plays each failure.
"""

from __future__ import annotations

from typing import Any, Optional

from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from treq.client import HTTPClient
from twisted.trial.unittest import TestCase

from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    Gateway,
    ScriptedUpstream,
    answer,
    bearer,
    free_port,
    hang,
    http_client,
    now_ms,
    reactor,
    remote_write_body,
    seal_body,
    seal_sample_families,
    serve,
    start_gateway,
    with_timeout,
    write_request,
)

TOKENS = [{"name": "node-1", "token": "tok-1", "tenants": ["team-a"]}]
FAST_RETRY = {"attempts": 3, "initial_backoff": "10ms", "max_backoff": "20ms", "deadline": "5s"}


class UpstreamFailureTests(TestCase):
    timeout = TEST_TIMEOUT

    def setUp(self) -> None:
        self.http: HTTPClient = http_client(self)

    async def gateway_for(
        self,
        url: str,
        retry: Optional[dict[str, Any]] = None,
        timeouts: Optional[dict[str, Any]] = None,
    ) -> Gateway:
        upstream: dict[str, Any] = {"url": url, "retry": retry or FAST_RETRY}
        if timeouts is not None:
            upstream["timeouts"] = timeouts
        return await start_gateway(
            self,
            {
                "upstreams": {"mimir": upstream},
                "push": {
                    "remote_write": {"upstream": "mimir", "path": "/api/v1/push"},
                    "seal": {"upstream": "mimir", "path": "/api/v1/push"},
                    "loki": {"upstream": "mimir", "path": "/loki/api/v1/push"},
                    "otlp_traces": {"upstream": "mimir", "path": "/v1/traces"},
                },
            },
            TOKENS,
        )

    async def scripted(self, *script: Any, **settings: Any) -> tuple[ScriptedUpstream, Gateway]:
        upstream = ScriptedUpstream(*script)
        server = serve(self, upstream)
        return upstream, await self.gateway_for(server.url, **settings)

    async def remote_write(self, gateway: Gateway) -> tuple[int, Any, bytes]:
        body = remote_write_body(
            write_request([({"__name__": "up", "job": "x"}, [(1.0, now_ms())])])
        )
        response = await self.http.post(
            gateway.url + "/api/v1/push",
            data=body,
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-1")},
        )
        return response.code, response.headers, await response.content()

    # -- the upstream cannot be had --------------------------------------------

    async def test_upstream_down(self) -> None:
        """
        Nothing listens on the upstream's port: 503, after the configured
        attempts.
        """
        gateway = await self.gateway_for(f"http://127.0.0.1:{free_port()}")
        code, _, body = await self.remote_write(gateway)
        self.assertEqual(code, 503, body)
        self.assertIn(b"upstream unavailable: cannot reach upstream", body)
        self.assertIn(b"gave up after 3 attempts", body)

    async def test_upstream_never_answers(self) -> None:
        """
        An upstream that takes the request and never answers: 504 once the
        response timeout and the retry deadline are spent, and the hung
        requests are abandoned (their connections dropped).
        """
        upstream, gateway = await self.scripted(
            hang(),
            timeouts={"response": "300ms"},
            retry={
                "attempts": 5,
                "initial_backoff": "10ms",
                "max_backoff": "20ms",
                "deadline": "500ms",
            },
        )
        started = reactor.seconds()
        code, _, body = await self.remote_write(gateway)
        elapsed = reactor.seconds() - started
        self.assertEqual(code, 504, body)
        self.assertIn(b"upstream timed out", body)
        self.assertIn(b"retry deadline", body)
        self.assertEqual(len(upstream.received), 2)
        self.assertLess(elapsed, 3.0)
        for received in upstream.received:
            assert received.lost is not None
            await with_timeout(received.lost, 5, "the hung upstream request to be dropped")

    # -- the upstream answers 5xx --------------------------------------------------

    async def test_500_every_time(self) -> None:
        upstream, gateway = await self.scripted(answer(500, b"ingester ring unhealthy"))
        code, _, body = await self.remote_write(gateway)
        self.assertEqual(code, 502, body)
        self.assertIn(b"upstream answered 500: ingester ring unhealthy", body)
        self.assertEqual(len(upstream.received), 3)
        # Every attempt carried the same data and the tenant.
        self.assertEqual(len({r.body for r in upstream.received}), 1)
        self.assertEqual({r.header("X-Scope-OrgID") for r in upstream.received}, {"team-a"})

    async def test_500_then_success(self) -> None:
        upstream, gateway = await self.scripted(answer(500, b"warming up"), answer(204))
        code, _, body = await self.remote_write(gateway)
        self.assertEqual((code, body), (204, b""))
        self.assertEqual(len(upstream.received), 2)
        self.assertEqual(upstream.received[0].body, upstream.received[1].body)

    async def test_503_keeps_retry_after(self) -> None:
        upstream, gateway = await self.scripted(
            answer(503, b"shutting down", {"Retry-After": "7"}),
            retry={
                "attempts": 3,
                "initial_backoff": "10ms",
                "max_backoff": "20ms",
                "deadline": "1s",
            },
        )
        code, headers, body = await self.remote_write(gateway)
        self.assertEqual(code, 503, body)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"7"])
        # Waiting 7 s would pass the 1 s deadline: no second attempt.
        self.assertEqual(len(upstream.received), 1)

    # -- the upstream says "not now" ----------------------------------------------

    async def test_429_then_success(self) -> None:
        """
        C{Retry-After: 1} is honoured: the retry comes a second later and
        its success is the client's.
        """
        upstream, gateway = await self.scripted(
            answer(429, b"slow down", {"Retry-After": "1"}), answer(204)
        )
        started = reactor.seconds()
        code, _, body = await self.remote_write(gateway)
        self.assertEqual((code, body), (204, b""))
        self.assertEqual(len(upstream.received), 2)
        self.assertGreaterEqual(reactor.seconds() - started, 0.9)

    async def test_429_every_time(self) -> None:
        upstream, gateway = await self.scripted(
            answer(429, b"ingestion rate limit exceeded", {"Retry-After": "1"}),
            retry={
                "attempts": 2,
                "initial_backoff": "10ms",
                "max_backoff": "20ms",
                "deadline": "5s",
            },
        )
        code, headers, body = await self.remote_write(gateway)
        self.assertEqual(code, 429, body)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertIn(b"ingestion rate limit exceeded", body)
        self.assertEqual(len(upstream.received), 2)

    # -- the upstream refuses the data ---------------------------------------------

    async def test_400_is_not_retried(self) -> None:
        upstream, gateway = await self.scripted(answer(400, b"bad labels: duplicate label name"))
        code, _, body = await self.remote_write(gateway)
        self.assertEqual(code, 400, body)
        self.assertEqual(body, b"upstream rejected the data: bad labels: duplicate label name\n")
        self.assertEqual(len(upstream.received), 1)

    async def test_413_from_upstream(self) -> None:
        upstream, gateway = await self.scripted(answer(413, b"request too big"))
        code, _, body = await self.remote_write(gateway)
        self.assertEqual(code, 413, body)
        self.assertEqual(len(upstream.received), 1)

    async def test_upstream_refuses_gateway_credentials(self) -> None:
        """
        A 401 from the upstream is about the gateway's own credentials,
        not the client's token: 502, so the client keeps its data and
        retries.
        """
        upstream, gateway = await self.scripted(answer(401, b"invalid api key"))
        code, _, body = await self.remote_write(gateway)
        self.assertEqual(code, 502, body)
        self.assertIn(b"credentials", body)
        self.assertEqual(len(upstream.received), 1)

    async def test_redirect_not_followed(self) -> None:
        upstream, gateway = await self.scripted(
            answer(302, b"", {"Location": "http://elsewhere.invalid/"})
        )
        code, _, body = await self.remote_write(gateway)
        self.assertEqual(code, 502, body)
        self.assertEqual(len(upstream.received), 1)

    # -- the other routes map the same way ------------------------------------------

    async def test_seal_route_mapping(self) -> None:
        upstream, gateway = await self.scripted(answer(500, b"down"), answer(400, b"out of order"))
        ts = now_ms()
        for expected in (201, 400):
            upstream.script = (
                [answer(500, b"down"), answer(204)]
                if expected == 201
                else [answer(400, b"out of order sample")]
            )
            response = await self.http.post(
                gateway.url + "/publish/metrics",
                data=seal_body(seal_sample_families(ts)),
                headers={"Content-Encoding": ["snappy"], **bearer("tok-1")},
            )
            body = await response.content()
            self.assertEqual(response.code, expected, body)
        self.assertIn(b"out of order sample", body)

    async def test_loki_route_mapping(self) -> None:
        upstream, gateway = await self.scripted(answer(500, b"down"))
        response = await self.http.post(
            gateway.url + "/loki/api/v1/push",
            data=b'{"streams": [{"stream": {"job": "x"}, "values": [["1", "line"]]}]}',
            headers={"Content-Type": ["application/json"], **bearer("tok-1")},
        )
        body = await response.content()
        self.assertEqual(response.code, 502, body)
        self.assertEqual(len(upstream.received), 3)

    async def test_otlp_route_mapping(self) -> None:
        """
        OTLP answers failures with a C{google.rpc.Status}; a retryable one
        keeps its C{Retry-After}.
        """
        upstream, gateway = await self.scripted(
            answer(503, b"overloaded", {"Retry-After": "2"}),
            retry={
                "attempts": 2,
                "initial_backoff": "10ms",
                "max_backoff": "20ms",
                "deadline": "500ms",
            },
        )
        response = await self.http.post(
            gateway.url + "/v1/traces",
            data=ExportTraceServiceRequest().SerializeToString(),
            headers={"Content-Type": ["application/x-protobuf"], **bearer("tok-1")},
        )
        body = await response.content()
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"2"])
        status = status_pb2.Status()
        status.ParseFromString(body)
        self.assertEqual(status.code, 14)  # UNAVAILABLE
        self.assertIn("overloaded", status.message)
        self.assertEqual(len(upstream.received), 1)
