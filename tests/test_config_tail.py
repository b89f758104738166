"""
C{query.loki.tail}: how the file writes a Loki live tail's bounds, what
it refuses, and how the read path takes them.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, TailConfig, read
from sealgw.query import build_reads
from tests.subprocesses import child_env

LISTENERS = [{"endpoint": "tcp:0:interface=127.0.0.1"}]
UPSTREAMS = {"loki": {"url": "https://loki.internal:3100", "headers": {"X-Static": "yes"}}}


def config(query: dict[str, Any]) -> Any:
    return read({"listeners": LISTENERS, "upstreams": UPSTREAMS, "query": query})


def problems(query: dict[str, Any]) -> list[str]:
    try:
        config(query)
    except ConfigError as e:
        return e.problems
    raise AssertionError("no problem found")


class TailConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        loaded = config({"loki": {"upstream": "loki"}})
        self.assertEqual(loaded.query.loki.tail, TailConfig())
        self.assertEqual(
            (TailConfig().max_duration, TailConfig().idle_timeout, TailConfig().max_per_identity),
            (3600.0, 600.0, 4),
        )

    def test_written(self) -> None:
        loaded = config(
            {"loki": {"upstream": "loki",
                      "tail": {"max_duration": "30m", "idle_timeout": "90s",
                               "max_per_identity": 2}}}
        )
        self.assertEqual(loaded.query.loki.tail, TailConfig(1800.0, 90.0, 2))

    def test_refused(self) -> None:
        for tail, expected in [
            ({"max_per_identity": 0}, "query.loki.tail.max_per_identity: must be at least 1"),
            ({"max_duration": "soon"}, "query.loki.tail.max_duration: 'soon' is not a duration"),
            ({"idle_timeout": "0s"}, "query.loki.tail.idle_timeout"),
            ({"idle": "1m"}, "query.loki.tail.idle: unknown key"),
        ]:
            found = problems({"loki": {"upstream": "loki", "tail": tail}})
            self.assertEqual(len(found), 1, found)
            self.assertIn(expected, found[0])

    def test_loki_only(self) -> None:
        """
        Prometheus and Tempo have no tail: the key is refused, not ignored.
        """
        for api in ("prometheus", "tempo"):
            found = problems({api: {"upstream": "loki", "tail": {}}})
            self.assertIn(f"query.{api}.tail: unknown key", found[0])

    def test_read_path_takes_it(self) -> None:
        """
        The Loki upstream of the read path gets a tail connector with the
        configured bounds, the upstream's static headers, its handshake
        bounded by the read timeout; other APIs get none.
        """
        loaded = config({
            "loki": {"upstream": "loki", "timeout": "30s", "max_response_bytes": "8MiB",
                     "tail": {"max_per_identity": 3}},
            "tempo": {"upstream": "loki"},
        })
        reads = build_reads(loaded, Clock())
        loki = reads.settings.loki
        assert loki is not None and loki.tail is not None
        self.assertEqual(loki.tail.limits.max_per_identity, 3)
        self.assertEqual(loki.tail.open_tails.max_per_identity, 3)
        self.assertEqual(loki.tail.limits.max_message_bytes, 8 * 1024 * 1024)
        self.assertEqual(loki.tail.handshake_timeout, 30.0)
        self.assertEqual(loki.tail.policy.static, ((b"X-Static", b"yes"),))
        assert reads.settings.tempo is not None
        self.assertIsNone(reads.settings.tempo.tail)


_LOADS = """
import sys
from twisted.internet.task import Clock
from sealgw.config import read
from sealgw.query import build_reads
import sealgw.web.query
query = {QUERY}
config = read({{"listeners": [{{"endpoint": "tcp:0"}}],
               "upstreams": {{"loki": {{"url": "http://loki:3100"}}}}, "query": query}})
build_reads(config, Clock())
print("autobahn" in sys.modules)
"""


class LoadedWhereNeededTests(SynchronousTestCase):
    """
    autobahn is loaded at start-up by a gateway that serves Loki reads,
    and not at all by one that does not.
    """

    def loads(self, query: dict[str, Any]) -> str:
        return subprocess.run(
            [sys.executable, "-c", _LOADS.format(QUERY=repr(query))],
            capture_output=True, text=True, check=True, timeout=60, env=child_env(),
        ).stdout.strip()

    def test_only_with_loki_reads(self) -> None:
        self.assertEqual(self.loads({"tempo": {"upstream": "loki"}}), "False")
        self.assertEqual(self.loads({"loki": {"upstream": "loki"}}), "True")
