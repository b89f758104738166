"""
The sample generator: its options, what it pushes (on a clock, to a
scripted gateway), and, as a child process, its pushes through a real
sealgw into a real Prometheus in both formats.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
from typing import Any

from twisted.internet import reactor
from twisted.python import threadable
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sealgw.client import PushFormat
from sealgw.generator import add_arguments, parse_labels, read_token
from sealgw.generator._run import Settings, generate
from sealgw.signals import snappy_decompress
from sealgw.signals.seal import decode_delimited, decode_seal_json
from tests.e2e_support import (
    TEST_TIMEOUT,
    http_client,
    prometheus_query,
    require_prometheus,
    start_gateway,
    start_prometheus,
    wait_for_series,
    with_timeout,
)
from tests.subprocesses import ROOT, Child, child_env
from tests.test_client_fakes import FakeReactor, ScriptedGateway, respond, stub


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


class OptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        ns = parse("--token", "t")
        settings = Settings.from_namespace(ns)
        self.assertEqual(settings.format, PushFormat.SEAL)
        self.assertEqual(settings.interval, 5.0)
        self.assertEqual(settings.labels, {"job": "sealgw-generator"})
        self.assertIsNone(settings.count)

    def test_token_file(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("  secret-token\n")
        self.assertEqual(read_token(None, path), "secret-token")
        error = self.assertRaises(SystemExit, read_token, None, path + ".missing")
        self.assertIn("--token-file: No such file or directory", str(error))

    def test_token_from_environment(self) -> None:
        self.patch(os, "environ", {"SEALGW_TOKEN": "from-env"})
        self.assertEqual(read_token(None, None), "from-env")
        self.assertEqual(read_token("given", None), "given")

    def test_no_token(self) -> None:
        self.patch(os, "environ", {})
        error = self.assertRaises(SystemExit, read_token, None, None)
        self.assertIn("no token", str(error))

    def test_token_and_token_file_exclusive(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        self.assertRaises(SystemExit, parse, "--token", "a", "--token-file", "b")

    def test_labels(self) -> None:
        self.assertEqual(parse_labels(["env=dev", "job=other"]), {"job": "other", "env": "dev"})
        self.assertRaises(SystemExit, parse_labels, ["novalue"])

    def test_bad_numbers(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        self.assertRaises(SystemExit, parse, "--interval", "0")
        self.assertRaises(SystemExit, parse, "--count", "0")


class GenerateTests(SynchronousTestCase):
    """
    C{generate} on a clock against a scripted gateway.
    """

    def setUp(self) -> None:
        threadable.registerAsIOThread()

    def settings(self, **kwargs: Any) -> Settings:
        options: dict[str, Any] = {
            "url": "http://gw.example",
            "token": "tok",
            "format": PushFormat.REMOTE_WRITE,
            "interval": 5.0,
            "labels": {"job": "gen"},
            "count": 2,
            "version": "9.9.9",
            **kwargs,
        }
        return Settings(**options)

    def test_remote_write(self) -> None:
        """
        Every C{interval} it pushes seal's sample metrics (the time in ms,
        build info, the request-duration histogram with seal's buckets)
        plus a counter and a summary, and stops after C{count} delivered
        pushes.
        """
        fake = FakeReactor()
        fake.advance(1_700_000_000)
        gateway = ScriptedGateway()
        http = stub(gateway)
        out = io.StringIO()
        d = generate_deferred(fake, self.settings(), out, http)
        http.flush()
        self.assertNoResult(d)
        fake.advance(5.0)
        http.flush()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(len(gateway.seen), 2)
        self.assertEqual(gateway.seen[0].path, b"/api/v1/push")
        self.assertEqual(gateway.seen[0].headers["authorization"], "Bearer tok")
        series = gateway.seen[1].series()
        self.assertEqual(series['current_time{job="gen"}'], 1_700_000_005_000)
        self.assertEqual(series['seal_build_info{job="gen",version="9.9.9"}'], 1.0)
        les = sorted(
            k.split('le="')[1].rstrip('"}')
            for k in series
            if k.startswith("seal_request_duration_bucket")
        )
        self.assertEqual(
            sorted(les), sorted(["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"])
        )
        count = series['seal_request_duration_count{job="gen"}']
        self.assertEqual(series['seal_request_duration_bucket{job="gen",le="+Inf"}'], count)
        self.assertGreaterEqual(count, 2)  # at least one request per push
        requests = sum(v for k, v in series.items() if k.startswith("seal_requests_total"))
        self.assertEqual(requests, count)
        self.assertEqual(series['seal_response_size_bytes_count{job="gen"}'], count)
        self.assertEqual(out.getvalue().count("delivered"), 2)
        self.assertEqual(fake.getDelayedCalls(), [])

    def test_seal(self) -> None:
        fake = FakeReactor()
        gateway = ScriptedGateway(respond(201, body=b"created"))
        http = stub(gateway)
        d = generate_deferred(
            fake, self.settings(format=PushFormat.SEAL, count=1), io.StringIO(), http
        )
        http.flush()
        self.assertEqual(self.successResultOf(d), 0)
        [seen] = gateway.seen
        self.assertEqual(seen.path, b"/publish/metrics")
        labels, buf = decode_seal_json(snappy_decompress(seen.body, 1 << 20))
        self.assertEqual(labels, {"job": "gen"})
        names = {f.name for f in decode_delimited(buf)}
        self.assertEqual(
            names,
            {
                "current_time",
                "seal_build_info",
                "seal_request_duration",
                "seal_requests_total",
                "seal_response_size_bytes",
            },
        )

    def test_keeps_going_through_failures(self) -> None:
        """
        A gateway that fails is retried; only delivered pushes count.
        """
        fake = FakeReactor()
        gateway = ScriptedGateway(respond(503), respond(204))
        http = stub(gateway)
        d = generate_deferred(fake, self.settings(count=1), io.StringIO(), http)
        http.flush()
        self.assertNoResult(d)
        fake.advance(5.0)
        http.flush()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(len(gateway.seen), 2)


def generate_deferred(fake: FakeReactor, settings: Settings, out: io.StringIO, http: Any) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(
        generate(fake, settings, out=out, http=http, rng=random.Random(7))
    )


TOKENS = [{"name": "generator-1", "token": "tok-gen"}]


class GeneratorProcessTests(TestCase):
    """
    C{python -m sealgw.generator} through a real gateway into a real
    Prometheus.
    """

    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        require_prometheus()
        self.http = http_client(self)
        self.prometheus = await start_prometheus(
            self, {"global": {"scrape_interval": "15s"}, "scrape_configs": []}, receiver=True
        )
        route = {"upstream": "prometheus", "path": "/api/v1/write"}
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {"prometheus": {"url": self.prometheus.url}},
                "push": {"remote_write": dict(route), "seal": dict(route)},
            },
            TOKENS,
        )
        self.token_file = os.path.abspath(self.mktemp())
        with open(self.token_file, "w") as f:
            f.write("tok-gen\n")

    async def run_generator(self, *args: str) -> Child:
        child = Child()
        argv = [sys.executable, "-m", "sealgw.generator", "--url", self.gateway.url]
        argv += ["--token-file", self.token_file, "--interval", "0.2", "--count", "2", *args]
        reactor.spawnProcess(child, sys.executable, argv, env=child_env(), path=ROOT)
        code = await with_timeout(child.ended, 60, "the generator to finish")
        self.assertEqual(code, 0, child.err.decode("utf-8", "replace"))
        self.assertEqual(child.out.count(b"delivered"), 2)
        return child

    async def test_seal(self) -> None:
        """
        In seal format every sample metric lands in Prometheus, with the
        gateway's C{node_name}.
        """
        await self.run_generator("--label", "env=e2e")
        [info] = await wait_for_series(self.http, self.prometheus, "seal_build_info")
        self.assertEqual(info["metric"]["node_name"], "generator-1")
        self.assertEqual(info["metric"]["env"], "e2e")
        self.assertEqual(info["metric"]["job"], "sealgw-generator")
        buckets = await wait_for_series(
            self.http, self.prometheus, "seal_request_duration_bucket", count=9
        )
        self.assertIn("+Inf", {b["metric"]["le"] for b in buckets})
        for name in ("current_time", "seal_requests_total", "seal_response_size_bytes_count"):
            self.assertTrue(await prometheus_query(self.http, self.prometheus, name), name)

    async def test_remote_write(self) -> None:
        await self.run_generator("--format", "remote-write")
        [current] = await wait_for_series(self.http, self.prometheus, "current_time")
        self.assertNotIn("node_name", current["metric"])
        self.assertGreater(float(current["value"][1]), 1.6e12)  # milliseconds
        summary = await wait_for_series(self.http, self.prometheus, "seal_response_size_bytes_sum")
        self.assertEqual(summary[0]["metric"]["job"], "sealgw-generator")
