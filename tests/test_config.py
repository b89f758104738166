"""
Configuration: units, every class of problem with its message, seal-proxy's
files taken as they are, and the built-in default.
"""

from __future__ import annotations

import io
import os
import textwrap

from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sealgw.cli import check_config
from sealgw.config import (
    ConfigError,
    FileUpstreamConfig,
    HTTPUpstreamConfig,
    default_config,
    load,
    parse_duration,
    parse_size,
)

MINIMAL = """
listeners:
  - endpoint: tcp:8080
upstreams:
  mimir:
    url: http://mimir:8080/api/v1/push
push:
  remote_write:
    upstream: mimir
"""


class UnitTests(SynchronousTestCase):
    def test_durations(self) -> None:
        self.assertEqual(parse_duration("30s"), 30.0)
        self.assertEqual(parse_duration("5m"), 300.0)
        self.assertEqual(parse_duration("1h30m"), 5400.0)
        self.assertEqual(parse_duration("250ms"), 0.25)
        self.assertEqual(parse_duration(2), 2.0)

    def test_bad_durations(self) -> None:
        for bad in ("30", "5 minutes", "", "-1s", "1x", True, [1]):
            with self.assertRaises(ValueError, msg=repr(bad)):
                parse_duration(bad)

    def test_sizes(self) -> None:
        self.assertEqual(parse_size("5MiB"), 5 * 1024 * 1024)
        self.assertEqual(parse_size("512KiB"), 512 * 1024)
        self.assertEqual(parse_size("1MB"), 1000 * 1000)
        self.assertEqual(parse_size("100B"), 100)
        self.assertEqual(parse_size(4096), 4096)

    def test_bad_sizes(self) -> None:
        for bad in ("5 mebibytes", "MiB", "-1", "", True):
            with self.assertRaises(ValueError, msg=repr(bad)):
                parse_size(bad)


class LoadTests(SynchronousTestCase):
    def write(self, text: str, name: str = "sealgw.yaml") -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def problems(self, text: str) -> list[str]:
        path = self.write(text)
        with self.assertRaises(ConfigError) as caught:
            load(path)
        prefix = path + ": "
        for p in caught.exception.problems:
            self.assertTrue(p.startswith(prefix), p)
        return [p[len(prefix):] for p in caught.exception.problems]

    def test_minimal(self) -> None:
        config = load(self.write(MINIMAL))
        self.assertEqual(config.listeners[0].endpoint, "tcp:8080")
        upstream = config.upstreams["mimir"]
        assert isinstance(upstream, HTTPUpstreamConfig)
        self.assertEqual(upstream.url, "http://mimir:8080/api/v1/push")
        self.assertEqual(config.push.remote_write.route.upstream, "mimir")  # type: ignore[union-attr]

    def test_frozen(self) -> None:
        config = load(self.write(MINIMAL))
        with self.assertRaises(AttributeError):
            config.drain_grace = 1.0  # type: ignore[misc]

    def test_unknown_key_with_hint(self) -> None:
        self.assertEqual(
            self.problems(MINIMAL + "drain_grase: 10s\n"),
            ["drain_grase: unknown key (did you mean 'drain_grace'?)"],
        )

    def test_nested_unknown_key(self) -> None:
        text = MINIMAL.replace("    url: http", "    urll: x\n    url: http")
        self.assertEqual(self.problems(text), ["upstreams.mimir.urll: unknown key (did you mean 'url'?)"])

    def test_bad_url(self) -> None:
        text = MINIMAL.replace("http://mimir:8080/api/v1/push", "mimir:8080")
        self.assertEqual(self.problems(text), ["upstreams.mimir.url: not an http(s) URL"])

    def test_wrong_type(self) -> None:
        text = MINIMAL + "limits:\n  max_body: [1]\n"
        [problem] = self.problems(text)
        self.assertTrue(problem.startswith("limits.max_body: "), problem)
        self.assertIn("not a size", problem)

    def test_impossible_value(self) -> None:
        text = MINIMAL + "limits:\n  max_body: 10MiB\n  max_decompressed: 1MiB\n"
        self.assertEqual(
            self.problems(text), ["limits.max_decompressed: must not be smaller than max_body"]
        )

    def test_zero_duration(self) -> None:
        text = MINIMAL.replace(
            "    url: http://mimir:8080/api/v1/push",
            "    url: http://mimir:8080/api/v1/push\n    timeouts:\n      connect: 0s",
        )
        self.assertEqual(
            self.problems(text), ["upstreams.mimir.timeouts.connect: must be longer than zero"]
        )

    def test_unknown_upstream(self) -> None:
        text = MINIMAL.replace("upstream: mimir", "upstream: loki")
        self.assertEqual(
            self.problems(text), ["push.remote_write.upstream: no upstream named 'loki' (mimir)"]
        )

    def test_every_problem_reported(self) -> None:
        text = """
        listeners: []
        upstreams:
          mimir:
            url: ftp://x
            retry:
              attempts: 0
        push:
          loki:
            upstream: nowhere
        drain_grace: soon
        """
        problems = self.problems(text)
        self.assertEqual(len(problems), 5, problems)
        self.assertIn("listeners: at least one listener is required", problems)
        self.assertIn("upstreams.mimir.retry.attempts: must be at least 1", problems)

    def test_invalid_yaml(self) -> None:
        [problem] = self.problems("listeners: [\n")
        self.assertIn("not valid YAML (line", problem)

    def test_missing_file(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            load("/nonexistent/sealgw.yaml")
        self.assertEqual(
            caught.exception.problems,
            ["/nonexistent/sealgw.yaml: cannot read: No such file or directory"],
        )

    def test_top_level_not_mapping(self) -> None:
        self.assertEqual(self.problems("- a\n- b\n")[0], "expected a mapping, got a list")

    def test_tls_files_must_exist(self) -> None:
        text = MINIMAL.replace(
            "  - endpoint: tcp:8080",
            "  - endpoint: ssl:8443\n    tls:\n      certificate: missing.crt\n      key: missing.key",
        )
        problems = self.problems(text)
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("listeners[0].tls.certificate: ", problems[0])
        self.assertIn("missing.crt does not exist", problems[0])

    def test_ssl_needs_tls(self) -> None:
        text = MINIMAL.replace("tcp:8080", "ssl:8443")
        self.assertEqual(
            self.problems(text),
            ["listeners[0].tls: an ssl: endpoint needs a tls section with certificate and key"],
        )

    def test_mtls_needs_ca(self) -> None:
        path = self.write("x", "server.pem")
        text = MINIMAL.replace(
            "  - endpoint: tcp:8080",
            f"  - endpoint: ssl:8443\n    tls:\n      certificate: {path}\n      key: {path}\n"
            "      client_certificates: required",
        )
        self.assertEqual(
            self.problems(text), ["listeners[0].tls.client_ca: required when client_certificates is 'required'"]
        )

    def test_unknown_endpoint_type(self) -> None:
        [problem] = self.problems(MINIMAL.replace("tcp:8080", "quic:8080"))
        self.assertTrue(problem.startswith("listeners[0].endpoint: 'quic:8080' is not an endpoint"))

    def test_bad_tenant(self) -> None:
        self.assertEqual(
            self.problems(MINIMAL + "tenancy:\n  default_tenant: '..'\n"),
            ["tenancy.default_tenant: tenant id cannot be '.' or '..'"],
        )

    def test_secret_from_file_and_env(self) -> None:
        secret_file = self.write("s3cret\n", "password")
        os.environ["SEALGW_TEST_TOKEN"] = "from-env"
        self.addCleanup(os.environ.pop, "SEALGW_TEST_TOKEN")
        text = MINIMAL.replace(
            "push:",
            "  loki:\n    url: https://loki:3100\n    basic_auth:\n      username: gw\n"
            f"      password: {{file: {secret_file}}}\n"
            "  tempo:\n    url: https://tempo:4318\n    bearer_token: {env: SEALGW_TEST_TOKEN}\npush:",
        )
        config = load(self.write(text))
        loki = config.upstreams["loki"]
        tempo = config.upstreams["tempo"]
        assert isinstance(loki, HTTPUpstreamConfig) and isinstance(tempo, HTTPUpstreamConfig)
        assert loki.basic_auth is not None and tempo.bearer_token is not None
        self.assertEqual(loki.basic_auth.password.value, "s3cret")
        self.assertEqual(tempo.bearer_token.value, "from-env")
        self.assertNotIn("s3cret", repr(config))
        self.assertNotIn("from-env", repr(config))

    def test_secret_env_missing(self) -> None:
        text = MINIMAL.replace(
            "    url: http://mimir:8080/api/v1/push",
            "    url: http://mimir:8080/api/v1/push\n    bearer_token: {env: SEALGW_NOT_SET_ANYWHERE}",
        )
        self.assertEqual(
            self.problems(text),
            ["upstreams.mimir.bearer_token.env: environment variable SEALGW_NOT_SET_ANYWHERE is not set"],
        )

    def test_empty_secret(self) -> None:
        """
        An empty string is said to be empty, not "expected a mapping".
        """
        text = MINIMAL.replace(
            "    url: http://mimir:8080/api/v1/push",
            "    url: http://mimir:8080/api/v1/push\n"
            "    basic_auth: {username: gw, password: ''}",
        )
        self.assertEqual(
            self.problems(text), ["upstreams.mimir.basic_auth.password: must not be empty"]
        )

    def test_secret_of_the_wrong_kind(self) -> None:
        text = MINIMAL.replace(
            "    url: http://mimir:8080/api/v1/push",
            "    url: http://mimir:8080/api/v1/push\n    bearer_token: [a]",
        )
        self.assertEqual(
            self.problems(text),
            [
                "upstreams.mimir.bearer_token: expected a string or a mapping with file or env, "
                "got a list"
            ],
        )

    def test_native_unknown_keys_stay_problems(self) -> None:
        """
        Only seal-proxy's files are lenient: sealgw's own format refuses an
        unknown key and has no warnings.
        """
        path = self.write(MINIMAL)
        self.assertEqual(load(path).warnings, ())
        self.assertEqual(
            self.problems(MINIMAL + "histogram_address: 0.0.0.0:8001\n"),
            ["histogram_address: unknown key"],
        )

    def test_auth_basic(self) -> None:
        self.assertTrue(load(self.write(MINIMAL)).auth.basic)
        self.assertTrue(load(self.write(MINIMAL + "auth: {basic: true}\n")).auth.basic)
        self.assertFalse(load(self.write(MINIMAL + "auth: {basic: false}\n")).auth.basic)
        self.assertEqual(
            self.problems(MINIMAL + "auth: {basic: 'no'}\n"),
            ["auth.basic: expected true or false, got a string"],
        )

    def test_oidc_key_fetches(self) -> None:
        """
        Fetches for unknown signing keys: one per 10s by default, three back
        to back; both can be changed, and neither may be zero.
        """
        oidc = "auth: {oidc: {issuer: 'https://idp', audience: a%s}}\n"
        config = load(self.write(MINIMAL + oidc % ""))
        assert config.auth.oidc is not None
        self.assertEqual(
            (config.auth.oidc.jwks_min_refresh_interval, config.auth.oidc.jwks_refresh_burst),
            (10.0, 3),
        )
        config = load(
            self.write(
                MINIMAL + oidc % ", jwks_min_refresh_interval: 1m, jwks_refresh_burst: 10"
            )
        )
        assert config.auth.oidc is not None
        self.assertEqual(
            (config.auth.oidc.jwks_min_refresh_interval, config.auth.oidc.jwks_refresh_burst),
            (60.0, 10),
        )
        self.assertEqual(
            self.problems(
                MINIMAL + oidc % ", jwks_min_refresh_interval: 0s, jwks_refresh_burst: 0"
            ),
            [
                "auth.oidc.jwks_min_refresh_interval: must be longer than zero",
                "auth.oidc.jwks_refresh_burst: must be at least 1",
            ],
        )

    def test_oidc_eddsa(self) -> None:
        text = MINIMAL + "auth: {oidc: {issuer: 'https://idp', audience: a, algorithms: [EdDSA]}}\n"
        config = load(self.write(text))
        assert config.auth.oidc is not None
        self.assertEqual(config.auth.oidc.algorithms, ("EdDSA",))
        self.assertEqual(
            self.problems(text.replace("EdDSA", "Ed448")),
            ["auth.oidc.algorithms[0]: 'Ed448' is not an accepted signature algorithm"],
        )

    def test_file_upstream(self) -> None:
        text = """
        listeners: [{endpoint: "tcp:8080"}]
        upstreams:
          disk: {type: file, directory: data, rotate_size: 1MiB}
        push:
          loki: {upstream: disk}
        """
        path = self.write(text)
        config = load(path)
        disk = config.upstreams["disk"]
        assert isinstance(disk, FileUpstreamConfig)
        self.assertEqual(disk.directory, os.path.join(os.path.dirname(path), "data"))
        self.assertEqual(disk.rotate_size, 1024 * 1024)


#: seal's own sample, docker/seal-proxy/local-test/seal-proxy.yaml, as it is.
SEAL_SAMPLE = """\
# pub struct ProxyConfig { ... }
listen-address: 0.0.0.0:8000
metrics-address: 0.0.0.0:9185
histogram-address: 0.0.0.0:8001
label-actions:
  add:
    network: "pei-test"
    host: "docker-compose"
remote-write:
  url: "http://mimir:9009/api/v1/push"
  username: ""
  password: ""
  pool_max_idle_per_host: 100
"""


class TokenFileCheckTests(SynchronousTestCase):
    """
    A token file that is not there is a problem of the setting that named
    it, when a start or check-config loads the configuration.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "sealgw.yaml")
        with open(self.path, "w") as f:
            f.write("listeners: [{endpoint: 'tcp:0'}]\nauth: {token_file: {path: tokens.yaml}}\n")

    def check(self, tokens: str | None = None) -> list[str]:
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(check_config(self.path, tokens, out, err), 1)
        return err.getvalue().splitlines()

    def test_named_in_the_file(self) -> None:
        missing = os.path.join(self.directory, "tokens.yaml")
        self.assertEqual(
            self.check(),
            [
                f"{self.path}: auth.token_file.path: cannot read {missing}: "
                "No such file or directory",
                f"{self.path}: 1 problem(s)",
            ],
        )

    def test_named_on_the_command_line(self) -> None:
        missing = os.path.join(self.directory, "other.yaml")
        self.assertEqual(
            self.check(missing)[0],
            f"--bearer-tokens-path: cannot read {missing}: No such file or directory",
        )

    def test_only_when_asked(self) -> None:
        """
        Reading a configuration alone does not open its token file.
        """
        token_file = load(self.path).auth.token_file
        assert token_file is not None
        self.assertEqual(token_file.path, os.path.join(self.directory, "tokens.yaml"))
        with self.assertRaises(ConfigError):
            load(self.path, check_token_file=True)


class SealProxyConfigTests(SynchronousTestCase):
    """
    seal-proxy's own files work unchanged.
    """

    SEAL = """
    listen-address: 0.0.0.0:8000
    metrics-address: 127.0.0.1:9185
    label-actions:
      add:
        network: testnet
      remove:
        host: ""
    remote-write:
      url: http://alloy:9090/api/v1/write
      username: seal
      password: hunter2
      pool-max-idle-per-host: 8
    """

    def test_seal_proxy_yaml(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "seal-proxy.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(self.SEAL))
        tokens = os.path.join(directory, "bearer-tokens.yaml")
        config = load(path, tokens)
        self.assertEqual(config.listeners[0].endpoint, "tcp:8000")
        assert config.admin is not None
        self.assertEqual(config.admin.endpoint, "tcp:9185:interface=127.0.0.1")
        upstream = config.upstreams["remote-write"]
        assert isinstance(upstream, HTTPUpstreamConfig) and upstream.basic_auth is not None
        self.assertEqual(upstream.url, "http://alloy:9090/api/v1/write")
        self.assertEqual(upstream.basic_auth.username, "seal")
        self.assertEqual(upstream.basic_auth.password.value, "hunter2")
        self.assertEqual(upstream.max_connections, 8)
        seal = config.push.seal
        assert seal is not None
        self.assertEqual(dict(seal.labels.add), {"network": "testnet"})
        self.assertEqual(seal.labels.remove, frozenset({"host"}))
        assert config.auth.token_file is not None
        self.assertEqual(config.auth.token_file.path, os.path.abspath(tokens))

    def write(self, text: str) -> tuple[str, str]:
        """
        C{text} as seal-proxy.yaml, next to a bearer-tokens.yaml in
        seal-proxy's format.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "seal-proxy.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        tokens = os.path.join(directory, "bearer-tokens.yaml")
        with open(tokens, "w") as f:
            f.write("- name: sample-token\n  token: abcdefghijklmnopqrstuvwxyz\n")
        return path, tokens

    def test_seal_sample(self) -> None:
        """
        seal's own sample file, exactly as it is, loads: histogram-address
        is accepted (with one warning), empty credentials mean no basic
        auth, and the pool size spelled with underscores counts.
        """
        path, tokens = self.write(SEAL_SAMPLE)
        config = load(path, tokens)
        self.assertEqual(config.listeners[0].endpoint, "tcp:8000")
        assert config.admin is not None
        self.assertEqual(config.admin.endpoint, "tcp:9185")
        upstream = config.upstreams["remote-write"]
        assert isinstance(upstream, HTTPUpstreamConfig)
        self.assertEqual(upstream.url, "http://mimir:9009/api/v1/push")
        self.assertIsNone(upstream.basic_auth)
        self.assertIsNone(upstream.bearer_token)
        self.assertEqual(upstream.max_connections, 100)
        seal = config.push.seal
        assert seal is not None
        self.assertEqual(dict(seal.labels.add), {"network": "pei-test", "host": "docker-compose"})
        self.assertEqual(
            config.warnings,
            (
                f"{path}: histogram-address: not used: sealgw converts histograms to "
                "remote-write series itself, so seal-proxy's histogram relay listener "
                "(scraped by Alloy) is not needed and nothing listens there",
            ),
        )

    def test_seal_sample_check_config(self) -> None:
        path, tokens = self.write(SEAL_SAMPLE)
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(check_config(path, tokens, out, err), 0, err.getvalue())
        self.assertEqual(out.getvalue(), f"{path}: ok (1 listener(s), 1 upstream(s))\n")
        [line] = err.getvalue().splitlines()
        self.assertTrue(line.startswith(f"warning: {path}: histogram-address: not used: "), line)

    def test_warnings_logged_once(self) -> None:
        path, tokens = self.write(SEAL_SAMPLE + "future-key: 1\n")
        with capturedLogs() as events:
            load(path, tokens)
        logged = [e for e in events if e.get("log_namespace") == "sealgw.config"]
        self.assertEqual(len(logged), 2)
        self.assertEqual({e["log_level"] for e in logged}, {LogLevel.warn})
        text = "\n".join(formatEvent(e) for e in logged)
        self.assertIn("histogram-address: not used", text)
        self.assertIn(f"{path}: future-key: unknown key, ignored", text)

    def test_unknown_keys_are_warnings(self) -> None:
        """
        seal-proxy's serde ignores keys it does not know, so sealgw accepts
        them too, naming each.
        """
        text = SEAL_SAMPLE.replace(
            "label-actions:", "future-key: 1\nlabel-actions:\n  override: {a: b}"
        ).replace("  url:", "  timeout: 5\n  url:")
        path, tokens = self.write(text)
        config = load(path, tokens)
        self.assertEqual(
            [w for w in config.warnings if "histogram-address" not in w],
            [
                f"{path}: future-key: unknown key, ignored",
                f"{path}: label-actions.override: unknown key, ignored",
                f"{path}: remote-write.timeout: unknown key, ignored",
            ],
        )

    def test_native_keys_in_a_seal_file(self) -> None:
        path, tokens = self.write(SEAL_SAMPLE + "listeners: [{endpoint: 'tcp:1'}]\n")
        with self.assertRaises(ConfigError) as caught:
            load(path, tokens)
        self.assertEqual(
            caught.exception.problems,
            [
                f"{path}: listeners: a key of sealgw's own format in a seal-proxy file: "
                "write one or the other"
            ],
        )

    def test_pool_size_spellings(self) -> None:
        def pool(remote_write: str, top: str = "") -> int:
            path, tokens = self.write(
                top + "remote-write:\n  url: http://m:9009/api/v1/push\n" + remote_write
            )
            upstream = load(path, tokens).upstreams["remote-write"]
            assert isinstance(upstream, HTTPUpstreamConfig)
            return upstream.max_connections

        self.assertEqual(pool(""), 10)
        self.assertEqual(pool("  pool-max-idle-per-host: 7\n"), 7)
        self.assertEqual(pool("  pool_max_idle_per_host: 9\n"), 9)
        # seal-proxy's top-level setting, unless remote-write has its own.
        self.assertEqual(pool("", "pool-max-idle-per-host: 4\n"), 4)
        self.assertEqual(pool("  pool_max_idle_per_host: 9\n", "pool-max-idle-per-host: 4\n"), 9)
        path, tokens = self.write(
            "remote-write:\n  url: http://m:9009/api/v1/push\n"
            "  pool-max-idle-per-host: 7\n  pool_max_idle_per_host: 9\n"
        )
        with self.assertRaises(ConfigError) as caught:
            load(path, tokens)
        self.assertEqual(
            caught.exception.problems,
            [
                f"{path}: remote-write.pool_max_idle_per_host: the same setting as "
                "pool-max-idle-per-host: give only one of them"
            ],
        )

    def test_credentials(self) -> None:
        def basic_auth(credentials: str) -> object:
            path, tokens = self.write(
                "remote-write:\n  url: http://m:9009/api/v1/push\n" + credentials
            )
            upstream = load(path, tokens).upstreams["remote-write"]
            assert isinstance(upstream, HTTPUpstreamConfig)
            if upstream.basic_auth is None:
                return None
            return (upstream.basic_auth.username, upstream.basic_auth.password.value)

        self.assertIsNone(basic_auth(""))
        self.assertIsNone(basic_auth('  username: ""\n  password: ""\n'))
        self.assertIsNone(basic_auth("  username:\n  password:\n"))
        self.assertEqual(basic_auth("  username: u\n  password: p\n"), ("u", "p"))
        self.assertEqual(basic_auth('  username: u\n  password: ""\n'), ("u", ""))
        self.assertEqual(basic_auth('  username: ""\n  password: p\n'), ("", "p"))

    def test_seal_proxy_needs_tokens(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "seal-proxy.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(self.SEAL))
        with self.assertRaises(ConfigError) as caught:
            load(path)
        self.assertEqual(
            caught.exception.problems, [f"{path}: a seal-proxy config needs --bearer-tokens-path"]
        )


class DefaultConfigTests(SynchronousTestCase):
    def test_default(self) -> None:
        config = default_config("/tmp/x", token="t0k")
        self.assertEqual(config.listeners[0].endpoint, "tcp:8080:interface=127.0.0.1")
        self.assertTrue(config.listeners[0].ops)
        assert config.development_token is not None
        self.assertEqual(config.development_token.value, "t0k")
        self.assertNotIn("t0k", repr(config))
        for route in (config.push.loki, config.push.otlp_traces):
            assert route is not None
            self.assertEqual(route.upstream, "files")

    def test_generated_tokens_differ(self) -> None:
        a = default_config().development_token
        b = default_config().development_token
        assert a is not None and b is not None
        self.assertNotEqual(a.value, b.value)
        self.assertGreaterEqual(len(a.value), 32)
