"""
End to end: Loki pushes (JSON, gzip JSON, snappy protobuf) through the
gateway to a recording upstream, relayed as they came with the tenant the
gateway chose.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from twisted.trial.unittest import TestCase

from sealgw.signals import snappy_compress, snappy_decompress
from sealgw.signals.proto import logproto_pb2
from tests.e2e_support import (
    TEST_TIMEOUT,
    HeaderMap,
    ScriptedUpstream,
    bearer,
    http_client,
    serve,
    start_gateway,
    unix_ns,
)

TOKENS: list[dict[str, Any]] = [
    {"name": "promtail-1", "token": "tok-promtail", "tenants": ["team-a"]},
    {"name": "anon", "token": "tok-anon"},
]


def push_doc(ts: int) -> dict[str, Any]:
    return {
        "streams": [
            {
                "stream": {"job": "varlogs", "level": "info"},
                "values": [
                    [str(ts), "first line"],
                    [str(ts + 1), "second line", {"trace_id": "abc123"}],
                ],
            },
            {"stream": {"job": "varlogs", "level": "error"}, "values": [[str(ts + 2), "boom"]]},
        ]
    }


def push_protobuf(ts: int) -> bytes:
    request = logproto_pb2.PushRequest()
    stream = request.streams.add(labels='{job="varlogs", level="warn"}')
    entry = stream.entries.add(line=b"disk almost full")
    entry.timestamp.seconds, entry.timestamp.nanos = divmod(ts, 1_000_000_000)
    entry.structured_metadata.add(name="pod", value="web-0")
    return snappy_compress(request.SerializeToString())


class LokiPushTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        self.upstream = ScriptedUpstream()
        server = serve(self, self.upstream)
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {"loki": {"url": server.url + "/prefix"}},
                "push": {"loki": {"upstream": "loki", "path": "/loki/api/v1/push"}},
            },
            TOKENS,
        )
        self.http = http_client(self)

    async def push(self, body: bytes, headers: HeaderMap) -> tuple[int, bytes]:
        response = await self.http.post(
            self.gateway.url + "/loki/api/v1/push", data=body, headers=headers
        )
        return response.code, await response.content()

    async def test_json(self) -> None:
        ts = unix_ns()
        body = json.dumps(push_doc(ts)).encode("utf-8")
        code, text = await self.push(
            body, {"Content-Type": ["application/json"], **bearer("tok-promtail")}
        )
        self.assertEqual((code, text), (204, b""))
        [received] = self.upstream.received
        self.assertEqual(received.path, b"/prefix/loki/api/v1/push")
        self.assertEqual(received.header("Content-Type"), "application/json")
        self.assertIsNone(received.header("Content-Encoding"))
        self.assertEqual(received.header_values("X-Scope-OrgID"), ["team-a"])
        self.assertIsNone(received.header("Authorization"))
        self.assertEqual(json.loads(received.body), push_doc(ts))

    async def test_gzip_json(self) -> None:
        ts = unix_ns()
        body = gzip.compress(json.dumps(push_doc(ts)).encode("utf-8"))
        code, text = await self.push(
            body,
            {
                "Content-Type": ["application/json; charset=utf-8"],
                "Content-Encoding": ["gzip"],
                **bearer("tok-promtail"),
            },
        )
        self.assertEqual((code, text), (204, b""))
        [received] = self.upstream.received
        self.assertEqual(received.header("Content-Encoding"), "gzip")
        self.assertEqual(received.header("Content-Type"), "application/json")
        self.assertEqual(json.loads(gzip.decompress(received.body)), push_doc(ts))
        self.assertEqual(received.header("X-Scope-OrgID"), "team-a")

    async def test_protobuf(self) -> None:
        ts = unix_ns()
        body = push_protobuf(ts)
        code, text = await self.push(
            body, {"Content-Type": ["application/x-protobuf"], **bearer("tok-promtail")}
        )
        self.assertEqual((code, text), (204, b""))
        [received] = self.upstream.received
        self.assertEqual(received.header("Content-Type"), "application/x-protobuf")
        self.assertEqual(received.body, body)
        request = logproto_pb2.PushRequest()
        request.ParseFromString(snappy_decompress(received.body, 1 << 20))
        [stream] = request.streams
        self.assertEqual(stream.labels, '{job="varlogs", level="warn"}')
        [entry] = stream.entries
        self.assertEqual(entry.line, b"disk almost full")
        self.assertEqual(entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos, ts)
        self.assertEqual(received.header("X-Scope-OrgID"), "team-a")

    async def test_encoding_names_relayed_as_loki_spells_them(self) -> None:
        """
        Loki compares C{Content-Encoding} exactly: what the gateway
        accepted is relayed as C{gzip} or nothing, whatever the client's
        spelling; C{snappy} on a protobuf push (some clients send it, and
        Loki takes it) is accepted and dropped.
        """
        ts = unix_ns()
        doc = json.dumps(push_doc(ts)).encode("utf-8")
        cases = [
            (gzip.compress(doc), "application/json", "x-gzip", "gzip"),
            (gzip.compress(doc), "application/json", "GZIP", "gzip"),
            (doc, "application/json", "identity", None),
            (push_protobuf(ts), "application/x-protobuf", "snappy", None),
        ]
        for body, content_type, sent, relayed in cases:
            self.upstream.received.clear()
            code, text = await self.push(
                body,
                {
                    "Content-Type": [content_type],
                    "Content-Encoding": [sent],
                    **bearer("tok-promtail"),
                },
            )
            self.assertEqual((code, text), (204, b""), sent)
            [received] = self.upstream.received
            self.assertEqual(received.header("Content-Encoding"), relayed, sent)
            self.assertEqual(received.body, body)

        # JSON is never snappy-encoded for Loki.
        code, text = await self.push(
            snappy_compress(doc),
            {
                "Content-Type": ["application/json"],
                "Content-Encoding": ["snappy"],
                **bearer("tok-promtail"),
            },
        )
        self.assertEqual(code, 400, text)

    async def test_default_tenant(self) -> None:
        """
        An identity that names no tenant pushes as the default tenant.
        """
        code, _ = await self.push(
            json.dumps(push_doc(unix_ns())).encode("utf-8"),
            {"Content-Type": ["application/json"], **bearer("tok-anon")},
        )
        self.assertEqual(code, 204)
        self.assertEqual(self.upstream.received[0].header_values("X-Scope-OrgID"), ["anonymous"])

    async def test_forged_tenant(self) -> None:
        code, text = await self.push(
            json.dumps(push_doc(unix_ns())).encode("utf-8"),
            {
                "Content-Type": ["application/json"],
                **bearer("tok-promtail", X_Scope_OrgID="team-z"),
            },
        )
        self.assertEqual(code, 403, text)
        self.assertIn(b"may not use tenant 'team-z'", text)
        self.assertEqual(self.upstream.received, [])

    async def test_unsupported_content_type(self) -> None:
        code, text = await self.push(
            b"job=x line", {"Content-Type": ["text/plain"], **bearer("tok-promtail")}
        )
        self.assertEqual(code, 415, text)
        self.assertEqual(self.upstream.received, [])


class CustomTenantHeaderTests(TestCase):
    """
    With C{tenancy.header} set to another name, the gateway reads and
    writes that one; a client's own C{X-Scope-OrgID} is not passed on.
    """

    timeout = TEST_TIMEOUT

    async def test_client_header_not_forwarded(self) -> None:
        upstream = ScriptedUpstream()
        server = serve(self, upstream)
        gateway = await start_gateway(
            self,
            {
                "tenancy": {"header": "X-Tenant"},
                "upstreams": {"loki": {"url": server.url}},
                "push": {"loki": {"upstream": "loki", "path": "/loki/api/v1/push"}},
            },
            TOKENS,
        )
        http = http_client(self)
        response = await http.post(
            gateway.url + "/loki/api/v1/push",
            data=json.dumps(push_doc(unix_ns())).encode("utf-8"),
            headers={
                "Content-Type": ["application/json"],
                **bearer("tok-promtail", X_Scope_OrgID="team-z"),
            },
        )
        self.assertEqual(response.code, 204, await response.content())
        [received] = upstream.received
        self.assertEqual(received.header_values("X-Tenant"), ["team-a"])
        self.assertEqual(received.header_values("X-Scope-OrgID"), [])
