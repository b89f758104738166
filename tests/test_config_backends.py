"""
An upstream's backends in the configuration: C{url} for one, C{urls} for
several, and what is refused.
"""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, HTTPUpstreamConfig, load

TOP = """
listeners:
  - endpoint: tcp:8080
upstreams:
  mimir:
"""
BOTTOM = """
push:
  remote_write:
    upstream: mimir
"""


class BackendURLsTests(SynchronousTestCase):
    def load(self, upstream: str) -> HTTPUpstreamConfig:
        fd, path = tempfile.mkstemp(suffix=".yaml")
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            f.write(TOP + upstream + BOTTOM)
        self.path = path
        found = load(path).upstreams["mimir"]
        assert isinstance(found, HTTPUpstreamConfig)
        return found

    def problems(self, upstream: str) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.load(upstream)
        prefix = self.path + ": "
        return [p[len(prefix):] for p in caught.exception.problems]

    def test_url(self) -> None:
        """
        C{url} alone is one backend: C{urls} holds it.
        """
        upstream = self.load("    url: http://mimir:8080/api/v1/push\n")
        self.assertEqual(upstream.url, "http://mimir:8080/api/v1/push")
        self.assertEqual(upstream.urls, ("http://mimir:8080/api/v1/push",))

    def test_urls(self) -> None:
        """
        C{urls} lists backends; C{url} is the first of them.
        """
        upstream = self.load(
            "    urls:\n"
            "      - http://mimir-1:8080/api/v1/push\n"
            "      - http://mimir-2:8080/api/v1/push\n"
        )
        self.assertEqual(
            upstream.urls,
            ("http://mimir-1:8080/api/v1/push", "http://mimir-2:8080/api/v1/push"),
        )
        self.assertEqual(upstream.url, "http://mimir-1:8080/api/v1/push")

    def test_by_hand(self) -> None:
        """
        Settings built in code fill one key in from the other too.
        """
        self.assertEqual(HTTPUpstreamConfig(name="m", url="http://a:1").urls, ("http://a:1",))
        self.assertEqual(
            HTTPUpstreamConfig(name="m", urls=("http://a:1", "http://b:1")).url, "http://a:1"
        )

    def test_both(self) -> None:
        self.assertEqual(
            self.problems("    url: http://a:1\n    urls: [http://b:1]\n"),
            ["upstreams.mimir.urls: give either url (one backend) or urls (several), not both"],
        )

    def test_neither(self) -> None:
        self.assertEqual(
            self.problems("    timeouts: {connect: 1s}\n"),
            ["upstreams.mimir.url: required: url (one backend) or urls (several)"],
        )
        self.assertEqual(
            self.problems("    urls: []\n"),
            ["upstreams.mimir.url: required: url (one backend) or urls (several)"],
        )

    def test_bad_url(self) -> None:
        """
        Each backend's URL is checked, the problem naming its place.
        """
        problems = self.problems("    urls: [http://a:1, ftp://b]\n")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("urls", problems[0])
        self.assertIn("not an http(s) URL", problems[0])

    def test_different_paths(self) -> None:
        """
        Backends may differ in host and port only: a request's path is
        sent to whichever is picked.
        """
        problems = self.problems("    urls: [http://a:1/prometheus, http://b:1/other]\n")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("differs from 'http://a:1/prometheus' in more than host and port", problems[0])
        problems = self.problems("    urls: [http://a:1, https://b:1]\n")
        self.assertEqual(len(problems), 1, problems)

    def test_twice(self) -> None:
        problems = self.problems("    urls: [http://a:80, http://a]\n")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("'http://a' is listed twice", problems[0])
