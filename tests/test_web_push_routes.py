"""
The push routes in memory: served to L{treq.testing.StubTreq}, relaying to
a L{sealgw.testing.MemoryUpstream}, on a L{Clock}.  Statuses, what reaches
the upstream, label rules and the mapping of upstream outcomes; the real
sockets, Prometheus and clients are the end-to-end tests' business.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

import attr
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import build_gate
from sealgw.config import (
    AuthConfig,
    Config,
    LabelActions,
    PushConfig,
    PushgatewayConfig,
    RemoteWriteConfig,
    RouteConfig,
    SealPushConfig,
    TokenFileConfig,
)
from sealgw.relay import UpstreamRejected, UpstreamUnavailable
from sealgw.signals import (
    _relabel,
    _samplecheck,
    remote_write,
    snappy_compress,
    snappy_decompress,
)
from sealgw.signals.proto.remote_pb2 import WriteRequest
from sealgw.signals.push import Push
from sealgw.testing import MemoryUpstream
from sealgw.web.push import DECODE_IN_THREAD, PushRoutes
from tests.e2e_support import remote_write_body, seal_body, seal_sample_families, write_request

TOKENS = """\
- {name: node-1, token: node-token-0123456789}
- {name: multi, token: multi-token-0123456789, tenants: [team-a, team-b]}
"""
URL = "http://sealgw.test"
RW = {
    "Authorization": "Bearer node-token-0123456789",
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def _series(body: bytes) -> list[dict[str, Any]]:
    return remote_write.to_records(remote_write.decode(snappy_decompress(body, 1 << 24)))


class RoutesTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        tokens = os.path.join(directory, "bearer-tokens.yaml")
        with open(tokens, "w") as f:
            f.write(TOKENS)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.upstream = MemoryUpstream("mimir")
        route = RouteConfig(upstream="mimir", path="/api/v1/push")
        self.config = Config(
            source="test.yaml",
            listeners=(),
            auth=AuthConfig(token_file=TokenFileConfig(path=tokens)),
            push=PushConfig(
                remote_write=RemoteWriteConfig(route=route),
                seal=SealPushConfig(
                    route=route,
                    labels=LabelActions(add={"network": "mainnet"}, remove=frozenset({"drop"})),
                    batch_size=5,
                ),
                loki=RouteConfig(upstream="mimir", path="/loki/api/v1/push"),
                otlp_traces=RouteConfig(upstream="mimir", path="/v1/traces"),
                pushgateway=PushgatewayConfig(route=route),
            ),
        )
        self.threaded: list[Any] = []
        gate = build_gate(self.config, self.clock, CollectorRegistry())
        self.routes = PushRoutes(
            self.config, gate, {"mimir": self.upstream}, self.clock, run_in_thread=self._inline
        )
        self.stub = StubTreq(self.routes.resource())

    def _inline(self, f: Any, *args: Any) -> Deferred[Any]:
        self.threaded.append(f)
        return succeed(f(*args))

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, Any]:
        return self.send("POST", path, body, headers)

    def send(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, Any]:
        response = self.successResultOf(
            self.stub.request(method, URL + path, data=body, headers=headers)
        )
        content = self.successResultOf(self.stub.content(response))
        return response.code, content, response.headers


class RemoteWriteTests(RoutesTestCase):
    def test_relayed_as_it_came(self) -> None:
        body = remote_write_body(write_request([({"__name__": "up", "job": "a"}, [(1.0, 1)])]))
        code, _, _ = self.post("/api/v1/push", body, RW)
        self.assertEqual(code, 204)
        [push] = self.upstream.delivered
        self.assertEqual(
            (push.signal, push.tenant, push.body, push.path, push.content_encoding),
            ("remote_write", "anonymous", body, "/api/v1/push", "snappy"),
        )
        self.assertEqual(push.extra_headers, {"X-Prometheus-Remote-Write-Version": "0.1.0"})
        self.assertEqual(push.received_at, 1_700_000_000)
        # Plain data: it survives being written and read back.
        self.assertEqual(Push.from_bytes(push.to_bytes()), push)

    def test_tenant_from_identity(self) -> None:
        body = remote_write_body(write_request([({"__name__": "up"}, [(1.0, 1)])]))
        headers = dict(RW, Authorization="Bearer multi-token-0123456789")
        code, _, _ = self.post("/api/v1/push", body, dict(headers, **{"X-Scope-OrgID": "team-b"}))
        self.assertEqual(code, 204)
        self.assertEqual(self.upstream.delivered[0].tenant, "team-b")
        code, message, _ = self.post(
            "/api/v1/push", body, dict(headers, **{"X-Scope-OrgID": "team-z"})
        )
        self.assertEqual(code, 403)
        self.assertEqual(len(self.upstream.pushes), 1)

    def test_unauthenticated(self) -> None:
        code, _, headers = self.post("/api/v1/push", b"x", dict(RW, Authorization="Bearer nope"))
        self.assertEqual(code, 401)
        self.assertTrue(headers.getRawHeaders("WWW-Authenticate"))
        self.assertEqual(self.upstream.pushes, [])

    def test_relayed_unchecked_by_default(self) -> None:
        """
        With no label actions and the default C{headers} check, a body is
        not decoded: the upstream's verdict on it is the client's answer.
        """
        garbage = snappy_compress(b"\xff\xff not a WriteRequest")
        self.upstream.play(UpstreamRejected(400, "not a valid protobuf"))
        code, message, _ = self.post("/api/v1/push", garbage, RW)
        self.assertEqual((code, message), (400, b"upstream rejected the data: not a valid protobuf\n"))
        self.assertEqual([p.body for p in self.upstream.pushes], [garbage])
        # Only the declared length is looked at, against max_decompressed.
        huge = b"\xff\xff\xff\xff\x0f" + b"x" * 10
        code, message, _ = self.post("/api/v1/push", huge, RW)
        self.assertEqual(code, 413, message)
        self.assertEqual(len(self.upstream.pushes), 1)

    def test_bad_bodies(self) -> None:
        self.routes.config = attr.evolve(
            self.config,
            push=attr.evolve(
                self.config.push,
                remote_write=attr.evolve(self.config.push.remote_write, check="labels"),
            ),
        )
        good = remote_write_body(write_request([({"__name__": "up"}, [(1.0, 1)])]))
        unsorted = WriteRequest()
        series = unsorted.timeseries.add()
        series.labels.add(name="job", value="a")
        series.labels.add(name="__name__", value="up")
        cases = [
            (b"\xff not snappy", RW, 400),
            (good, dict(RW, **{"Content-Type": "application/json"}), 415),
            (good, dict(RW, **{"Content-Encoding": "gzip"}), 400),
            (remote_write_body(unsorted), RW, 400),
            (good[:-3], RW, 400),
        ]
        for body, headers, status in cases:
            code, message, _ = self.post("/api/v1/push", body, headers)
            self.assertEqual(code, status, message)
            self.assertTrue(message.endswith(b"\n"))
        self.assertEqual(self.upstream.pushes, [])

    def test_upstream_outcomes(self) -> None:
        """
        An upstream 4xx reaches the client as it is (never retried); an
        unavailable upstream is a status the client retries, with the
        upstream's Retry-After.
        """
        body = remote_write_body(write_request([({"__name__": "up"}, [(1.0, 1)])]))
        self.upstream.play(
            UpstreamRejected(400, "out of order sample"),
            UpstreamUnavailable(503, "upstream answered 503", retry_after=2.5),
            UpstreamUnavailable(504, "timed out"),
        )
        code, message, _ = self.post("/api/v1/push", body, RW)
        self.assertEqual((code, message), (400, b"upstream rejected the data: out of order sample\n"))
        code, _, headers = self.post("/api/v1/push", body, RW)
        self.assertEqual((code, headers.getRawHeaders("Retry-After")), (503, ["3"]))
        code, _, _ = self.post("/api/v1/push", body, RW)
        self.assertEqual(code, 504)
        self.assertEqual(self.upstream.delivered, [])

    def test_large_body_in_worker(self) -> None:
        """
        A body past the threshold is decoded by the worker runner, with the
        request's facts read beforehand; a small one is not.
        """
        samples = [(float(i), i) for i in range(40_000)]
        body = remote_write_body(write_request([({"__name__": "big"}, samples)]))
        self.assertGreaterEqual(len(body), DECODE_IN_THREAD)
        self.assertEqual(self.post("/api/v1/push", body, RW)[0], 204)
        self.assertEqual(len(self.threaded), 1)
        small = remote_write_body(write_request([({"__name__": "up"}, [(1.0, 1)])]))
        self.assertEqual(self.post("/api/v1/push", small, RW)[0], 204)
        self.assertEqual(len(self.threaded), 1)

    def test_client_gone_cancels_delivery(self) -> None:
        """
        A push held by the upstream is cancelled when the handler is.
        """
        cancelled: list[bool] = []
        held: Deferred[Any] = Deferred(lambda d: cancelled.append(True))
        self.upstream.play(held)
        body = remote_write_body(write_request([({"__name__": "up"}, [(1.0, 1)])]))
        pending = self.stub.post(URL + "/api/v1/push", data=body, headers=RW)
        self.assertNoResult(pending)
        self.assertEqual(len(self.upstream.pushes), 1)
        for pump in list(self.stub._agent._pumps):  # the connection goes away
            pump.clientIO.loseConnection()
            pump.flush()
        self.assertEqual(cancelled, [True])
        self.assertEqual(self.upstream.delivered, [])
        self.failureResultOf(pending)  # the client saw no answer


class SealTests(RoutesTestCase):
    def headers(self, **more: str) -> dict[str, str]:
        return {
            "Authorization": "Bearer node-token-0123456789",
            "Content-Encoding": "snappy",
            **more,
        }

    def test_converted_labelled_and_batched(self) -> None:
        body = seal_body(seal_sample_families(1_700_000_000_000), labels={"drop": "x", "host": "h"})
        code, message, _ = self.post("/publish/metrics", body, self.headers())
        self.assertEqual((code, message), (201, b"created"))
        series = [s for push in self.upstream.delivered for s in _series(push.body)]
        # 1 + 1 + (9 buckets + sum + count) series, in batches of 5 samples.
        self.assertEqual(len(series), 13)
        self.assertEqual(len(self.upstream.delivered), 3)
        for one in series:
            labels = one["labels"]
            self.assertEqual(
                (labels["network"], labels["node_name"], labels["host"]),
                ("mainnet", "node-1", "h"),
            )
            self.assertNotIn("drop", labels)
        for push in self.upstream.delivered:
            self.assertEqual((push.signal, push.tenant), ("seal", "anonymous"))


class PushgatewayTests(RoutesTestCase):
    """
    What a Pushgateway client sends, answered as a Pushgateway answers it
    (docs/push.rst, "Differences from a Pushgateway").
    """

    TOKEN = {"Authorization": "Bearer node-token-0123456789"}

    def test_curl_form_type(self) -> None:
        """
        The Pushgateway README's C{curl --data-binary} line: the form type
        curl sends is read as the text format.
        """
        code, message, _ = self.send(
            "POST",
            "/metrics/job/some_job",
            b"some_metric 3.14\n",
            {**self.TOKEN, "Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual((code, message), (200, b""))
        [push] = self.upstream.delivered
        [series] = _series(push.body)
        self.assertEqual(
            series,
            {
                "labels": {"__name__": "some_metric", "job": "some_job"},
                "samples": [[1_700_000_000_000, 3.14]],  # the arrival time
            },
        )

    def test_refused_whole(self) -> None:
        """
        Each refusal is a 4xx saying why, after authentication, with
        nothing relayed.
        """
        text = {**self.TOKEN, "Content-Type": "text/plain"}
        for method, path, body, headers, status, words in (
            ("PUT", "/metrics/job/", b"m 1\n", text, 400, b"job name is required"),
            ("POST", "/metrics/job", b"m 1\n", text, 400, b"job name is required"),
            ("PUT", "/metrics/job@base64/", b"m 1\n", text, 400, b"job name is required"),
            ("PUT", "/metrics/job/a%2Fb", b"m 1\n", text, 400, b"%2F"),
            ("PUT", "/metrics/job/j", b"m 1\nm 2\n", text, 400, b"more than once"),
            (
                "PUT",
                "/metrics/job/j",
                b'{"m": 1}',
                {**self.TOKEN, "Content-Type": "application/json"},
                415,
                b"not supported",
            ),
            ("PUT", "/metrics/job/", b"m 1\n", {}, 401, b""),
            ("DELETE", "/metrics/job/", b"", self.TOKEN, 400, b"job name is required"),
            ("DELETE", "/metrics/job/a%2Fb", b"", self.TOKEN, 400, b"%2F"),
            ("DELETE", "/metrics/job/j", b"", {}, 401, b""),
        ):
            code, message, _ = self.send(method, path, body, headers)
            self.assertEqual(code, status, (method, path, message))
            self.assertIn(words, message)
        self.assertEqual(self.upstream.delivered, [])

    def test_delete(self) -> None:
        code, message, _ = self.send("DELETE", "/metrics/job/j/instance/a", b"", self.TOKEN)
        self.assertEqual(code, 202)
        self.assertIn(b"nothing to delete", message)


class LokiAndOTLPTests(RoutesTestCase):
    def test_loki_json_gzip(self) -> None:
        body = gzip.compress(
            json.dumps(
                {"streams": [{"stream": {"job": "x"}, "values": [["1700000000000000000", "hi"]]}]}
            ).encode()
        )
        code, _, _ = self.post(
            "/loki/api/v1/push",
            body,
            {
                "Authorization": "Bearer node-token-0123456789",
                "Content-Type": "application/json",
                "Content-Encoding": "x-gzip",
            },
        )
        self.assertEqual(code, 204)
        [push] = self.upstream.delivered
        self.assertEqual((push.body, push.content_encoding), (body, "gzip"))

    def test_otlp_json_becomes_protobuf(self) -> None:
        document = {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "000102030405060708090a0b0c0d0e0f",
                                    "spanId": "0001020304050607",
                                    "name": "GET /",
                                }
                            ]
                        }
                    ]
                }
            ]
        }
        code, answer, headers = self.post(
            "/v1/traces",
            json.dumps(document).encode(),
            {"Authorization": "Bearer node-token-0123456789", "Content-Type": "application/json"},
        )
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders("Content-Type"), ["application/json"])
        [push] = self.upstream.delivered
        message = ExportTraceServiceRequest.FromString(push.body)
        self.assertEqual(message.resource_spans[0].scope_spans[0].spans[0].name, "GET /")
        self.assertEqual(push.content_type, "application/x-protobuf")

    def test_otlp_refusal_is_a_status_message(self) -> None:
        """
        OTLP says no with a C{google.rpc.Status} in the request's
        encoding: UNAVAILABLE for an upstream that is, INVALID_ARGUMENT
        for a body that is not what it claims.
        """
        self.upstream.play(UpstreamUnavailable(503, "upstream answered 503", retry_after=1))
        request = ExportTraceServiceRequest()
        request.resource_spans.add()
        headers = {
            "Authorization": "Bearer node-token-0123456789",
            "Content-Type": "application/x-protobuf",
        }
        code, answer, answered = self.post("/v1/traces", request.SerializeToString(), headers)
        self.assertEqual((code, answered.getRawHeaders("Retry-After")), (503, ["1"]))
        self.assertEqual(status_pb2.Status.FromString(answer).code, 14)
        code, answer, _ = self.post(
            "/v1/traces",
            request.SerializeToString(),
            dict(headers, **{"Content-Type": "application/json"}),
        )
        self.assertEqual(code, 400)
        self.assertEqual(json.loads(answer)["code"], 3)

    def test_disabled_route(self) -> None:
        code, message, _ = self.post(
            "/v1/logs", b"", {"Authorization": "Bearer node-token-0123456789"}
        )
        self.assertEqual(code, 404)
        self.assertIn(b"not enabled", message)


class RelabelImplementationTests(RoutesTestCase):
    """
    An operator whose install could not build the C relabelling loop is
    told so at start-up, when a route's label actions would use it.
    """

    def routes_with(self, implementation: str, labels: LabelActions) -> list[str]:
        self.patch(_relabel, "IMPLEMENTATION", implementation)
        config = attr.evolve(
            self.config,
            push=attr.evolve(
                self.config.push,
                remote_write=RemoteWriteConfig(route=self.config.push.seal.route, labels=labels),
            ),
        )
        events: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            events.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        try:
            PushRoutes(config, self.routes.gate, {"mimir": self.upstream}, self.clock)
        finally:
            globalLogPublisher.removeObserver(observe)
        return [e for e in events if "label actions" in e]

    def test_python_loop_with_label_actions(self) -> None:
        [line] = self.routes_with("python", LabelActions(add={"tenant": "a"}))
        self.assertIn("C extension sealgw.signals._relabel_c was not built", line)

    def test_sample_limits_on_objects(self) -> None:
        """
        Without the extension the sample limits are judged on protobuf
        objects: said once, when a route judges them (the seal route
        here always does).
        """
        self.patch(_samplecheck, "IMPLEMENTATION", "python")
        events: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            events.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        try:
            PushRoutes(self.config, self.routes.gate, {"mimir": self.upstream}, self.clock)
            config = attr.evolve(self.config, push=PushConfig(loki=self.config.push.loki))
            PushRoutes(config, self.routes.gate, {"mimir": self.upstream}, self.clock)
        finally:
            globalLogPublisher.removeObserver(observe)
        [line] = [e for e in events if "sample limits" in e]
        self.assertIn("sealgw.signals._relabel_c was not built", line)

    def test_quiet_otherwise(self) -> None:
        self.assertEqual(self.routes_with("c", LabelActions(add={"tenant": "a"})), [])
        self.assertEqual(self.routes_with("python", LabelActions()), [])
