"""
End to end: size limits, bad input and bad credentials are answered by
the gateway itself, with the status a client can act on, without holding
more memory than the limits allow, and without troubling the upstream.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived

from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    HeaderMap,
    PeakMemory,
    ScriptedUpstream,
    bearer,
    hang,
    http_client,
    now_ms,
    raw_http,
    remote_write_body,
    seal_body,
    seal_sample_families,
    serve,
    start_gateway,
    status_of,
    varint,
    with_timeout,
    write_request,
)

MiB = 1024 * 1024
TOKENS = [
    {"name": "node-1", "token": "tok-1", "tenants": ["team-a"]},
    {"name": "multi", "token": "tok-multi", "tenants": ["team-a", "team-b"]},
]
#: The most a rejected request may add to the process's peak memory.
MEMORY_BUDGET = 50 * MiB


def gzip_of_zeros(size: int, prefix: bytes = b"") -> bytes:
    """
    C{prefix} and C{size} zero bytes, gzip-compressed a MiB at a time so
    the test itself never holds the expanded form.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(prefix)]
    chunk = bytes(MiB)
    for _ in range(size // MiB):
        out.append(compressor.compress(chunk))
    out.append(compressor.flush())
    return b"".join(out)


def snappy_bomb(declared: int) -> bytes:
    """
    A tiny snappy block whose header says it expands to C{declared} bytes.
    """
    return varint(declared) + b"\x00\x00\x00\x00"


class LimitsTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        self.upstream = ScriptedUpstream()
        server = serve(self, self.upstream)
        self.gateway = await start_gateway(
            self,
            {
                "limits": {"max_body": "1MiB", "max_decompressed": "10MiB"},
                "tenancy": {"federation": True},
                "upstreams": {
                    "backend": {
                        "url": server.url,
                        "retry": {"attempts": 1},
                        "timeouts": {"response": "30s"},
                    }
                },
                "push": {
                    # The deepest check, so that bad bodies are refused here.
                    "remote_write": {
                        "upstream": "backend",
                        "path": "/api/v1/push",
                        "check": "labels",
                    },
                    "seal": {"upstream": "backend", "path": "/api/v1/push"},
                    "loki": {"upstream": "backend", "path": "/loki/api/v1/push"},
                    "otlp_traces": {"upstream": "backend", "path": "/v1/traces"},
                },
            },
            TOKENS,
        )
        self.http = http_client(self)

    async def post(self, path: str, body: bytes, headers: HeaderMap) -> tuple[int, Any, bytes]:
        response = await self.http.post(self.gateway.url + path, data=body, headers=headers)
        return response.code, response.headers, await response.content()

    def assertWithinMemoryBudget(self, memory: PeakMemory) -> None:
        growth = memory.growth()
        self.assertLess(
            growth,
            MEMORY_BUDGET,
            f"peak memory grew by {growth / MiB:.0f} MiB (reset: {memory.reset})",
        )

    def assertNothingRelayed(self) -> None:
        self.assertEqual(self.upstream.received, [])

    # -- sizes --------------------------------------------------------------------

    async def test_snappy_bomb(self) -> None:
        """
        A 9-byte body declaring 2 GiB is refused on its header alone.
        """
        memory = PeakMemory()
        for path, headers in [
            ("/api/v1/push", {**REMOTE_WRITE_HEADERS, **bearer("tok-1")}),
            ("/publish/metrics", {"Content-Encoding": ["snappy"], **bearer("tok-1")}),
        ]:
            code, _, body = await self.post(path, snappy_bomb(2 * 1024 * MiB), headers)
            self.assertEqual(code, 413, body)
            self.assertIn(b"2147483648 bytes, more than the limit of 10485760", body)
        self.assertWithinMemoryBudget(memory)
        self.assertNothingRelayed()

    async def test_loki_protobuf_snappy_bomb(self) -> None:
        code, _, body = await self.post(
            "/loki/api/v1/push",
            snappy_bomb(2 * 1024 * MiB),
            {"Content-Type": ["application/x-protobuf"], **bearer("tok-1")},
        )
        self.assertEqual(code, 413, body)
        self.assertNothingRelayed()

    async def test_gzip_bomb(self) -> None:
        """
        200 MiB of zeros in a ~200 KiB gzip body: inflated no further than
        the 10 MiB limit, then refused.
        """
        bomb = gzip_of_zeros(
            200 * MiB, prefix=b'{"streams": [{"stream": {"a": "b"}, "values": [["1", "'
        )
        self.assertLess(len(bomb), MiB)
        memory = PeakMemory()
        code, _, body = await self.post(
            "/loki/api/v1/push",
            bomb,
            {"Content-Type": ["application/json"], "Content-Encoding": ["gzip"], **bearer("tok-1")},
        )
        self.assertEqual(code, 413, body)
        self.assertIn(b"gzip: body decompresses to more than the limit of 10485760 bytes", body)
        self.assertWithinMemoryBudget(memory)
        self.assertNothingRelayed()

    async def test_otlp_gzip_bomb(self) -> None:
        memory = PeakMemory()
        code, _, _ = await self.post(
            "/v1/traces",
            gzip_of_zeros(200 * MiB),
            {
                "Content-Type": ["application/x-protobuf"],
                "Content-Encoding": ["gzip"],
                **bearer("tok-1"),
            },
        )
        self.assertEqual(code, 413)
        self.assertWithinMemoryBudget(memory)
        self.assertNothingRelayed()

    async def test_body_over_max_body(self) -> None:
        code, _, body = await self.post(
            "/api/v1/push",
            b"\x00" * (MiB + MiB // 2),
            {**REMOTE_WRITE_HEADERS, **bearer("tok-1")},
        )
        self.assertEqual(code, 413, body)
        self.assertIn(b"body is larger than the limit of 1048576 bytes", body)
        self.assertNothingRelayed()

    async def test_far_oversized_body_is_answered(self) -> None:
        """
        A body far over the limit is still answered 413, so that a sender
        drops it instead of retrying it for ever as it does after a broken
        connection.
        """
        code, _, body = await self.post(
            "/api/v1/push", b"\x00" * (6 * MiB), {**REMOTE_WRITE_HEADERS, **bearer("tok-1")}
        )
        self.assertEqual(code, 413, body)


    async def test_chunked_body_over_max_body(self) -> None:
        """
        Without a Content-Length the limit is counted as the body arrives.
        """
        chunk = b"\x00" * (256 * 1024)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6))
        raw = await raw_http(
            self.gateway.port,
            b"POST /loki/api/v1/push HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
            b"Authorization: Bearer tok-1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n",
        )
        self.assertEqual(status_of(raw), 413, raw[:300])
        self.assertNothingRelayed()

    async def test_seal_push_needs_content_length(self) -> None:
        body = seal_body(seal_sample_families(now_ms()))
        raw = await raw_http(
            self.gateway.port,
            b"POST /publish/metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
            b"Authorization: Bearer tok-1\r\nContent-Encoding: snappy\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
        )
        self.assertEqual(status_of(raw), 411, raw[:300])
        self.assertNothingRelayed()

    # -- bad input ------------------------------------------------------------------

    async def test_remote_write_wrong_content_type(self) -> None:
        code, _, body = await self.post(
            "/api/v1/push",
            remote_write_body(write_request([({"__name__": "up"}, [(1.0, now_ms())])])),
            {**REMOTE_WRITE_HEADERS, "Content-Type": ["application/json"], **bearer("tok-1")},
        )
        self.assertEqual(code, 415, body)
        self.assertIn(b"application/json", body)
        # A message type it does not read is refused the same way, so a
        # sender falls back to one it does.
        code, _, body = await self.post(
            "/api/v1/push",
            remote_write_body(write_request([({"__name__": "up"}, [(1.0, now_ms())])])),
            {
                **REMOTE_WRITE_HEADERS,
                "Content-Type": ["application/x-protobuf;proto=io.prometheus.write.v3.Request"],
                **bearer("tok-1"),
            },
        )
        self.assertEqual(code, 415, body)
        self.assertIn(b"remote write 1.0", body)
        self.assertIn(b"io.prometheus.write.v2.Request", body)
        self.assertNothingRelayed()

    async def test_remote_write_wrong_content_encoding(self) -> None:
        code, _, body = await self.post(
            "/api/v1/push",
            remote_write_body(write_request([({"__name__": "up"}, [(1.0, now_ms())])])),
            {**REMOTE_WRITE_HEADERS, "Content-Encoding": ["gzip"], **bearer("tok-1")},
        )
        self.assertEqual(code, 400, body)
        self.assertIn(b"Content-Encoding must be snappy", body)
        self.assertNothingRelayed()

    async def test_remote_write_malformed_protobuf(self) -> None:
        from sealgw.signals import snappy_compress

        code, _, body = await self.post(
            "/api/v1/push",
            snappy_compress(b"\x0a\xff\xff\xff\xff\x0f garbage"),
            {**REMOTE_WRITE_HEADERS, **bearer("tok-1")},
        )
        self.assertEqual(code, 400, body)
        self.assertIn(b"not a valid WriteRequest protobuf", body)
        self.assertNothingRelayed()

    async def test_remote_write_unsorted_labels(self) -> None:
        request = write_request([({"__name__": "up", "job": "x"}, [(1.0, now_ms())])])
        request.timeseries[0].labels.reverse()
        code, _, body = await self.post(
            "/api/v1/push", remote_write_body(request), {**REMOTE_WRITE_HEADERS, **bearer("tok-1")}
        )
        self.assertEqual(code, 400, body)
        self.assertIn(b"timeseries[0]: labels not sorted by name", body)
        self.assertNothingRelayed()

    async def test_loki_bad_timestamp(self) -> None:
        doc = {"streams": [{"stream": {"job": "x"}, "values": [["yesterday", "a line"]]}]}
        code, _, body = await self.post(
            "/loki/api/v1/push",
            json.dumps(doc).encode("utf-8"),
            {"Content-Type": ["application/json"], **bearer("tok-1")},
        )
        self.assertEqual(code, 400, body)
        self.assertIn(
            b"streams[0].values[0]: timestamp must be a string of decimal nanoseconds", body
        )
        self.assertNothingRelayed()

    async def test_seal_bad_buf(self) -> None:
        from sealgw.signals import snappy_compress

        code, _, body = await self.post(
            "/publish/metrics",
            snappy_compress(b'{"buf": [1, 2, 300]}'),
            {"Content-Encoding": ["snappy"], **bearer("tok-1")},
        )
        self.assertEqual(code, 400, body)
        self.assertIn(b"buf: values must be integers from 0 to 255", body)
        code, _, body = await self.post(
            "/publish/metrics",
            seal_body(seal_sample_families(now_ms())),
            {"Content-Encoding": ["gzip"], **bearer("tok-1")},
        )
        self.assertEqual(code, 400, body)
        self.assertNothingRelayed()

    # -- credentials and tenants -------------------------------------------------------

    async def test_missing_token(self) -> None:
        code, headers, body = await self.post(
            "/api/v1/push", b"", {"Content-Type": ["application/x-protobuf"]}
        )
        self.assertEqual(code, 401, body)
        self.assertEqual(
            headers.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="sealgw", Basic realm="sealgw", charset="UTF-8"'],
        )
        self.assertNothingRelayed()

    async def test_unknown_token(self) -> None:
        code, headers, body = await self.post(
            "/publish/metrics",
            seal_body(seal_sample_families(now_ms())),
            {"Content-Encoding": ["snappy"], **bearer("tok-nobody")},
        )
        self.assertEqual(code, 401, body)
        self.assertEqual(
            headers.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="sealgw", error="invalid_token", Basic realm="sealgw", charset="UTF-8"'],
        )
        self.assertNotIn(b"tok-nobody", body)
        self.assertNothingRelayed()

    async def test_multi_tenant_header_on_push(self) -> None:
        """
        C{a|b} is never accepted on a push, even with federation enabled
        for queries and every named tenant allowed: 400.
        """
        body = remote_write_body(write_request([({"__name__": "up"}, [(1.0, now_ms())])]))
        for token in ("tok-multi", "tok-1"):
            code, _, text = await self.post(
                "/api/v1/push",
                body,
                {**REMOTE_WRITE_HEADERS, **bearer(token, X_Scope_OrgID="team-a|team-b")},
            )
            self.assertEqual(code, 400, text)
            self.assertIn(b"multi-tenant", text)
        self.assertNothingRelayed()

    # -- the client goes away ------------------------------------------------------------

    async def test_client_disconnect_cancels_upstream_request(self) -> None:
        self.upstream.script = [hang()]
        arrived = self.upstream.arrived()
        request = self.http.post(
            self.gateway.url + "/api/v1/push",
            data=remote_write_body(write_request([({"__name__": "up"}, [(1.0, now_ms())])])),
            headers={**REMOTE_WRITE_HEADERS, **bearer("tok-1")},
        )
        await with_timeout(arrived, 10, "the push reaching the upstream")
        request.cancel()
        # The Agent reports its own cancellation as "no response".
        with self.assertRaises((CancelledError, ResponseNeverReceived)):
            await request
        [received] = self.upstream.received
        assert received.lost is not None
        # The gateway drops its upstream request rather than waiting for
        # the 30 s response timeout.
        await with_timeout(received.lost, 5, "the upstream connection to be dropped")
        site = self.gateway.service.sites[0]
        self.assertEqual(site.in_flight, 0)
