"""
An upstream's C{tenancy}: C{header} (the default) or C{{label: NAME}}, how
the file writes it, what it may serve, and how the read path takes it.
"""

from __future__ import annotations

from typing import Any

import attr
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, read
from sealgw.config._model import UpstreamTenancy
from sealgw.http import HTTPClient
from sealgw.query import build_reads
from sealgw.query._pool import ParserPool
from sealgw.query._settings import build_enforcer
from sealgw.tenancy import DEFAULT_BOUNDS

LISTENERS = [{"endpoint": "tcp:0:interface=127.0.0.1"}]


def config(**sections: Any) -> Any:
    return read({"listeners": LISTENERS, **sections})


def problems(**sections: Any) -> list[str]:
    try:
        config(**sections)
    except ConfigError as e:
        return e.problems
    raise AssertionError("no problem found")


def upstream(tenancy: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": "http://prometheus:9090"}
    if tenancy is not None:
        body["tenancy"] = tenancy
    return body


class TenancyKeyTests(SynchronousTestCase):
    def test_forms(self) -> None:
        for written, expected in [
            (None, UpstreamTenancy()),
            ("header", UpstreamTenancy()),
            ({"label": "tenant"}, UpstreamTenancy(label="tenant")),
            ({"label": "team_id"}, UpstreamTenancy(label="team_id")),
        ]:
            parsed = config(upstreams={"p": upstream(written)})
            self.assertEqual(parsed.upstreams["p"].tenancy, expected, written)

    def test_problems(self) -> None:
        for written, message in [
            ("label", "tenancy: expected 'header' or a mapping {label: NAME}, got a string"),
            (["label"], "tenancy: expected 'header' or a mapping {label: NAME}, got a list"),
            ({}, "tenancy.label: required"),
            ({"lable": "x"}, "tenancy.lable: unknown key (did you mean 'label'?)"),
            ({"label": "1x"}, "tenancy.label: '1x' is not a label name"),
            ({"label": "team-id"}, "tenancy.label: 'team-id' is not a label name"),
            ({"label": "__tenant"}, "tenancy.label: names starting with __ are reserved"),
            ({"label": 5}, "tenancy.label: 5 is not a label name"),
        ]:
            [problem] = problems(upstreams={"p": upstream(written)})
            self.assertIn("upstreams.p." + message, problem)

    def test_only_prometheus_reads(self) -> None:
        """
        Only PromQL can be held to a label: Loki and Tempo reads from a
        label upstream are refused when the file is read.
        """
        found = problems(
            upstreams={"p": upstream({"label": "tenant"}), "m": upstream()},
            query={
                "prometheus": {"upstream": "p"},
                "loki": {"upstream": "p"},
                "tempo": {"upstream": "p"},
            },
        )
        self.assertEqual(len(found), 2, found)
        self.assertIn("query.loki.upstream: 'p' keeps tenants apart by label", found[0])
        self.assertIn("only PromQL reads can be held to a label, not loki's", found[0])
        self.assertIn("query.tempo.upstream:", found[1])

    def test_pushes(self) -> None:
        """
        Prometheus pushes (remote write, seal, Pushgateway) get the
        tenant's label set by sealgw; Loki and OTLP carry no such label and
        are refused; label actions may not touch the tenant's label.
        """
        parsed = config(
            upstreams={"p": upstream({"label": "tenant"})},
            push={
                "remote_write": {"upstream": "p"},
                "seal": {"upstream": "p"},
                "pushgateway": {"upstream": "p"},
            },
        )
        self.assertEqual(parsed.upstreams["p"].tenancy.label, "tenant")
        found = problems(
            upstreams={"p": upstream({"label": "tenant"})},
            push={
                "remote_write": {"upstream": "p", "labels": {"remove": ["tenant"]}},
                "seal": {"upstream": "p", "labels": {"add": {"tenant": "x"}}},
                "loki": {"upstream": "p"},
            },
        )
        self.assertEqual(len(found), 3, found)
        self.assertIn("push.remote_write.labels: 'tenant' is the tenant label of upstream 'p'", found[0])
        self.assertIn("push.seal.labels:", found[1])
        self.assertIn("push.loki.upstream: 'p' keeps tenants apart by label", found[2])
        self.assertIn("does not set that label on loki pushes", found[2])

    def test_header_upstream_anywhere(self) -> None:
        parsed = config(
            upstreams={"m": upstream("header")},
            push={"remote_write": {"upstream": "m"}},
            query={"prometheus": {"upstream": "m"}, "loki": {"upstream": "m"}},
        )
        self.assertIsNone(parsed.upstreams["m"].tenancy.label)


class BuildTests(SynchronousTestCase):
    def test_label_reaches_the_read_path(self) -> None:
        parsed = config(
            upstreams={"p": upstream({"label": "tenant"}), "l": {"url": "http://loki:3100"}},
            query={"prometheus": {"upstream": "p"}, "loki": {"upstream": "l"}},
        )
        clients = build_reads(parsed, Clock())
        self.addCleanup(clients.stopService)
        settings = clients.settings
        assert settings.prometheus is not None and settings.loki is not None
        self.assertEqual(settings.prometheus.tenant_label, "tenant")
        self.assertIsNone(settings.loki.tenant_label)

    def test_read_slots(self) -> None:
        """
        Each upstream's read slots are shared by the APIs that name it,
        waited for at most their longest timeout, with a pool as large;
        their state is in /health and /metrics.
        """
        parsed = config(
            upstreams={
                "m": {"url": "http://mimir:8080", "in_flight": {"reads": 12, "tenant_share": 0.25}},
                "t": {"url": "http://tempo:3200"},
            },
            query={
                "prometheus": {"upstream": "m", "timeout": "60s"},
                "loki": {"upstream": "m", "timeout": "90s"},
                "tempo": {"upstream": "t"},
            },
        )
        registry = CollectorRegistry()
        clients = build_reads(parsed, Clock(), registry=registry)
        self.addCleanup(clients.stopService)
        settings = clients.settings
        assert settings.prometheus and settings.loki and settings.tempo
        slots = settings.prometheus.slots
        assert slots is not None
        self.assertIs(settings.loki.slots, slots)
        self.assertIsNot(settings.tempo.slots, slots)
        self.assertEqual(
            (slots.limits.in_flight, slots.limits.per_tenant, slots.limits.wait), (12, 3, 90.0)
        )
        client = settings.prometheus.client
        assert isinstance(client, HTTPClient) and client.pool is not None
        self.assertEqual(client.pool.maxPersistentPerHost, 12)
        self.assertEqual(
            clients.health()["m"],
            {
                "status": "ok",
                "reads_in_flight": {"in_use": 0, "limit": 12, "waiting": 0},
                "backends": [{
                    "backend": "mimir:8080", "host": "mimir", "status": "ok", "in_flight": 0,
                    "consecutive_failures": 0, "set_aside_for": None,
                }],
            },
        )
        self.assertEqual(
            registry.get_sample_value(
                "sealgw_upstream_backend_up",
                {"upstream": "m", "kind": "reads", "backend": "mimir:8080"},
            ),
            1,
        )
        self.assertEqual(
            registry.get_sample_value(
                "sealgw_upstream_slots_limit", {"upstream": "t", "kind": "reads"}
            ),
            64,
        )

class PromQLKeyTests(SynchronousTestCase):
    """
    C{query.promql}: the bounds a label-tenancy query is held to, its
    parse budget, its parser processes and its cache.
    """

    def test_defaults(self) -> None:
        promql = config().query.promql
        self.assertEqual(
            attr.asdict(promql),
            {
                "max_query_bytes": 65536,
                "max_nesting": 256,
                "max_matchers": 1000,
                "max_regex_matchers": 100,
                "max_regex_bytes": 65536,
                "max_regex_size": 262144,
                "parse_timeout": 2.0,
                "processes": 1,
                "cache_entries": 4096,
                "cache_bytes": 16 * 1024 * 1024,
            },
        )
        # The defaults are the tenancy package's own.
        enforcer = build_enforcer(config().query.promql, Clock())
        self.assertEqual(enforcer.bounds, DEFAULT_BOUNDS)

    def test_set(self) -> None:
        promql = config(query={"promql": {
            "max_query_bytes": "16KiB",
            "max_regex_matchers": 20,
            "max_regex_size": 100000,
            "parse_timeout": "500ms",
            "processes": 2,
            "cache_bytes": "1MiB",
        }}).query.promql
        self.assertEqual(promql.max_query_bytes, 16384)
        self.assertEqual(promql.max_regex_matchers, 20)
        self.assertEqual(promql.parse_timeout, 0.5)
        enforcer = build_enforcer(promql, Clock())
        self.assertEqual(enforcer.bounds.max_regex_size, 100000)
        self.assertEqual(enforcer.cache.max_bytes, 1024 * 1024)
        pool = enforcer.parser
        assert isinstance(pool, ParserPool)
        self.assertEqual((pool.processes, pool.budget), (2, 0.5))

    def test_problems(self) -> None:
        for written, message in [
            ({"max_matchers": 0}, "query.promql.max_matchers: must be at least 1"),
            ({"max_regex_matchers": -1}, "query.promql.max_regex_matchers: must be at least 1"),
            ({"max_regex_bytes": "lots"}, "query.promql.max_regex_bytes:"),
            ({"parse_timeout": 0}, "query.promql.parse_timeout:"),
            ({"processes": 0}, "query.promql.processes: must be at least 1"),
            ({"max_regexes": 5}, "query.promql.max_regexes: unknown key"),
        ]:
            found = problems(query={"promql": written})
            self.assertEqual(len(found), 1, found)
            self.assertIn(message, found[0])

    def test_reaches_the_read_path(self) -> None:
        parsed = config(
            upstreams={"p": upstream({"label": "tenant"})},
            query={"prometheus": {"upstream": "p"}, "promql": {"max_nesting": 10}},
        )
        clients = build_reads(parsed, Clock())
        self.addCleanup(clients.stopService)
        assert clients.settings.prometheus is not None
        enforcer = clients.settings.prometheus.enforcer
        self.assertEqual(enforcer.bounds.max_nesting, 10)
        self.assertIs(clients.parser, enforcer.parser)
