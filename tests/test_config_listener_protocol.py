"""
Configuration of a listener's C{protocol}: C{http} by default,
C{otlp-grpc} for the OTLP gRPC services, and the mistakes around it.
"""

from __future__ import annotations

import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, ListenerConfig, load
from sealgw.daemon._summary import Bound, start_summary

BASE = """
listeners:
  - endpoint: tcp:8080
  - endpoint: tcp:4317
    protocol: otlp-grpc
upstreams:
  tempo:
    url: http://tempo:4318
push:
  otlp_traces:
    upstream: tempo
    path: /v1/traces
"""


class ListenerProtocolTests(SynchronousTestCase):
    def load_text(self, text: str) -> object:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        self.path = path
        return load(path)

    def problems(self, text: str) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.load_text(text)
        return [p[len(self.path) + 2:] for p in caught.exception.problems]

    def test_default_and_grpc(self) -> None:
        config = self.load_text(BASE)
        self.assertEqual(
            [listener.protocol for listener in config.listeners],  # type: ignore[attr-defined]
            ["http", "otlp-grpc"],
        )

    def test_unknown_protocol(self) -> None:
        [problem] = self.problems(BASE.replace("protocol: otlp-grpc", "protocol: grpc"))
        self.assertTrue(problem.startswith("listeners[1].protocol: "), problem)
        self.assertIn("otlp-grpc", problem)

    def test_ops_on_grpc(self) -> None:
        text = BASE.replace("    protocol: otlp-grpc", "    protocol: otlp-grpc\n    ops: true")
        self.assertEqual(
            self.problems(text),
            [
                "listeners[1].ops: an otlp-grpc listener serves only the OTLP gRPC services: "
                "put /health, /ready and /metrics on an http listener or the admin listener"
            ],
        )

    def test_admin_is_http(self) -> None:
        text = BASE + "admin:\n  endpoint: tcp:9090\n  protocol: otlp-grpc\n"
        self.assertEqual(
            self.problems(text),
            ["admin.protocol: the admin listener serves HTTP only (/health, /ready, /metrics)"],
        )


class SummaryTests(SynchronousTestCase):
    def test_grpc_listener_named(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(BASE))
        loaded = load(path)
        bound = [
            Bound("listeners[0]", loaded.listeners[0], "127.0.0.1:8080"),
            Bound("listeners[1]", ListenerConfig("tcp:4317", protocol="otlp-grpc"), "0.0.0.0:4317"),
        ]
        summary = start_summary(loaded, bound).splitlines()
        self.assertEqual(
            summary[1],
            "  listening: http://127.0.0.1:8080 (listeners[0]); "
            "http://0.0.0.0:4317 (listeners[1], every interface, OTLP over gRPC only)",
        )
