"""
Per-tenant upstreams and copies on routes other than remote write, in
memory: the push routes served to L{treq.testing.StubTreq}, relaying to
L{sealgw.testing.MemoryUpstream}s.
"""

from __future__ import annotations

import json
import os
from typing import Any

from google.rpc import status_pb2
from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import build_gate
from sealgw.config import AuthConfig, Config, PushConfig, RouteConfig, TokenFileConfig
from sealgw.relay import UpstreamRejected, UpstreamUnavailable
from sealgw.testing import MemoryUpstream
from sealgw.web.push import PushRoutes

TOKENS = "- {name: multi, token: multi-token-0123456789, tenants: [team-a, team-b]}\n"
URL = "http://sealgw.test"
LOKI = {
    "Authorization": "Bearer multi-token-0123456789",
    "Content-Type": "application/json",
}
STREAM = json.dumps(
    {"streams": [{"stream": {"job": "x"}, "values": [["1700000000000000000", "line"]]}]}
).encode()


class FanOutRoutesTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        tokens = os.path.join(directory, "tokens.yaml")
        with open(tokens, "w") as f:
            f.write(TOKENS)
        self.clock = Clock()
        self.loki = MemoryUpstream("loki")
        self.eu = MemoryUpstream("loki-eu")
        self.archive = MemoryUpstream("archive")
        config = Config(
            source="test.yaml",
            listeners=(),
            auth=AuthConfig(token_file=TokenFileConfig(path=tokens)),
            push=PushConfig(
                loki=RouteConfig(
                    upstream="loki",
                    path="/loki/api/v1/push",
                    tenants={"team-b": ("loki-eu",)},
                    also=("archive",),
                ),
                otlp_traces=RouteConfig(upstream="loki", path="/v1/traces", also=("archive",)),
            ),
        )
        gate = build_gate(config, self.clock, CollectorRegistry())
        upstreams = {"loki": self.loki, "loki-eu": self.eu, "archive": self.archive}
        self.stub = StubTreq(PushRoutes(config, gate, upstreams, self.clock).resource())

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        response = self.successResultOf(
            self.stub.request("POST", URL + path, data=body, headers=headers)
        )
        self.headers = response.headers
        return response.code, self.successResultOf(self.stub.content(response))

    def test_tenant_routed(self) -> None:
        """
        The tenant the request names picks the upstream; every push is
        copied to C{also}, at the route's path, with its tenant.
        """
        code, _ = self.post("/loki/api/v1/push", STREAM, dict(LOKI, **{"X-Scope-OrgID": "team-b"}))
        self.assertEqual(code, 204)
        code, _ = self.post("/loki/api/v1/push", STREAM, dict(LOKI, **{"X-Scope-OrgID": "team-a"}))
        self.assertEqual(code, 204)
        self.assertEqual([p.tenant for p in self.eu.delivered], ["team-b"])
        self.assertEqual([p.tenant for p in self.loki.delivered], ["team-a"])
        self.assertEqual([p.tenant for p in self.archive.delivered], ["team-b", "team-a"])
        self.assertEqual({p.path for p in self.archive.delivered}, {"/loki/api/v1/push"})

    def test_copy_failing(self) -> None:
        """
        A copy that fails fails the push, with the status to retry, even
        when the other copy was refused; a refusal alone is passed on.
        """
        self.eu.play(UpstreamRejected(400, "too old"))
        self.archive.play(UpstreamUnavailable(503, "archive down", retry_after=7.0))
        code, text = self.post(
            "/loki/api/v1/push", STREAM, dict(LOKI, **{"X-Scope-OrgID": "team-b"})
        )
        self.assertEqual(code, 503)
        self.assertIn(b"archive down", text)
        self.assertEqual(self.headers.getRawHeaders(b"retry-after"), [b"7"])
        self.archive.play(UpstreamRejected(422, "no"))
        code, text = self.post(
            "/loki/api/v1/push", STREAM, dict(LOKI, **{"X-Scope-OrgID": "team-a"})
        )
        self.assertEqual(code, 422)
        self.assertEqual(len(self.loki.delivered), 1)

    def test_otlp_copy_failing(self) -> None:
        """
        An OTLP client hears a copy's failure as a C{google.rpc.Status}
        it retries on.
        """
        self.archive.play(UpstreamUnavailable(502, "bad gateway"))
        headers: dict[str, Any] = {
            "Authorization": "Bearer multi-token-0123456789",
            "Content-Type": "application/x-protobuf",
            "X-Scope-OrgID": "team-a",
        }
        code, body = self.post("/v1/traces", b"", headers)
        self.assertEqual(code, 502)
        self.assertEqual(status_pb2.Status.FromString(body).code, 14)
        self.assertEqual(len(self.loki.delivered), 1)
