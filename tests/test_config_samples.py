"""
The sample limits' keys: C{auth.default_limits.samples} and an identity's
own C{limits.samples}, in the configuration file and the token file, with
their defaults, units and messages.
"""

from __future__ import annotations

import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth._tokenfile import parse_token_file
from sealgw.config import ConfigError, SampleLimitsConfig, load
from tests.test_config import MINIMAL


class SampleLimitsConfigTests(SynchronousTestCase):
    def load(self, text: str) -> object:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        self.path = path
        return load(path)

    def problems(self, text: str) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.load(text)
        return [p[len(self.path) + 2:] for p in caught.exception.problems]

    def test_defaults(self) -> None:
        """
        Mimir's defaults where it has them; C{max_past} off; no section
        written means the defaults apply (the web layer fills them in).
        """
        self.assertEqual(
            SampleLimitsConfig(),
            SampleLimitsConfig(
                max_future=600.0,
                max_past=0.0,
                max_labels_per_series=30,
                max_label_name_length=1024,
                max_label_value_length=2048,
                max_series_per_push=50_000,
            ),
        )
        config = self.load(MINIMAL)
        self.assertIsNone(config.auth.default_limits.samples)  # type: ignore[attr-defined]

    def test_written(self) -> None:
        config = self.load(
            MINIMAL
            + "auth:\n  default_limits:\n    samples:\n"
            + "      max_future: 1m\n      max_past: 2h\n      max_labels_per_series: 40\n"
            + "      max_label_name_length: 100\n      max_label_value_length: 4096\n"
            + "      max_series_per_push: 20000\n"
        )
        self.assertEqual(
            config.auth.default_limits.samples,  # type: ignore[attr-defined]
            SampleLimitsConfig(60.0, 7200.0, 40, 100, 4096, 20_000),
        )

    def test_zero_turns_a_window_off(self) -> None:
        config = self.load(
            MINIMAL + "auth:\n  default_limits:\n    samples: {max_future: 0s}\n"
        )
        self.assertEqual(config.auth.default_limits.samples.max_future, 0.0)  # type: ignore[attr-defined]

    def test_bad_values(self) -> None:
        problems = self.problems(
            MINIMAL
            + "auth:\n  default_limits:\n    samples:\n"
            + "      max_future: soon\n      max_labels_per_series: 0\n"
            + "      max_label_value_length: -1\n      max_series: 10\n"
        )
        self.assertEqual(
            sorted(problems),
            [
                "auth.default_limits.samples.max_future: 'soon' is not a duration "
                "(write it like 30s, 5m or 250ms)",
                "auth.default_limits.samples.max_label_value_length: must be at least 1",
                "auth.default_limits.samples.max_labels_per_series: must be at least 1",
                "auth.default_limits.samples.max_series: unknown key (did you mean "
                "'max_series_per_push'?)",
            ],
        )

    def test_per_identity(self) -> None:
        """
        A client certificate's own limits carry their samples.
        """
        config = self.load(
            MINIMAL
            + "auth:\n  client_certificates:\n    identities:\n      node-1:\n"
            + "        limits: {samples: {max_labels_per_series: 5}}\n"
        )
        identity = config.auth.client_certificates.identities["node-1"]  # type: ignore[attr-defined]
        self.assertEqual(identity.limits.samples, SampleLimitsConfig(max_labels_per_series=5))


class TokenFileTests(SynchronousTestCase):
    def test_samples(self) -> None:
        [entry] = parse_token_file(
            "- name: a\n  token: t\n  limits:\n    samples: {max_future: 5m, max_series_per_push: 10}\n",
            "bearer-tokens.yaml",
        )
        assert entry.limits is not None
        self.assertEqual(
            entry.limits.samples, SampleLimitsConfig(max_future=300.0, max_series_per_push=10)
        )

    def test_bad(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_token_file(
                "- {name: a, token: t, limits: {samples: {max_label_name_length: 0}}}\n",
                "bearer-tokens.yaml",
            )
        self.assertEqual(
            caught.exception.problems,
            ["bearer-tokens.yaml: [0].limits.samples.max_label_name_length: must be at least 1"],
        )
