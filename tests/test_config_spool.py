"""
An upstream's C{spool} section: its bounds (memory, dead letters), when
another worker's folder is taken over, and the drain on stop.
"""

from __future__ import annotations

import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, HTTPUpstreamConfig, load
from sealgw.config._spool import SpoolConfig

CONFIG = """
listeners:
  - endpoint: tcp:8080
upstreams:
  mimir:
    url: http://mimir:8080/api/v1/push
    spool: {spool}
push:
  remote_write:
    upstream: mimir
"""


class SpoolSectionTests(SynchronousTestCase):
    def load(self, spool: str) -> SpoolConfig:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(CONFIG).format(spool=spool))
        upstream = load(path).upstreams["mimir"]
        assert isinstance(upstream, HTTPUpstreamConfig)
        assert upstream.spool is not None
        return upstream.spool

    def problems(self, spool: str) -> list[str]:
        error = self.assertRaises(ConfigError, self.load, spool)
        return [p.split(": ", 1)[1] for p in error.problems]

    def test_defaults(self) -> None:
        spool = self.load("{directory: /var/lib/sealgw/spool}")
        self.assertEqual(spool.max_memory, 64 * 1024 * 1024)
        self.assertEqual(spool.dead_letters_max_size, 64 * 1024 * 1024)
        self.assertEqual(spool.takeover_after, 120.0)
        self.assertEqual(spool.drain_grace, 5.0)

    def test_units(self) -> None:
        spool = self.load(
            "{directory: /s, max_memory: 8MiB, dead_letters_max_size: 1GiB, "
            "takeover_after: 10m, drain_grace: 30s}"
        )
        self.assertEqual(spool.max_memory, 8 * 1024 * 1024)
        self.assertEqual(spool.dead_letters_max_size, 1024**3)
        self.assertEqual(spool.takeover_after, 600.0)
        self.assertEqual(spool.drain_grace, 30.0)

    def test_zero_turns_the_waits_off(self) -> None:
        """
        takeover_after: 0 takes a free folder at once (one worker, nothing
        restarts); drain_grace: 0 stops delivering at once.
        """
        spool = self.load("{directory: /s, takeover_after: 0s, drain_grace: 0}")
        self.assertEqual((spool.takeover_after, spool.drain_grace), (0.0, 0.0))

    def test_problems(self) -> None:
        problems = self.problems(
            "{directory: /s, max_memory: 0, dead_letters_max_size: lots, "
            "takeover_after: -1s, drain_grace: soon}"
        )
        self.assertIn("upstreams.mimir.spool.max_memory: must be larger than zero", problems)
        self.assertTrue(
            any(p.startswith("upstreams.mimir.spool.dead_letters_max_size: ") for p in problems),
            problems,
        )
        self.assertTrue(
            any(p.startswith("upstreams.mimir.spool.takeover_after: ") for p in problems),
            problems,
        )
        self.assertIn(
            "upstreams.mimir.spool.drain_grace: 'soon' is not a duration "
            "(write it like 30s, 5m or 250ms)",
            problems,
        )
        self.assertEqual(len(problems), 4, problems)
