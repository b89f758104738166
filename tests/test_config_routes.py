"""
Push routes' per-tenant upstreams, copies (C{tenants}, C{also}) and remote
write's C{tenant_from_label}: their shapes, defaults and every problem's
message.
"""

from __future__ import annotations

import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, RouteConfig, TenantFromLabel, load

BASE = """
listeners:
  - endpoint: tcp:8080
upstreams:
  mimir: {url: "http://mimir:8080"}
  mimir-eu: {url: "http://mimir-eu:8080"}
  azure: {url: "http://azure:8080"}
  prometheus: {url: "http://prometheus:9090", tenancy: {label: tenant}}
  prometheus-b: {url: "http://prometheus-b:9090", tenancy: {label: team}}
push:
"""


class RouteConfigTests(SynchronousTestCase):
    def write(self, push: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(BASE + textwrap.indent(textwrap.dedent(push), "  "))
        return path

    def problems(self, push: str) -> list[str]:
        path = self.write(push)
        with self.assertRaises(ConfigError) as caught:
            load(path)
        return [p[len(path) + 2:] for p in caught.exception.problems]

    def test_defaults(self) -> None:
        """
        A route names one upstream, no tenant of its own and no copies;
        remote write takes its tenant from the request.
        """
        config = load(self.write("remote_write: {upstream: mimir}\nloki: {upstream: mimir}\n"))
        rw = config.push.remote_write
        assert rw is not None
        self.assertEqual(rw.route, RouteConfig(upstream="mimir"))
        self.assertEqual(rw.route.tenants, {})
        self.assertEqual(rw.route.also, ())
        self.assertIsNone(rw.tenant_from_label)
        self.assertEqual(rw.route.targets("team-a"), ("mimir",))

    def test_tenants_and_also(self) -> None:
        """
        A tenant names one upstream or a list; C{also} adds a copy of every
        push; each upstream is named once in a push's targets.
        """
        config = load(
            self.write(
                """
                remote_write:
                  upstream: mimir
                  tenants: {team-eu: mimir-eu, moving: [mimir, mimir-eu]}
                  also: [azure]
                otlp_traces: {upstream: mimir, also: [azure, mimir-eu]}
                """
            )
        )
        rw = config.push.remote_write
        assert rw is not None
        route = rw.route
        self.assertEqual(route.tenants, {"team-eu": ("mimir-eu",), "moving": ("mimir", "mimir-eu")})
        self.assertEqual(route.targets("team-a"), ("mimir", "azure"))
        self.assertEqual(route.targets("team-eu"), ("mimir-eu", "azure"))
        self.assertEqual(route.targets("moving"), ("mimir", "mimir-eu", "azure"))
        self.assertEqual(route.every_upstream(), ("mimir", "mimir-eu", "azure"))
        otlp = config.push.otlp_traces
        assert otlp is not None
        self.assertEqual(otlp.targets("x"), ("mimir", "azure", "mimir-eu"))

    def test_also_repeating_upstream(self) -> None:
        """
        An upstream in C{also} that is the push's own gets one copy.
        """
        config = load(self.write("loki: {upstream: mimir, also: [mimir, azure]}\n"))
        assert config.push.loki is not None
        self.assertEqual(config.push.loki.targets("t"), ("mimir", "azure"))

    def test_unknown_upstreams(self) -> None:
        self.assertEqual(
            self.problems(
                "remote_write: {upstream: mimir, tenants: {a: nowhere}, also: [gone]}\n"
            ),
            [
                "push.remote_write.tenants.a: no upstream named 'nowhere' "
                "(azure, mimir, mimir-eu, prometheus, prometheus-b)",
                "push.remote_write.also: no upstream named 'gone' "
                "(azure, mimir, mimir-eu, prometheus, prometheus-b)",
            ],
        )

    def test_bad_shapes(self) -> None:
        self.assertEqual(
            self.problems(
                "remote_write: {upstream: mimir, tenants: {'a|b': mimir, c: [], "
                "d: [mimir, mimir], e: {x: 1}}, also: [mimir, '']}\n"
            ),
            [
                "push.remote_write.tenants.a|b: a multi-tenant id (a|b) is not allowed here",
                "push.remote_write.tenants.c: name at least one upstream",
                "push.remote_write.tenants.d[1]: 'mimir' is named twice",
                "push.remote_write.tenants.e: expected an upstream's name or a list of "
                "them, got a mapping",
                "push.remote_write.also[1]: an upstream's name must not be empty",
            ],
        )

    def test_tenancy_must_agree(self) -> None:
        """
        One encoding of a push goes to every upstream of its route: they
        must all keep tenants apart the same way.
        """
        [problem] = self.problems("remote_write: {upstream: mimir, also: [prometheus]}\n")
        self.assertEqual(
            problem,
            "push.remote_write: the upstreams of one route must keep tenants apart the same "
            "way, and these do not: 'mimir' by the tenant header, 'prometheus' by label "
            "'tenant'",
        )
        [problem] = self.problems(
            "seal: {upstream: prometheus, tenants: {x: prometheus-b}}\n"
        )
        self.assertIn("'prometheus' by label 'tenant', 'prometheus-b' by label 'team'", problem)

    def test_label_tenancy_only_for_series(self) -> None:
        """
        A Loki or OTLP route may not copy to a store that keeps tenants
        apart by label, whichever key names it.
        """
        problems = self.problems("loki: {upstream: mimir, also: [prometheus]}\n")
        self.assertTrue(problems[0].startswith("push.loki.also: 'prometheus' keeps"), problems)
        problems = self.problems("loki: {upstream: mimir, tenants: {a: prometheus}}\n")
        self.assertIn(
            "push.loki.tenants.a: 'prometheus' keeps tenants apart by label (tenancy: "
            "{label: ...}), and sealgw does not set that label on loki pushes: give them "
            "an upstream with tenancy: header",
            problems,
        )

    def test_tenant_from_label(self) -> None:
        config = load(self.write("remote_write: {upstream: mimir, tenant_from_label: team}\n"))
        assert config.push.remote_write is not None
        self.assertEqual(
            config.push.remote_write.tenant_from_label, TenantFromLabel(label="team", keep=True)
        )
        config = load(
            self.write(
                "remote_write: {upstream: mimir, tenant_from_label: "
                "{label: __tenant__, keep: false}}\n"
            )
        )
        assert config.push.remote_write is not None
        self.assertEqual(
            config.push.remote_write.tenant_from_label,
            TenantFromLabel(label="__tenant__", keep=False),
        )

    def test_tenant_from_label_problems(self) -> None:
        self.assertEqual(
            self.problems("remote_write: {upstream: mimir, tenant_from_label: 1team}\n"),
            [
                "push.remote_write.tenant_from_label: '1team' is not a label name (letters, "
                "digits and _, not starting with a digit)"
            ],
        )
        self.assertEqual(
            self.problems("remote_write: {upstream: mimir, tenant_from_label: __tenant__}\n"),
            [
                "push.remote_write.tenant_from_label: '__tenant__': names starting with __ "
                "are reserved by Prometheus; give keep: false to remove it before relaying"
            ],
        )
        self.assertEqual(
            self.problems(
                "remote_write: {upstream: mimir, tenant_from_label: {keep: false}}\n"
            ),
            ["push.remote_write.tenant_from_label.label: required"],
        )
        self.assertEqual(
            self.problems(
                "remote_write: {upstream: mimir, tenant_from_label: {label: t, keep: 1}}\n"
            ),
            ["push.remote_write.tenant_from_label.keep: expected true or false, got a number"],
        )
