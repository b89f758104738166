"""
How the configuration is structured with cattrs: the model's defaults are
the only ones, every problem is named by key path (items of lists and keys
of mappings too) without follow-on noise, checks that span fields run
beside broken fields they do not read, and a new section needs no loader
code.
"""

from __future__ import annotations

import os
import textwrap
from typing import Annotated, Optional

import attr
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import (
    Config,
    ConfigError,
    FileUpstreamConfig,
    HTTPUpstreamConfig,
    ListenerConfig,
    PushConfig,
    RemoteWriteConfig,
    RouteConfig,
    SourceFile,
    load,
    read,
    structure,
)
from sealgw.config._problems import Invalid, describe, key_path
from sealgw.config._rules import URL, Bytes, Count, Duration, OneOf, Seconds, Size

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


class LoadTestCase(SynchronousTestCase):
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
        return [p.removeprefix(path + ": ") for p in caught.exception.problems]

    def upstream(self, lines: str) -> str:
        """
        L{MINIMAL} with C{lines} added to the mimir upstream.
        """
        url = "    url: http://mimir:8080/api/v1/push\n"
        return MINIMAL.replace(url, url + textwrap.indent(textwrap.dedent(lines), "    "))


class DefaultsTests(LoadTestCase):
    def test_defaults_are_the_models(self) -> None:
        """
        What the file leaves out is what the model's own defaults say.
        """
        path = self.write(MINIMAL)
        route = RouteConfig(upstream="mimir")
        self.assertEqual(
            load(path),
            Config(
                source=path,
                listeners=(ListenerConfig(endpoint="tcp:8080"),),
                upstreams={
                    "mimir": HTTPUpstreamConfig(name="mimir", url="http://mimir:8080/api/v1/push")
                },
                push=PushConfig(remote_write=RemoteWriteConfig(route=route)),
            ),
        )

    def test_null_is_left_out(self) -> None:
        """
        A key written with no value is a key not written.
        """
        config = load(self.write(MINIMAL + "limits:\n  max_body:\ndrain_grace: ~\n"))
        self.assertEqual((config.limits.max_body, config.drain_grace), (5 * 1024 * 1024, 30.0))

    def test_read_parsed_data(self) -> None:
        """
        L{read} takes parsed YAML; relative paths are taken from the
        folder given.
        """
        config = read(
            {
                "listeners": [{"endpoint": "tcp:1"}],
                "upstreams": {"disk": {"type": "file", "directory": "data"}},
            },
            SourceFile("inline", "/srv/sealgw"),
        )
        self.assertEqual(
            config.upstreams["disk"], FileUpstreamConfig(name="disk", directory="/srv/sealgw/data")
        )

    def test_each_file_its_own_folder(self) -> None:
        """
        The converter is shared; the folder relative paths are taken from
        is the one of the file being read.
        """
        text = "listeners: [{endpoint: 'tcp:1'}]\nupstreams: {disk: {type: file, directory: d}}\n"
        for path in (self.write(text), self.write(text)):
            disk = load(path).upstreams["disk"]
            assert isinstance(disk, FileUpstreamConfig)
            self.assertEqual(disk.directory, os.path.join(os.path.dirname(path), "d"))


class MessageTests(LoadTestCase):
    def test_no_follow_on_problems(self) -> None:
        """
        A section of the wrong kind is one problem, not also one per key
        it was meant to have.
        """
        self.assertEqual(
            self.problems(MINIMAL.replace("tcp:8080", "ssl:8443\n    tls: yes")),
            ["listeners[0].tls: expected a mapping, got a boolean"],
        )
        self.assertEqual(
            self.problems(MINIMAL.replace("listeners:\n  - endpoint: tcp:8080", "listeners: a")),
            ["listeners: expected a list, got a string"],
        )
        self.assertEqual(self.problems("- a\n"), ["expected a mapping, got a list"])

    def test_keys_of_mappings(self) -> None:
        """
        Every bad key and value of a mapping is named by its key.
        """
        self.assertEqual(
            self.problems(self.upstream("headers: {'X Bad': a, X-List: [1], X-Empty: ''}\n")),
            [
                "upstreams.mimir.headers.X Bad: not a valid HTTP header name",
                "upstreams.mimir.headers.X-List: expected a string, got a list",
            ],
        )

    def test_items_of_lists(self) -> None:
        self.assertEqual(
            self.problems(MINIMAL + "trusted_proxies: [10.0.0.0/8, nope, '::1']\n"),
            ["trusted_proxies[1]: 'nope' is not an address or CIDR"],
        )
        self.assertEqual(
            self.problems(
                MINIMAL + "auth: {oidc: {issuer: 'https://idp', audience: a, "
                "algorithms: [RS256, HS256]}}\n"
            ),
            ["auth.oidc.algorithms[1]: 'HS256' is not an accepted signature algorithm"],
        )

    def test_one_string_for_a_list_of_strings(self) -> None:
        config = load(
            self.write(MINIMAL + "auth: {oidc: {issuer: 'https://idp', audience: my-api}}\n")
        )
        assert config.auth.oidc is not None
        self.assertEqual(config.auth.oidc.audience, ("my-api",))

    def test_unknown_keys_first_in_file_order(self) -> None:
        self.assertEqual(
            self.problems(MINIMAL + "zeta: 1\nlimits: {max_body: lots}\nalpha: 2\n3: x\n"),
            [
                "zeta: unknown key",
                "alpha: unknown key",
                "key 3 is not a string",
                "limits.max_body: 'lots' is not a size (write it like 5MiB or 512KiB)",
            ],
        )

    def test_name_is_the_key(self) -> None:
        """
        An upstream's name is its key; a C{name} key in it is refused.
        """
        self.assertEqual(
            self.problems(self.upstream("name: other\n")), ["upstreams.mimir.name: unknown key"]
        )

    def test_bad_upstream_type(self) -> None:
        """
        An unknown type is said, and the upstream is still read as HTTP.
        """
        self.assertEqual(
            self.problems(self.upstream("type: grpc\nmax_connections: 0\n")),
            [
                "upstreams.mimir.type: 'grpc' is not one of 'http', 'file'",
                "upstreams.mimir.max_connections: must be at least 1",
            ],
        )

    def test_check_beside_a_broken_field(self) -> None:
        """
        A check still runs when a field it does not read is broken.
        """
        text = self.upstream("retry: {attempts: 0, initial_backoff: 5s, max_backoff: 1s}\n")
        self.assertEqual(
            self.problems(text),
            [
                "upstreams.mimir.retry.attempts: must be at least 1",
                "upstreams.mimir.retry.max_backoff: must not be shorter than initial_backoff",
            ],
        )

    def test_check_of_a_broken_field(self) -> None:
        """
        A check that reads a broken field does not run: it would compare
        against a value nobody wrote.
        """
        self.assertEqual(
            self.problems(MINIMAL + "limits: {max_body: lots, max_decompressed: 1KiB}\n"),
            ["limits.max_body: 'lots' is not a size (write it like 5MiB or 512KiB)"],
        )

    def test_secret_origin(self) -> None:
        """
        An inline secret says it comes from the configuration file, and
        never shows its value.
        """
        path = self.write(self.upstream("bearer_token: s3cret\n"))
        upstream = load(path).upstreams["mimir"]
        assert isinstance(upstream, HTTPUpstreamConfig) and upstream.bearer_token is not None
        self.assertEqual(repr(upstream.bearer_token), f"<Secret from {path}>")


class SealProxyTests(LoadTestCase):
    def test_top_level_pool_in_either_spelling(self) -> None:
        """
        seal-proxy's pool size counts at the top level in both spellings,
        as inside remote-write, without a warning.
        """
        path = self.write(
            "remote-write: {url: 'http://m:9009/api/v1/push'}\npool_max_idle_per_host: 3\n",
            "seal-proxy.yaml",
        )
        config = load(path, os.path.join(os.path.dirname(path), "tokens.yaml"))
        upstream = config.upstreams["remote-write"]
        assert isinstance(upstream, HTTPUpstreamConfig)
        self.assertEqual((upstream.max_connections, config.warnings), (3, ()))


@attr.frozen
class SpoolSection:
    """
    A section the loader has never heard of.
    """

    directory: str
    max_size: Bytes = 1024
    flush: Seconds = 1.0
    workers: Count = 1
    mode: Annotated[str, OneOf(("disk", "memory"))] = "disk"
    upstream: Optional[URL] = None


class NewSectionTests(SynchronousTestCase):
    """
    A new section is an attrs class written with the rules; structuring it
    needs no loader code and speaks the same messages.
    """

    def test_structured(self) -> None:
        spool = structure(
            {"directory": "/var/spool", "max_size": "2KiB", "flush": "250ms"},
            SpoolSection,
            SourceFile("x.yaml"),
        )
        self.assertEqual(spool, SpoolSection("/var/spool", 2048, 0.25))

    def test_problems(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            structure(
                {"max_sise": 1, "flush": "soon", "workers": 0, "mode": "tape", "upstream": "x"},
                SpoolSection,
                SourceFile("x.yaml"),
                at=("spool",),
            )
        self.assertEqual(
            caught.exception.problems,
            [
                "x.yaml: spool.max_sise: unknown key (did you mean 'max_size'?)",
                "x.yaml: spool.directory: required",
                "x.yaml: spool.flush: 'soon' is not a duration (write it like 30s, 5m or 250ms)",
                "x.yaml: spool.workers: must be at least 1",
                "x.yaml: spool.mode: 'tape' is not one of 'disk', 'memory'",
                "x.yaml: spool.upstream: not an http(s) URL",
            ],
        )


class RuleTests(SynchronousTestCase):
    def invalid(self, rule: object, value: object) -> str:
        with self.assertRaises(Invalid) as caught:
            rule.structure(value, SourceFile("x"))  # type: ignore[attr-defined]
        return caught.exception.message

    def test_duration(self) -> None:
        self.assertEqual(Duration().structure("1m30s", SourceFile("x")), 90.0)
        self.assertEqual(Duration(zero=True).structure(0, SourceFile("x")), 0.0)
        self.assertEqual(self.invalid(Duration(), "0s"), "must be longer than zero")

    def test_size(self) -> None:
        self.assertEqual(Size().structure("1KiB", SourceFile("x")), 1024)
        self.assertEqual(self.invalid(Size(), 0), "must be larger than zero")
        self.assertEqual(
            self.invalid(Size(minimum=1024), "1000B"), "must be at least 1024 bytes (1KiB)"
        )

    def test_one_of(self) -> None:
        # YAML reads 1.3 as a number; it is the string "1.3" here.
        self.assertEqual(OneOf(("1.2", "1.3")).structure(1.3, SourceFile("x")), "1.3")
        self.assertEqual(self.invalid(OneOf(("a", "b")), "c"), "'c' is not one of 'a', 'b'")
        self.assertEqual(self.invalid(OneOf(("a",), what="a letter"), "c"), "'c' is not a letter")


class DescribeTests(SynchronousTestCase):
    def test_key_path(self) -> None:
        self.assertEqual(key_path(["listeners", 0, "tls", "key"]), "listeners[0].tls.key")
        self.assertEqual(key_path([]), "")

    def test_unexpected_error(self) -> None:
        """
        An error that is neither L{Invalid} nor a missing key is still
        named by its place.
        """
        self.assertEqual(list(describe(RuntimeError("odd"), ("a", 1))), [("a[1]", "odd")])
