"""
C{auth.shared_limits}: the store that makes limits hold for the fleet,
its URL forms, password sources, defaults and messages.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import ConfigError, RedisAddress, SharedLimitsConfig, load
from tests.test_config import MINIMAL


class SharedLimitsConfigTests(SynchronousTestCase):
    def load(self, text: str) -> Any:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        self.path = path
        self.directory = directory
        return load(path)

    def shared(self, body: str) -> Any:
        return self.load(MINIMAL + "auth:\n  shared_limits:\n" + body).auth.shared_limits

    def problems(self, body: str) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.shared(body)
        return [p[len(self.path) + 2:] for p in caught.exception.problems]

    def test_off_by_default(self) -> None:
        self.assertIsNone(self.load(MINIMAL).auth.shared_limits)

    def test_defaults(self) -> None:
        shared = self.shared("    redis: redis://redis\n")
        self.assertEqual(
            shared,
            SharedLimitsConfig(
                redis=RedisAddress("redis://redis", host="redis", port=6379, db=0),
                password=None,
                key_prefix="sealgw",
                timeout=0.05,
            ),
        )

    def test_written(self) -> None:
        shared = self.shared(
            "    redis: rediss://limits@redis.example:6380/3\n"
            "    key_prefix: gw.eu-1\n    timeout: 20ms\n    password: s3cret\n"
        )
        self.assertEqual(
            shared.redis,
            RedisAddress(
                "rediss://limits@redis.example:6380/3",
                host="redis.example",
                port=6380,
                db=3,
                tls=True,
                username="limits",
            ),
        )
        self.assertEqual((shared.key_prefix, shared.timeout), ("gw.eu-1", 0.02))
        self.assertEqual(shared.password.value, "s3cret")
        self.assertNotIn("s3cret", repr(shared))

    def test_unix_socket(self) -> None:
        shared = self.shared("    redis: unix:///run/redis/redis.sock?db=5\n")
        self.assertEqual(
            shared.redis,
            RedisAddress("unix:///run/redis/redis.sock?db=5", path="/run/redis/redis.sock", db=5),
        )

    def test_password_from_file_and_env(self) -> None:
        self.patch(os, "environ", {**os.environ, "SEALGW_TEST_REDIS": "from-env"})
        shared = self.shared("    redis: redis://r\n    password: {env: SEALGW_TEST_REDIS}\n")
        self.assertEqual(shared.password.value, "from-env")
        secret = os.path.abspath(self.mktemp())
        with open(secret, "w") as f:
            f.write("from-file\n")
        shared = self.shared(f"    redis: redis://r\n    password: {{file: {secret}}}\n")
        self.assertEqual(shared.password.value, "from-file")

    def test_password_in_url_refused(self) -> None:
        [problem] = self.problems("    redis: redis://:hunter2@redis:6379/0\n")
        self.assertIn("auth.shared_limits.redis", problem)
        self.assertIn("a password in the URL would be logged", problem)
        self.assertNotIn("hunter2", problem)

    def test_bad_values(self) -> None:
        for body, expected in [
            ("    redis: http://redis\n", "is not a redis://, rediss:// or unix:// URL"),
            ("    redis: redis://\n", "names no host"),
            ("    redis: redis://r:99999\n", "bad port"),
            ("    redis: redis://r/x\n", "the database must be a number"),
            ("    redis: unix://\n", "needs a socket path"),
            ("    redis: 5\n", "expected a redis://"),
            ("    redis: redis://r\n    key_prefix: 'a{b}'\n", "letters, digits or _-.:"),
            ("    redis: redis://r\n    timeout: 2s\n", "must be at most 1s"),
            ("    redis: redis://r\n    timeout: 0\n", "longer than zero"),
            ("    redis: redis://r\n    password: {env: SEALGW_TEST_UNSET_X}\n", "not set"),
            ("    key_prefix: x\n", "redis"),
        ]:
            problems = self.problems(body)
            self.assertEqual(len(problems), 1, (body, problems))
            self.assertIn(expected, problems[0], body)
            self.assertIn("auth.shared_limits", problems[0], body)
