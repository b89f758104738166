"""
An HTTP upstream's C{remote_write_version}: which remote-write protocol it
reads, so that remote write 2.0 requests are relayed to it as they came
(2) or converted to 1.0 (1, the default).
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, HTTPUpstreamConfig, load

BASE = """\
listeners:
  - endpoint: tcp:8080
upstreams:
  store:
    url: http://store:9090
{extra}
push:
  remote_write:
    upstream: store
"""


class RemoteWriteVersionTests(SynchronousTestCase):
    def load(self, extra: str) -> HTTPUpstreamConfig:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(BASE.format(extra=extra))
        upstream = load(path).upstreams["store"]
        assert isinstance(upstream, HTTPUpstreamConfig)
        return upstream

    def test_default_converts(self) -> None:
        self.assertEqual(self.load("").remote_write_version, 1)

    def test_set(self) -> None:
        self.assertEqual(self.load("    remote_write_version: 2").remote_write_version, 2)
        self.assertEqual(self.load("    remote_write_version: 1").remote_write_version, 1)

    def test_refused(self) -> None:
        for bad in ("3", "'2'", "true", "2.0", "v2"):
            with self.assertRaises(ConfigError, msg=bad) as caught:
                self.load(f"    remote_write_version: {bad}")
            [problem] = caught.exception.problems
            self.assertIn("upstreams.store.remote_write_version", problem)
            self.assertIn("is not 1 or 2", problem)
