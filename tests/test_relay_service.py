"""
Tests for building and stopping upstreams, outbound credentials and the
relay's metrics.
"""

from __future__ import annotations

import base64
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sealgw.config import (
    BasicAuthConfig,
    FileUpstreamConfig,
    HTTPUpstreamConfig,
    InFlightConfig,
    RetryConfig,
    Secret,
    UpstreamConfig,
    default_config,
)
from sealgw.credentials import (
    BasicAuthCredentials,
    BearerCredentials,
    ICredentials,
    NoCredentials,
    credentials_for,
)
from sealgw.http import HTTPClient
from sealgw.relay import (
    FileUpstream,
    HTTPUpstream,
    IRelayMetrics,
    IUpstream,
    NoMetrics,
    Push,
    RelayMetrics,
    UpstreamRejected,
    UpstreamsService,
    UpstreamUnavailable,
    build_upstreams,
)
from sealgw.relay._health import UpstreamHealth


class BuildTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        configs: dict[str, UpstreamConfig] = {
            "mimir": HTTPUpstreamConfig(name="mimir", url="http://mimir:9009"),
            "files": FileUpstreamConfig(name="files", directory=self.mktemp()),
        }
        upstreams = build_upstreams(configs, Clock())
        self.assertIsInstance(upstreams["mimir"], HTTPUpstream)
        self.assertIsInstance(upstreams["files"], FileUpstream)
        for name, upstream in upstreams.items():
            self.assertTrue(verifyObject(IUpstream, upstream))
            self.assertEqual(upstream.name, name)

    def test_default_config(self) -> None:
        """
        The built-in default configuration's upstreams build.
        """
        config = default_config(data_dir=self.mktemp(), token="t")
        upstreams = build_upstreams(config.upstreams, Clock(), config.tenancy.header)
        self.assertEqual(list(upstreams), ["files"])

    def test_http_pool(self) -> None:
        """
        The pool keeps as many idle connections as pushes may be in
        flight, or C{max_connections} when that is more.
        """
        for max_connections, pushes, kept in ((7, 4, 7), (7, 20, 20)):
            upstream = HTTPUpstream(
                HTTPUpstreamConfig(
                    name="m", url="http://m", max_connections=max_connections,
                    in_flight=InFlightConfig(pushes=pushes),
                ),
                Clock(),
            )
            assert isinstance(upstream.client, HTTPClient) and upstream.client.pool is not None
            self.assertEqual(upstream.client.pool.maxPersistentPerHost, kept)
            self.assertEqual(upstream.slots.limits.in_flight, pushes)
            self.assertTrue(upstream.client.pool.persistent)
            self.successResultOf(upstream.close())


@implementer(IUpstream)
class Closable:
    def __init__(self, name: str, result: Deferred[None]) -> None:
        self.name = name
        self.result = result
        self.closed = 0

    def deliver(self, push: Push) -> Deferred[Any]:
        raise NotImplementedError()

    def close(self) -> Deferred[None]:
        self.closed += 1
        return self.result


class ServiceTests(SynchronousTestCase):
    def test_mapping_and_service(self) -> None:
        """
        What C{build_upstreams} returns is used as a mapping of name to
        upstream, and as a child service of the daemon.
        """
        upstreams = build_upstreams(
            {"files": FileUpstreamConfig(name="files", directory=self.mktemp())}, Clock()
        )
        self.assertEqual(list(upstreams), ["files"])
        self.assertIs(upstreams["files"], upstreams.upstreams["files"])
        self.assertIn("files", upstreams)
        self.assertEqual(len(upstreams), 1)
        parent = MultiService()
        upstreams.setServiceParent(parent)
        parent.startService()
        self.assertTrue(upstreams.running)
        self.successResultOf(parent.stopService())
        self.assertFalse(upstreams.running)
        self.assertNotEqual(upstreams, build_upstreams({}, Clock()))
        self.assertEqual(len({upstreams}), 1)

    def test_health(self) -> None:
        service = UpstreamsService({
            "files": FileUpstream(
                FileUpstreamConfig(name="files", directory=self.mktemp()), Clock()
            ),
            "other": Closable("other", succeed(None)),
        })
        self.assertEqual(service.health()["files"]["status"], "ok")
        self.assertEqual(service.health()["other"], {"status": "ok"})

    def test_stop_closes_all(self) -> None:
        slow: Deferred[None] = Deferred()
        upstreams = {
            "a": Closable("a", succeed(None)),
            "b": Closable("b", slow),
            "c": Closable("c", fail(RuntimeError("oops"))),
        }
        service = UpstreamsService(upstreams)
        service.startService()
        stopped = service.stopService()
        self.assertEqual([u.closed for u in upstreams.values()], [1, 1, 1])
        self.assertNoResult(stopped)
        slow.callback(None)
        self.successResultOf(stopped)
        self.assertFalse(service.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class HealthTests(SynchronousTestCase):
    def test_degraded_until_success(self) -> None:
        clock = Clock()
        clock.advance(1_700_000_000)
        health = UpstreamHealth(clock)
        self.assertEqual(health.report()["status"], "ok")
        health.watch(fail(UpstreamUnavailable(503, "down"))).addErrback(lambda _: None)
        health.watch(fail(UpstreamUnavailable(504, "slow"))).addErrback(lambda _: None)
        report = health.report()
        self.assertEqual(report["status"], "degraded")
        self.assertEqual(report["consecutive_failures"], 2)
        self.assertEqual(report["last_failure"], "2023-11-14T22:13:20.000Z")
        self.assertIn("slow", report["last_error"])
        # The client leaving says nothing about the upstream.
        health.watch(fail(CancelledError())).addErrback(lambda _: None)
        self.assertEqual(health.report()["consecutive_failures"], 2)
        # An upstream that refuses bad data is working.
        health.watch(fail(UpstreamRejected(400, "bad"))).addErrback(lambda _: None)
        self.assertEqual(health.report()["status"], "ok")
        self.assertEqual(health.report()["last_success"], "2023-11-14T22:13:20.000Z")

    def test_http_upstream_reports(self) -> None:
        class Refusing:
            def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
                return fail(ConnectionRefusedError())

        clock = Clock()
        upstream = HTTPUpstream(
            HTTPUpstreamConfig(name="m", url="http://m", retry=RetryConfig(attempts=1)),
            clock,
            client=HTTPClient(clock, name="m", treq=Refusing()),
        )
        self.failureResultOf(upstream.deliver(Push("loki", "t", b"", "a/b", None)))
        self.assertEqual(upstream.health()["status"], "degraded")


class CredentialsTests(SynchronousTestCase):
    def test_basic(self) -> None:
        creds = BasicAuthCredentials("user", Secret("pä:ss", "test"))
        self.assertTrue(verifyObject(ICredentials, creds))
        value = self.successResultOf(creds.authorization())
        self.assertEqual(value, b"Basic " + base64.b64encode("user:pä:ss".encode()))
        self.assertNotIn("pä:ss", repr(creds))

    def test_bearer(self) -> None:
        creds = BearerCredentials(Secret("abc", "test"))
        self.assertEqual(self.successResultOf(creds.authorization()), b"Bearer abc")
        self.assertNotIn("abc", repr(creds))

    def test_none(self) -> None:
        self.assertIsNone(self.successResultOf(NoCredentials().authorization()))

    def test_from_config(self) -> None:
        basic = HTTPUpstreamConfig(
            name="m", url="http://m", basic_auth=BasicAuthConfig("u", Secret("p", "t"))
        )
        bearer = HTTPUpstreamConfig(name="m", url="http://m", bearer_token=Secret("t", "t"))
        plain = HTTPUpstreamConfig(name="m", url="http://m")
        self.assertIsInstance(credentials_for(basic), BasicAuthCredentials)
        self.assertIsInstance(credentials_for(bearer), BearerCredentials)
        self.assertIsInstance(credentials_for(plain), NoCredentials)


class MetricsTests(SynchronousTestCase):
    def test_relay_metrics(self) -> None:
        registry = CollectorRegistry()
        metrics = RelayMetrics(registry)
        self.assertTrue(verifyObject(IRelayMetrics, metrics))
        self.assertTrue(verifyObject(IRelayMetrics, NoMetrics()))
        metrics.observe("mimir", "204", 0.2)
        metrics.observe("mimir", "204", 40)
        metrics.retried("mimir", "429")
        self.assertEqual(
            registry.get_sample_value(
                "sealgw_upstream_request_duration_seconds_bucket",
                {"upstream": "mimir", "status": "204", "le": "0.25"},
            ),
            1.0,
        )
        self.assertEqual(
            registry.get_sample_value(
                "sealgw_upstream_request_duration_seconds_count",
                {"upstream": "mimir", "status": "204"},
            ),
            2.0,
        )
        self.assertEqual(
            registry.get_sample_value(
                "sealgw_upstream_retries_total", {"upstream": "mimir", "reason": "429"}
            ),
            1.0,
        )


class ErrorTests(SynchronousTestCase):
    def test_attributes(self) -> None:
        rejected = UpstreamRejected(400, "bad")
        self.assertEqual((rejected.status, rejected.reason, rejected.retry_after), (400, "bad", None))
        unavailable = UpstreamUnavailable(429, "slow down", 2.0)
        self.assertEqual(unavailable.retry_after, 2.0)
        self.assertIn("429", str(unavailable))
