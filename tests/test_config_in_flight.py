"""
Tests for an HTTP upstream's C{in_flight} section
(L{sealgw.config.InFlightConfig}).
"""

from __future__ import annotations

from sealgw.config import HTTPUpstreamConfig, InFlightConfig, load
from tests.test_config_structure import MINIMAL, LoadTestCase


class InFlightConfigTests(LoadTestCase):
    def in_flight(self, text: str) -> InFlightConfig:
        upstream = load(self.write(text)).upstreams["mimir"]
        assert isinstance(upstream, HTTPUpstreamConfig)
        return upstream.in_flight

    def test_defaults(self) -> None:
        """
        By default a tenant holds at most half of 256 pushes and 64 reads
        in flight: more than the push benchmarks' 64 connections keep busy.
        """
        self.assertEqual(
            self.in_flight(MINIMAL),
            InFlightConfig(pushes=256, reads=64, tenant_share=0.5, tenant_queue=64, queue=1024),
        )

    def test_given(self) -> None:
        text = self.upstream(
            "in_flight: {pushes: 32, reads: 8, tenant_share: 0.25, tenant_queue: 4, queue: 16}\n"
        )
        self.assertEqual(
            self.in_flight(text),
            InFlightConfig(pushes=32, reads=8, tenant_share=0.25, tenant_queue=4, queue=16),
        )

    def test_whole_share(self) -> None:
        text = self.upstream("in_flight: {tenant_share: 1}\n")
        self.assertEqual(self.in_flight(text).tenant_share, 1.0)

    def test_bad_values(self) -> None:
        text = self.upstream(
            "in_flight: {pushes: 0, reads: many, tenant_share: 1.5, tenant_queue: -1, "
            "queue: 0, burst: 3}\n"
        )
        self.assertEqual(
            sorted(self.problems(text)),
            [
                "upstreams.mimir.in_flight.burst: unknown key",
                "upstreams.mimir.in_flight.pushes: must be at least 1",
                "upstreams.mimir.in_flight.queue: must be at least 1",
                "upstreams.mimir.in_flight.reads: expected a whole number, got a string",
                "upstreams.mimir.in_flight.tenant_queue: must be at least 1",
                "upstreams.mimir.in_flight.tenant_share: must be above 0 and at most 1, not 1.5",
            ],
        )

    def test_zero_share(self) -> None:
        self.assertEqual(
            self.problems(self.upstream("in_flight: {tenant_share: 0}\n")),
            ["upstreams.mimir.in_flight.tenant_share: must be above 0 and at most 1, not 0"],
        )
        self.assertEqual(
            self.problems(self.upstream("in_flight: {tenant_share: yes}\n")),
            ["upstreams.mimir.in_flight.tenant_share: expected a number, got a boolean"],
        )
