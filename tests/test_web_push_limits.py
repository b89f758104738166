"""
The sample limits on the push routes, in memory (L{treq.testing.StubTreq},
a L{sealgw.testing.MemoryUpstream}, a L{Clock}): what the client hears,
what reaches the upstream, the per-identity limits from the token file
and C{auth.default_limits}, the metrics and the rate-limited log.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import build_gate
from sealgw.config import (
    AuthConfig,
    Config,
    HTTPUpstreamConfig,
    PushConfig,
    PushgatewayConfig,
    RateLimitConfig,
    RemoteWriteConfig,
    RouteConfig,
    SampleLimitsConfig,
    SealPushConfig,
    TokenFileConfig,
)
from sealgw.config._model import UpstreamTenancy
from sealgw.relay import UpstreamRejected, UpstreamUnavailable
from sealgw.signals import remote_write, snappy_decompress
from sealgw.testing import MemoryUpstream
from sealgw.web._metrics import GatewayMetrics
from sealgw.web.push import DECODE_IN_THREAD, PushRoutes
from tests.e2e_support import remote_write_body, seal_body, seal_sample_families, write_request

TOKENS = """\
- {name: node-1, token: node-token-0123456789, tenants: [team-a]}
- name: strict
  token: strict-token-0123456789
  tenants: [team-b]
  limits: {samples: {max_labels_per_series: 2, max_future: 1m}}
"""
URL = "http://sealgw.test"
NOW = 1_700_000_000
NOW_MS = NOW * 1000
FAR = NOW_MS + 10 * 365 * 86_400_000


def rw_headers(token: str = "node-token-0123456789") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
    }


def _names(body: bytes) -> list[str]:
    request = remote_write.decode(snappy_decompress(body, 1 << 24))
    return [
        next(label.value for label in one.labels if label.name == "__name__")
        for one in request.timeseries
    ]


class LimitRoutesTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        tokens = os.path.join(directory, "bearer-tokens.yaml")
        with open(tokens, "w") as f:
            f.write(TOKENS)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.upstream = MemoryUpstream("prometheus")
        route = RouteConfig(upstream="prometheus", path="/api/v1/write")
        self.config = Config(
            source="test.yaml",
            listeners=(),
            upstreams={
                "prometheus": HTTPUpstreamConfig(
                    name="prometheus",
                    url="http://prometheus.test",
                    tenancy=UpstreamTenancy(label="tenant"),
                )
            },
            auth=AuthConfig(
                token_file=TokenFileConfig(path=tokens),
                default_limits=RateLimitConfig(
                    samples=SampleLimitsConfig(max_label_value_length=100)
                ),
            ),
            push=PushConfig(
                remote_write=RemoteWriteConfig(route=route),
                seal=SealPushConfig(route=route),
                pushgateway=PushgatewayConfig(route=route),
            ),
        )
        self.metrics = GatewayMetrics(CollectorRegistry())
        gate = build_gate(self.config, self.clock, CollectorRegistry())
        self.routes = PushRoutes(
            self.config, gate, {"prometheus": self.upstream}, self.clock, metrics=self.metrics
        )
        self.stub = StubTreq(self.routes.resource())
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if "sample limit" in (event.get("log_format") or ""):
                self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        response = self.successResultOf(
            self.stub.request(method, URL + path, data=body, headers=headers)
        )
        content = self.successResultOf(self.stub.content(response))
        return response.code, content.decode("utf-8")

    def refused(self, route: str, reason: str) -> tuple[float, float]:
        registry = self.metrics.registry
        labels = {"route": route, "reason": reason}
        return (
            registry.get_sample_value("sealgw_series_refused_total", labels) or 0.0,
            registry.get_sample_value("sealgw_pushes_refused_total", labels) or 0.0,
        )

    def test_valid_part_relayed_then_400(self) -> None:
        """
        A far-future sample among good ones: the good ones land, then the
        client hears 400 naming what was dropped.
        """
        body = remote_write_body(
            write_request(
                [({"__name__": "good"}, [(1.0, NOW_MS)]), ({"__name__": "evil"}, [(1.0, FAR)])]
            )
        )
        code, message = self.send("POST", "/api/v1/push", body, rw_headers())
        self.assertEqual(code, 400)
        self.assertTrue(
            message.startswith(
                "remote write: 1 of 2 series refused and not relayed, the other 1 accepted "
                "(1 by max_future); the first: timeseries[1] {__name__=\"evil\"}: a sample at "
                "2033-11-11T22:13:20Z"
            ),
            message,
        )
        [push] = self.upstream.delivered
        self.assertEqual(_names(push.body), ["good"])
        self.assertEqual(self.refused("remote_write", "max_future"), (1.0, 1.0))

    def test_upstream_failure_wins(self) -> None:
        """
        When the valid part cannot be delivered, the upstream's status is
        the answer: the client retries the whole push.
        """
        body = remote_write_body(
            write_request(
                [({"__name__": "good"}, [(1.0, NOW_MS)]), ({"__name__": "evil"}, [(1.0, FAR)])]
            )
        )
        self.upstream.play(UpstreamUnavailable(503, "upstream answered 503", retry_after=2.0))
        code, message = self.send("POST", "/api/v1/push", body, rw_headers())
        self.assertEqual(code, 503, message)
        self.upstream.play(UpstreamRejected(400, "out of order sample"))
        code, message = self.send("POST", "/api/v1/push", body, rw_headers())
        self.assertEqual((code, message), (400, "upstream rejected the data: out of order sample\n"))
        self.assertEqual(self.upstream.delivered, [])

    def test_nothing_valid(self) -> None:
        body = remote_write_body(write_request([({"__name__": "evil"}, [(1.0, FAR)])]))
        code, message = self.send("POST", "/api/v1/push", body, rw_headers())
        self.assertEqual(code, 400)
        self.assertIn("all 1 series refused, nothing relayed (1 by max_future)", message)
        self.assertEqual(self.upstream.pushes, [])
        self.assertEqual(self.refused("remote_write", "max_future"), (1.0, 1.0))

    def test_limits_per_identity(self) -> None:
        """
        C{auth.default_limits.samples} for an identity with none of its
        own; the token file's C{limits.samples} replace them as a whole.
        """
        labels = {"__name__": "m", "a": "1", "b": "2"}
        long_value = {"__name__": "m", "v": "x" * 101}
        soon = NOW_MS + 120_000
        body = remote_write_body(
            write_request(
                [(labels, [(1.0, NOW_MS)]), (long_value, [(1.0, NOW_MS)]), ({"__name__": "m"}, [(1.0, soon)])]
            )
        )
        code, message = self.send("POST", "/api/v1/push", body, rw_headers())
        self.assertEqual(code, 400)
        self.assertIn("(1 by max_label_value_length)", message)
        self.assertIn("longer than max_label_value_length (100)", message)
        code, message = self.send("POST", "/api/v1/push", body, rw_headers("strict-token-0123456789"))
        self.assertEqual(code, 400)
        self.assertIn("2 of 3 series refused", message)
        self.assertIn("(1 by max_labels_per_series, 1 by max_future)", message)
        self.assertIn("3 labels, more than max_labels_per_series (2)", message)
        first, second = self.upstream.delivered
        self.assertEqual(len(remote_write.decode(snappy_decompress(first.body, 1 << 20)).timeseries), 2)
        self.assertEqual(_names(second.body), ["m"])

    def test_seal_reserved_label(self) -> None:
        body = seal_body(seal_sample_families(NOW_MS), labels={"__tenant__": "team-b"})
        headers = {"Authorization": "Bearer node-token-0123456789", "Content-Encoding": "snappy"}
        code, message = self.send("POST", "/publish/metrics", body, headers)
        self.assertEqual(code, 400)
        self.assertIn("all 13 series refused, nothing relayed (13 by reserved_label_name)", message)
        self.assertEqual(self.upstream.pushes, [])
        self.assertEqual(self.refused("seal", "reserved_label_name"), (13.0, 1.0))

    def test_pushgateway(self) -> None:
        """
        A C{NaN} timestamp is a 400, not a 500; a reserved grouping key
        is refused before the body is read.
        """
        headers = {"Authorization": "Bearer node-token-0123456789"}
        code, message = self.send("PUT", "/metrics/job/j", b"m 1 NaN\n", headers)
        self.assertEqual(code, 400)
        self.assertIn("timestamp nan is not a time", message)
        code, message = self.send("PUT", "/metrics/job/j/__tenant__/x", b"m 1\n", headers)
        self.assertEqual(code, 400)
        self.assertIn("'__tenant__' in the path is reserved", message)
        self.assertEqual(self.upstream.pushes, [])
        self.assertEqual(self.refused("pushgateway", "invalid_timestamp"), (0.0, 1.0))
        self.assertEqual(self.refused("pushgateway", "reserved_label_name"), (0.0, 1.0))
        code, _ = self.send("PUT", "/metrics/job/j", b"m 1\n", headers)
        self.assertEqual(code, 200)

    def test_large_body_in_worker(self) -> None:
        """
        A body decoded in a worker thread is judged the same way, its
        refusal carried back with what the metrics count.
        """
        threaded: list[Any] = []

        def inline(f: Any, *args: Any) -> Any:
            threaded.append(f)
            return succeed(f(*args))

        self.routes._run_in_thread = inline
        samples = [(float(i), NOW_MS - i) for i in range(40_000)]
        body = remote_write_body(
            write_request([({"__name__": "big"}, samples), ({"__name__": "e"}, [(1.0, FAR)])])
        )
        self.assertGreaterEqual(len(body), DECODE_IN_THREAD)
        code, message = self.send("POST", "/api/v1/push", body, rw_headers())
        self.assertEqual((code, len(threaded)), (400, 1), message)
        [push] = self.upstream.delivered
        self.assertEqual(_names(push.body), ["big"])
        only_bad = remote_write_body(
            write_request(
                [({"__name__": "e", "id": os.urandom(12).hex()}, [(1.0, FAR)]) for _ in range(20_000)]
            )
        )
        self.assertGreaterEqual(len(only_bad), DECODE_IN_THREAD)
        code, message = self.send("POST", "/api/v1/push", only_bad, rw_headers())
        self.assertEqual((code, len(threaded)), (400, 2), message)
        self.assertIn("all 20000 series refused", message)
        self.assertEqual(self.refused("remote_write", "max_future"), (20_001.0, 2.0))

    def test_logged_once_per_interval(self) -> None:
        """
        One line a refused push, and no more than one per identity and
        limit a minute, saying how many were not logged; never the token.
        """
        body = remote_write_body(write_request([({"__name__": "evil"}, [(1.0, FAR)])]))
        for _ in range(5):
            self.assertEqual(self.send("POST", "/api/v1/push", body, rw_headers())[0], 400)
        self.assertEqual(len(self.logged), 1)
        self.assertIn("(max_future): identity node-1, tenant team-a, route remote_write", self.logged[0])
        # Another limit, or another identity, has a line of its own.
        pg = {"Authorization": "Bearer node-token-0123456789"}
        self.send("PUT", "/metrics/job/j", b"m 1 NaN\n", pg)
        self.assertEqual(len(self.logged), 2)
        self.clock.advance(60)
        self.assertEqual(self.send("POST", "/api/v1/push", body, rw_headers())[0], 400)
        self.assertEqual(len(self.logged), 3)
        self.assertIn("(4 more pushes refused for it since the last line)", self.logged[2])
        for line in self.logged:
            self.assertNotIn("node-token", line)
        self.assertEqual(self.refused("remote_write", "max_future"), (6.0, 6.0))
