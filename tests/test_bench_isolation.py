"""
bench/isolation.py's own parts: the two tenants' data and queries, the
token file and configuration it runs sealgw with (read by sealgw's own
loaders), A's default costly query admitted by the gateway's label
tenancy, the options, wrk's status counts and the report.  No server is
started.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from twisted.trial.unittest import SynchronousTestCase

from bench import isolation, isolation_report, tenants
from bench.clients import Latencies
from bench.load import LoadError, Result, read_statuses
from sealgw.auth._tokenfile import parse_token_file
from sealgw.config import HTTPUpstreamConfig, QueryConfig, load
from sealgw.tenancy import TenantLabel, enforce_query

END_MS = 1_700_000_000_000


class DataTests(SynchronousTestCase):
    def test_series(self) -> None:
        """
        A tenant's series are distinct, carry its label, and share out
        among every job.
        """
        labels = tenants.series_labels("team-a", 40)
        self.assertEqual(len(labels), 40)
        self.assertEqual(len({tuple(sorted(s.items())) for s in labels}), 40)
        self.assertEqual({s[tenants.LABEL] for s in labels}, {"team-a"})
        self.assertEqual(len({s["job"] for s in labels}), tenants.JOBS)
        self.assertEqual({s["instance"] for s in labels}, set(tenants.instances(40)))

    def test_requests_in_time_order(self) -> None:
        """
        One request per point, oldest first, ending at the end given, one
        sample of every tenant's every series in each, labels sorted as
        the protocol wants, counters that never go down.
        """
        requests = list(tenants.data_requests(("team-a", "team-b"), 16, 5, END_MS))
        self.assertEqual(len(requests), 5)
        last: dict[tuple[tuple[str, str], ...], float] = {}
        for point, request in enumerate(requests):
            self.assertEqual(len(request.timeseries), 32)
            expected = END_MS - (4 - point) * tenants.INTERVAL_S * 1000
            for series in request.timeseries:
                names = [label.name for label in series.labels]
                self.assertEqual(names, sorted(names))
                self.assertEqual([s.timestamp for s in series.samples], [expected])
                key = tuple((label.name, label.value) for label in series.labels)
                value = series.samples[0].value
                self.assertGreaterEqual(value, last.get(key, 0.0))
                last[key] = value
        self.assertEqual(len(last), 32)
        self.assertEqual({dict(key)[tenants.LABEL] for key in last}, {"team-a", "team-b"})


class QueryTests(SynchronousTestCase):
    def test_alternation(self) -> None:
        """
        The regular expression is as long as asked at most, and matches
        every instance of the tenant and nothing padded in.
        """
        names = tenants.instances(320)
        regex = tenants.alternation(names, 5000)
        self.assertLessEqual(len(regex), 5000)
        self.assertGreater(len(regex), 5000 - 20)
        compiled = re.compile(regex)
        for name in names:
            self.assertTrue(compiled.fullmatch(name), name)
        self.assertIsNone(compiled.fullmatch("host-9999:9100"))
        self.assertEqual(tenants.alternation(names, 0), ".+")
        self.assertRaises(ValueError, tenants.alternation, names, 100)

    def test_default_queries_admitted(self) -> None:
        """
        The gateway's label tenancy takes A's default costly query and B's
        dashboard query, holding each to its tenant, and A's form fits
        in a read's form body.
        """
        query = tenants.a_query(tenants.A_QUERY, 320, 60_000)
        self.assertNotIn(tenants.REGEX_PLACEHOLDER, query)
        self.assertGreater(len(query), 60_000)
        held = enforce_query(query, TenantLabel(tenants.LABEL, ("team-a",)))
        self.assertIn('tenant="team-a"', held)
        held = enforce_query(tenants.B_QUERY, TenantLabel(tenants.LABEL, ("team-b",)))
        self.assertIn('tenant="team-b"', held)
        form = urlencode(tenants.range_form(query, END_MS / 1000, 3600, 5)).encode()
        self.assertLessEqual(len(form), QueryConfig().max_form_bytes)

    def test_range_form(self) -> None:
        self.assertEqual(
            tenants.range_form("up", 1000.0, 3600, 15),
            {"query": "up", "start": "-2600.000", "end": "1000.000", "step": "15"},
        )
        self.assertEqual(tenants.range_form("up", 5000.0, 60, 0.5)["step"], "0.5")


class GatewayConfigTests(SynchronousTestCase):
    def write(self, tokens_text: str, more: Any = None) -> str:
        directory = Path(self.mktemp())
        directory.mkdir()
        tokens = directory / "tokens.yaml"
        tokens.write_text(tokens_text)
        path = directory / "sealgw.yaml"
        path.write_text(tenants.sealgw_config(
            1234, 1235, "http://127.0.0.1:9", tokens, more,
        ))
        return str(path)

    def test_loads(self) -> None:
        """
        sealgw loads the configuration: one Prometheus kept apart by the
        tenant label, read and written, an admin listener, the token file.
        """
        config = load(self.write("[]\n"))
        upstream = config.upstreams["prometheus"]
        assert isinstance(upstream, HTTPUpstreamConfig)
        self.assertEqual(upstream.tenancy.label, tenants.LABEL)
        assert config.admin is not None and config.query.prometheus is not None
        assert config.push.remote_write is not None and config.auth.token_file is not None
        self.assertEqual(config.admin.endpoint, "tcp:1235:interface=127.0.0.1")
        self.assertEqual(config.query.prometheus.upstream, "prometheus")
        self.assertEqual(config.push.remote_write.route.path, "/api/v1/write")

    def test_more(self) -> None:
        """
        What --gateway-config gives is laid over the generated settings,
        the rest of a section kept.
        """
        config = load(self.write("[]\n", {"upstreams": {"prometheus": {"max_connections": 3}}}))
        upstream = config.upstreams["prometheus"]
        assert isinstance(upstream, HTTPUpstreamConfig)
        self.assertEqual(upstream.max_connections, 3)
        self.assertEqual(upstream.tenancy.label, tenants.LABEL)

    def test_merged(self) -> None:
        base = {"a": {"b": 1, "c": [1]}, "d": 2}
        self.assertEqual(
            tenants.merged(base, {"a": {"c": [2], "e": 3}, "f": 4}),
            {"a": {"b": 1, "c": [2], "e": 3}, "d": 2, "f": 4},
        )
        self.assertEqual(base, {"a": {"b": 1, "c": [1]}, "d": 2})

    def test_token_file(self) -> None:
        """
        A has the limits given, B has none; each its one tenant.
        """
        limits = isolation.parse_limits(isolation.A_LIMITS)
        text = tenants.token_file({"team-a": "a" * 32, "team-b": "b" * 32}, limits)
        entries = {e.name: e for e in parse_token_file(text, "tokens.yaml")}
        a, b = entries["tenant-a"], entries["tenant-b"]
        self.assertEqual((a.tenants, b.tenants), (("team-a",), ("team-b",)))
        assert a.limits is not None and a.limits.reads is not None
        self.assertEqual(a.limits.requests_per_second, 50)
        self.assertEqual(a.limits.reads.requests_per_second, 20)
        self.assertEqual(a.limits.reads.max_concurrent, 4)
        self.assertIsNone(b.limits)
        text = tenants.token_file({"team-a": "a" * 32, "team-b": "b" * 32}, {})
        self.assertIsNone(parse_token_file(text, "t")[0].limits)


class OptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        By default A offers twice its limits: 100 pushes and 40 reads a
        second, a pause of 80 and 200 ms per connection over 8 of each.
        """
        args = isolation.parse_args([])
        push = isolation.offered_rate(args.a_push_rate, args.limits)
        read = isolation.offered_rate(args.a_read_rate, args.limits["reads"])
        self.assertEqual((push, read), (100.0, 40.0))
        self.assertEqual(isolation.pause_ms(push, args.a_push_connections), 80)
        self.assertEqual(isolation.pause_ms(read, args.a_read_connections), 200)
        self.assertEqual(args.gateway, {})

    def test_rates(self) -> None:
        """
        A rate given wins; 0, or no limit to double, is flat out (no pause).
        """
        self.assertEqual(isolation.offered_rate(7.0, {"requests_per_second": 50}), 7.0)
        self.assertEqual(isolation.offered_rate(0.0, {"requests_per_second": 50}), 0.0)
        self.assertEqual(isolation.offered_rate(None, {}), 0.0)
        self.assertEqual(isolation.pause_ms(0.0, 8), 0)
        self.assertEqual(isolation.pause_ms(1e6, 1), 1)

    def test_limits_refused(self) -> None:
        for text, message in [
            ("[1, 2]", "must be a YAML mapping"),
            ("{a: [", "not YAML"),
            ("{reads: 5}", "reads must be a mapping"),
            ("{requests_per_second: fast}", "positive number"),
            ("{reads: {requests_per_second: 0}}", "positive number"),
        ]:
            with self.assertRaises(ValueError) as caught:
                isolation.parse_limits(text)
            self.assertIn(message, str(caught.exception), text)
        self.assertEqual(isolation.parse_limits(""), {})

    def test_refused(self) -> None:
        """
        Settings that cannot be run stop the bench before it starts
        anything.
        """
        for argv in (
            ["--duration", "1"],
            ["--series", "4"],
            ["--a-step", "0"],
            ["--a-regex-bytes", "100"],
            ["--a-limits", "[]"],
            ["--gateway-config", "5"],
        ):
            with open(os.devnull, "w") as devnull:
                self.patch(isolation.sys, "stderr", devnull)
                self.assertRaises(SystemExit, isolation.parse_args, argv)


class StatusTests(SynchronousTestCase):
    def test_read(self) -> None:
        out = 'BENCH-RESULT {}\nBENCH-STATUSES {"429": 7, "200": 3}\n'
        self.assertEqual(read_statuses(out), {200: 3, 429: 7})
        self.assertEqual(list(read_statuses(out)), [200, 429])
        self.assertEqual(read_statuses("BENCH-STATUSES {}\n"), {})
        self.assertEqual(read_statuses("BENCH-RESULT {}\n"), {})
        self.assertRaises(LoadError, read_statuses, "BENCH-STATUSES [1]\n")
        self.assertRaises(LoadError, read_statuses, 'BENCH-STATUSES {"x": 1}\n')


def wrk_result(statuses: dict[int, int], socket_errors: int = 0) -> Result:
    return Result(
        connections=8, duration=10.0, requests=sum(statuses.values()),
        non_2xx=sum(n for s, n in statuses.items() if s >= 400),
        socket_errors=socket_errors, cpu_seconds={}, quantiles_us=(), statuses=statuses,
    )


class ReportTests(SynchronousTestCase):
    def stages(
        self, quiet: Latencies, flooded: Latencies, a_queries: Latencies
    ) -> dict[str, Any]:
        health = Latencies((1.0, 1.0, 2.0), {200: 3})
        return {
            "quiet": {"b": quiet, "cpu": {"sealgw": 0.1}},
            "flood": {
                "b": flooded,
                "a_pushes": wrk_result({204: 500, 429: 300}),
                "a_reads": wrk_result({200: 80, 400: 2, 429: 900, 503: 1, 404: 1}, 3),
                "offered": {"pushes_per_second": 100.0, "reads_per_second": 0.0},
                "cpu": {"sealgw": 0.9},
            },
            "health": {"alone": health, "during": health, "a_queries": a_queries},
        }

    def report(self, stages: dict[str, Any]) -> dict[str, Any]:
        args = isolation.parse_args(["--duration", "10"])
        setup = isolation.Setup(
            url="http://127.0.0.1:1", admin="http://127.0.0.1:2",
            tokens={"team-a": "a", "team-b": "b"}, b_path="/", a_form=b"x" * 70,
            a_form_path="/f", push_body="/b", servers={},
        )
        return isolation_report.report(isolation.settings(args, setup), stages)

    def test_ratios_and_answers(self) -> None:
        """
        B's quantiles under the flood are divided by quiet's and judged
        against the goal; A's answers are counted by class.
        """
        quiet = Latencies(tuple(float(i) for i in range(1, 101)), {200: 100})
        flooded = Latencies(tuple(float(i) * 1.5 for i in range(1, 100)) + (500.0,),
                            {200: 100})
        report = self.report(self.stages(quiet, flooded, Latencies((90.0,), {200: 1})))
        b = report["b_reads"]
        self.assertEqual(b["quiet"]["p50_ms"], 51.0)
        self.assertEqual(b["ratio_to_quiet"]["p50"], 1.5)
        self.assertEqual(b["goal_met"], {"p50": True, "p90": True, "p99": False})
        self.assertEqual(report["a_flood"]["pushes"]["answered"],
                         {"2xx": 500, "400": 0, "429": 300, "5xx": 0, "other": 0,
                          "socket_errors": 0})
        self.assertEqual(report["a_flood"]["reads"]["answered"],
                         {"2xx": 80, "400": 2, "429": 900, "5xx": 1, "other": 1,
                          "socket_errors": 3})
        self.assertEqual(report["a_flood"]["pushes"]["2xx_per_second"], 50.0)
        self.assertEqual(report["a_flood"]["reads"]["offered_per_second"], "flat out")
        self.assertEqual(report["invalid"], [])
        text = isolation_report.table(report)
        self.assertIn("met at p50, p90; NOT met at p99", text)
        self.assertIn("flat out", text)

    def test_failures_reported(self) -> None:
        """
        B not served, or A's costly query never answered in the health
        stage, is said, so that the run's status says so too.
        """
        quiet = Latencies((1.0, 2.0), {200: 2})
        flooded = Latencies((1.0, 2.0), {200: 1, 503: 1})
        report = self.report(self.stages(quiet, flooded, Latencies((5.0,), {400: 1})))
        self.assertEqual(len(report["invalid"]), 2, report["invalid"])
        self.assertIn("1 during the flood", report["invalid"][0])
        self.assertIn("A's costly query", report["invalid"][1])
        isolation_report.table(report)

    def test_no_answers(self) -> None:
        """
        A stage that got no answer at all still makes a report.
        """
        none = Latencies((), {})
        report = self.report(self.stages(none, none, none))
        self.assertEqual(report["b_reads"]["ratio_to_quiet"],
                         {"p50": None, "p90": None, "p99": None})
        self.assertIn("NOT met at p50, p90, p99", isolation_report.table(report))
