"""
The compose demo in C{docker/}, checked without a Docker engine: the file
is a valid compose file; everything it mounts or builds from exists; the
sealgw configuration in it passes C{sealgw check-config}; every host and
port a configuration names is a service of the demo listening there; the
tokens the clients hold are the ones sealgw knows, for the right tenant;
Grafana's provisioning parses and reads through sealgw; the Prometheus
agent's configuration passes C{promtool}; and the OpenTelemetry example
really sends traces and logs through a gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any, Optional

import yaml
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.e2e_support import start_gateway
from tests.subprocesses import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = os.path.join(ROOT, "docker")
COMPOSE = os.path.join(DOCKER, "compose.yaml")
SEALGW_CONFIG = os.path.join(DOCKER, "sealgw", "sealgw.yaml")
TOKENS = os.path.join(DOCKER, "sealgw", "bearer-tokens.yaml")
DATASOURCES = os.path.join(DOCKER, "grafana", "provisioning", "datasources", "sealgw.yaml")
DASHBOARD_PROVIDERS = os.path.join(DOCKER, "grafana", "provisioning", "dashboards", "sealgw.yaml")
OTEL_EXAMPLE = os.path.join(DOCKER, "otel-example", "otel_example.py")


def require(condition: bool, message: str) -> None:
    """
    Skip when a tool is missing; in CI (where C{.ci/run} installs it)
    that is a failure.
    """
    if condition:
        return
    if os.environ.get("CI"):
        raise AssertionError(message + " -- CI is set, so this is a failure, not a skip")
    raise SkipTest(message)


def read_yaml(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def compose(path: str = COMPOSE) -> dict[str, Any]:
    doc = read_yaml(path)
    assert isinstance(doc, dict)
    return doc


def check_config(path: str) -> subprocess.CompletedProcess[str]:
    """
    C{sealgw check-config PATH}, as a user runs it.
    """
    return subprocess.run(
        [sys.executable, "-m", "sealgw", "check-config", path],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )


# -- mounts ------------------------------------------------------------------------


def volume_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """
    Each of a service's volumes as C{(type, source, target)}: C{bind} for a
    path on the host, C{volume} for a named volume.
    """
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            source, target = entry.get("source", ""), entry["target"]
            kind = entry.get("type", "volume")
        yield kind, source, target


def secret_targets(doc: dict[str, Any], service: dict[str, Any]) -> dict[str, str]:
    """
    Where each secret of a service is mounted in its container, and the
    file on the host it comes from.
    """
    found = {}
    for entry in service.get("secrets", []):
        name = entry if isinstance(entry, str) else entry["source"]
        target = name if isinstance(entry, str) else entry.get("target", name)
        if not target.startswith("/"):
            target = "/run/secrets/" + target
        found[target] = doc["secrets"][name]["file"]
    return found


def container_files(doc: dict[str, Any], name: str) -> dict[str, str]:
    """
    The files a service's container sees, by container path, each mapped to
    the file on the host it is: bind mounts (files and whole directories)
    and secrets.
    """
    service = doc["services"][name]
    found: dict[str, str] = {}
    for kind, source, target in volume_mounts(service):
        if kind != "bind":
            continue
        host = os.path.normpath(os.path.join(DOCKER, source))
        if os.path.isdir(host):
            for folder, _, files in os.walk(host):
                for one in files:
                    path = os.path.join(folder, one)
                    found[os.path.join(target, os.path.relpath(path, host))] = path
        else:
            found[target] = host
    for target, source in secret_targets(doc, service).items():
        found[target] = os.path.normpath(os.path.join(DOCKER, source))
    return found


class ComposeFileTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        The compose file parses and validates as the Compose Specification
        (the compose_spec library: unknown keys, wrong types and unknown
        values are errors) and its references resolve.
        """
        try:
            from compose_spec import PyCompose
        except ImportError:
            require(False, "compose-spec is not installed (pip install compose-spec)")
        with open(COMPOSE, encoding="utf-8") as f:
            parsed = PyCompose.from_yaml(f.read())
        parsed.validate()
        self.assertEqual(sorted(parsed.service_names()), sorted(compose()["services"]))

    def test_invalid_is_refused(self) -> None:
        """
        The check can fail: a misspelt key is an error.
        """
        try:
            from compose_spec import PyCompose
        except ImportError:
            require(False, "compose-spec is not installed (pip install compose-spec)")
        with open(COMPOSE, encoding="utf-8") as f:
            text = f.read().replace("    depends_on:", "    depend_on:", 1)
        self.assertRaises(ValueError, PyCompose.from_yaml, text)

    def test_mounted_files_exist(self) -> None:
        """
        Every bind mount, secret file, build context and Dockerfile exists.
        """
        doc = compose()
        missing = []
        for name, service in doc["services"].items():
            for kind, source, _ in volume_mounts(service):
                if kind == "bind" and not os.path.exists(os.path.join(DOCKER, source)):
                    missing.append(f"services.{name}.volumes: {source}")
            build = service.get("build")
            if build is not None:
                build = {"context": build} if isinstance(build, str) else build
                context = os.path.join(DOCKER, build["context"])
                dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
                for path in (context, dockerfile):
                    if not os.path.exists(path):
                        missing.append(f"services.{name}.build: {os.path.relpath(path, DOCKER)}")
        for name, secret in doc.get("secrets", {}).items():
            if not os.path.isfile(os.path.join(DOCKER, secret["file"])):
                missing.append(f"secrets.{name}: {secret['file']}")
        self.assertEqual(missing, [])

    def test_references_are_defined(self) -> None:
        """
        Named volumes and secrets used by services are declared (and every
        declared one is used); depends_on names services; a service waited
        for with service_healthy has a health check (its own, or its
        image's: the sealgw image's HEALTHCHECK).
        """
        doc = compose()
        problems = []
        used_volumes, used_secrets = set(), set()
        with open(os.path.join(DOCKER, "Dockerfile"), encoding="utf-8") as f:
            image_has_healthcheck = "\nHEALTHCHECK " in f.read()
        for name, service in doc["services"].items():
            for kind, source, _ in volume_mounts(service):
                if kind == "volume":
                    used_volumes.add(source)
                    if source not in doc.get("volumes", {}):
                        problems.append(f"services.{name}: volume {source} is not declared")
            for entry in service.get("secrets", []):
                secret = entry if isinstance(entry, str) else entry["source"]
                used_secrets.add(secret)
                if secret not in doc.get("secrets", {}):
                    problems.append(f"services.{name}: secret {secret} is not declared")
            for other, condition in service.get("depends_on", {}).items():
                if other not in doc["services"]:
                    problems.append(f"services.{name}.depends_on: no service {other}")
                    continue
                target = doc["services"][other]
                builds_sealgw = (
                    isinstance(target.get("build"), dict)
                    and target["build"].get("dockerfile") == "docker/Dockerfile"
                )
                healthy = "healthcheck" in target or (builds_sealgw and image_has_healthcheck)
                if condition.get("condition") == "service_healthy" and not healthy:
                    problems.append(f"services.{name}.depends_on: {other} has no health check")
        problems += [f"volume {v} is not used" for v in set(doc.get("volumes", {})) - used_volumes]
        problems += [f"secret {s} is not used" for s in set(doc.get("secrets", {})) - used_secrets]
        self.assertEqual(problems, [])

    def test_published_ports_on_loopback(self) -> None:
        """
        Only sealgw and Grafana are published, on the host's loopback, at
        ports they listen on: every write and read goes through sealgw.
        """
        doc = compose()
        published = {
            name: service["ports"]
            for name, service in doc["services"].items()
            if "ports" in service
        }
        self.assertEqual(sorted(published), ["grafana", "sealgw"])
        ports = service_ports(doc)
        for name, entries in published.items():
            for entry in entries:
                host_ip, _, container = str(entry).split(":")
                self.assertEqual(host_ip, "127.0.0.1", f"{name}: {entry}")
                self.assertIn(int(container), ports[name], f"{name}: {entry}")


# -- who listens where ----------------------------------------------------------


def endpoint_port(endpoint: str) -> int:
    """
    The port of a Twisted endpoint string (tcp:8080:interface=...).
    """
    return int(endpoint.split(":")[1])


def address_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def service_ports(doc: dict[str, Any]) -> dict[str, set[int]]:
    """
    The ports each service of the demo listens on, read from its own
    configuration file (or its software's default where it has none).
    """
    sealgw = read_yaml(SEALGW_CONFIG)
    mimir = read_yaml(os.path.join(DOCKER, "mimir", "mimir.yaml"))
    loki = read_yaml(os.path.join(DOCKER, "loki", "loki.yaml"))
    tempo = read_yaml(os.path.join(DOCKER, "tempo", "tempo.yaml"))
    ports = {
        "sealgw": {endpoint_port(one["endpoint"]) for one in sealgw["listeners"]}
        | {endpoint_port(sealgw["admin"]["endpoint"])},
        "mimir": {mimir["server"]["http_listen_port"]},
        "loki": {loki["server"]["http_listen_port"]},
        "tempo": {
            tempo["server"]["http_listen_port"],
            address_port(
                tempo["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
            ),
        },
        # Their defaults: nothing in the demo changes them.
        "grafana": {3000},
        "prometheus-agent": {9090},
        "redis": {6379},
    }
    unknown = set(ports) - set(doc["services"])
    assert not unknown, unknown
    return ports


def referenced_urls() -> Iterator[tuple[str, str]]:
    """
    Every URL a configuration of the demo names, with where it is named.
    """
    doc = compose()
    sealgw = read_yaml(SEALGW_CONFIG)
    for name, upstream in sealgw.get("upstreams", {}).items():
        if "url" in upstream:
            yield f"sealgw.yaml upstreams.{name}", upstream["url"]
    shared = sealgw.get("auth", {}).get("shared_limits")
    if shared is not None:
        yield "sealgw.yaml auth.shared_limits.redis", shared["redis"]
    prometheus = read_yaml(os.path.join(DOCKER, "prometheus", "prometheus.yaml"))
    for job in prometheus.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                yield f"prometheus.yaml job {job['job_name']}", "http://" + target
    for index, remote in enumerate(prometheus.get("remote_write", [])):
        yield f"prometheus.yaml remote_write[{index}]", remote["url"]
    for source in read_yaml(DATASOURCES)["datasources"]:
        yield f"datasource {source['name']}", source["url"]
    for name, service in doc["services"].items():
        command = service.get("command", [])
        for flag in ("--url", "--endpoint"):
            if isinstance(command, list) and flag in command:
                yield f"services.{name}.command {flag}", command[command.index(flag) + 1]


class WiringTests(SynchronousTestCase):
    def test_every_host_and_port_is_a_service(self) -> None:
        """
        Every URL in the demo's configurations names a service of the
        compose file (or the container itself) at a port it listens on.
        """
        doc = compose()
        ports = service_ports(doc)
        problems = []
        for where, url in referenced_urls():
            parsed = urllib.parse.urlsplit(url)
            host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
            if where.startswith("prometheus.yaml job prometheus") and host == "localhost":
                host = "prometheus-agent"
            if host not in doc["services"]:
                problems.append(f"{where}: {url}: no service {host}")
            elif port not in ports.get(host, set()):
                problems.append(f"{where}: {url}: {host} listens on {sorted(ports[host])}")
        self.assertEqual(problems, [])

    def test_writers_and_readers_go_through_sealgw(self) -> None:
        """
        No writer or reader talks to Mimir, Loki or Tempo but sealgw.
        """
        direct = [
            (where, url)
            for where, url in referenced_urls()
            if not where.startswith("sealgw.yaml")
            and urllib.parse.urlsplit(url).hostname in ("mimir", "loki", "tempo")
        ]
        self.assertEqual(direct, [])

    def test_backends_write_to_their_volumes(self) -> None:
        """
        Mimir, Loki and Tempo keep their data under a path their service
        mounts a named volume at (a container's own filesystem would lose
        it, or refuse it).
        """
        doc = compose()
        checks = {
            "mimir": read_yaml(os.path.join(DOCKER, "mimir", "mimir.yaml")),
            "loki": read_yaml(os.path.join(DOCKER, "loki", "loki.yaml")),
            "tempo": read_yaml(os.path.join(DOCKER, "tempo", "tempo.yaml")),
        }
        problems = []
        for name, config in checks.items():
            targets = [t for kind, _, t in volume_mounts(doc["services"][name]) if kind == "volume"]
            for key, path in paths_in(config):
                if not any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets):
                    problems.append(f"{name}: {key}: {path} is on no volume ({targets})")
        self.assertEqual(problems, [])

    def test_config_files_are_where_commands_look(self) -> None:
        """
        Each -config.file / --config.file / --config a command names is a
        file mounted into that container; the sealgw image's command reads
        /etc/sealgw/sealgw.yaml, which the sealgw service mounts.
        """
        doc = compose()
        problems = []
        for name, service in doc["services"].items():
            files = container_files(doc, name)
            command = service.get("command", [])
            for word in command if isinstance(command, list) else []:
                match = re.match(r"--?config(?:\.file)?=(.+)", word)
                if match and match.group(1) not in files:
                    problems.append(f"{name}: {match.group(1)} is not mounted")
        self.assertIn("/etc/sealgw/sealgw.yaml", container_files(doc, "sealgw"))
        self.assertEqual(problems, [])


def paths_in(config: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """
    Every directory a backend's configuration tells it to write to.
    """
    if isinstance(config, dict):
        for name, value in config.items():
            path = f"{key}.{name}" if key else str(name)
            if (
                isinstance(value, str)
                and value.startswith("/")
                and (
                    name in ("dir", "path", "data_dir", "sync_dir", "path_prefix")
                    or name.endswith("_directory")
                )
            ):
                yield path, value
            else:
                yield from paths_in(value, path)
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from paths_in(value, f"{key}[{index}]")


# -- sealgw's configuration and tokens --------------------------------------------


class SealgwConfigTests(SynchronousTestCase):
    def test_check_config(self) -> None:
        """
        docker/sealgw/sealgw.yaml passes sealgw check-config, token file
        and all.
        """
        result = check_config(SEALGW_CONFIG)
        self.assertEqual((result.returncode, result.stderr), (0, ""))

    def test_check_config_fails(self) -> None:
        """
        The check can fail: an upstream with no URL is a problem.
        """
        directory = os.path.abspath(self.mktemp())
        shutil.copytree(os.path.join(DOCKER, "sealgw"), directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, encoding="utf-8") as f:
            text = f.read().replace("url: http://loki:3100", "urll: http://loki:3100")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        result = check_config(path)
        self.assertEqual(result.returncode, 1)
        self.assertIn("upstreams.loki", result.stderr)

    def test_image_reads_the_mounted_config(self) -> None:
        """
        The token file the config names is in the folder mounted beside it.
        """
        config = read_yaml(SEALGW_CONFIG)
        path = config["auth"]["token_file"]["path"]
        self.assertFalse(os.path.isabs(path))
        self.assertTrue(os.path.isfile(os.path.join(DOCKER, "sealgw", path)))


def token_entries() -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in read_yaml(TOKENS)}


def identity_of(token_file: str) -> Optional[dict[str, Any]]:
    """
    The token-file entry whose token is the one in C{token_file}.
    """
    with open(token_file, encoding="utf-8") as f:
        token = f.read().strip()
    digest = hashlib.sha256(token.encode()).hexdigest()
    for entry in token_entries().values():
        if entry.get("token_sha256") == digest or entry.get("token") == token:
            return entry
    return None


TENANT_IN_NAME = re.compile(r"\(([a-z0-9-]+)\)$")


class TokenTests(SynchronousTestCase):
    def test_every_client_token_is_known(self) -> None:
        """
        Each client's token file is a token of the identity named like it,
        and every identity has one client: nobody is left out or locked
        out.
        """
        doc = compose()
        problems = []
        for name, secret in doc["secrets"].items():
            entry = identity_of(os.path.join(DOCKER, secret["file"]))
            if entry is None or entry["name"] != name:
                problems.append(f"secret {name}: its token is {entry and entry['name']}'s")
        unused = set(token_entries()) - set(doc["secrets"])
        self.assertEqual((problems, sorted(unused)), ([], []))

    def test_tenants(self) -> None:
        """
        Two teams write and read their own tenant; the platform's Prometheus
        agent and its datasource are the platform tenant; nobody may use
        more than one tenant, so no datasource sees another's data.
        """
        tenants = {name: entry.get("tenants") for name, entry in token_entries().items()}
        self.assertEqual(
            tenants,
            {
                "generator-team-a": ["team-a"],
                "generator-team-b": ["team-b"],
                "otel-team-a": ["team-a"],
                "otel-team-b": ["team-b"],
                "prometheus-agent": ["platform"],
                "grafana-team-a": ["team-a"],
                "grafana-team-b": ["team-b"],
                "grafana-platform": ["platform"],
            },
        )

    def test_each_datasource_reads_its_tenant(self) -> None:
        """
        A datasource named "... (team-a)" reads with a token whose only
        tenant is team-a.
        """
        doc = compose()
        grafana = container_files(doc, "grafana")
        problems = []
        for source in read_yaml(DATASOURCES)["datasources"]:
            header = source.get("secureJsonData", {}).get("httpHeaderValue1", "")
            match = re.fullmatch(r"Bearer \$__file\{(/[^}]+)\}", header)
            if source.get("jsonData", {}).get("httpHeaderName1") != "Authorization" or not match:
                problems.append(f"{source['name']}: no bearer token from a file")
                continue
            if match.group(1) not in grafana:
                problems.append(f"{source['name']}: {match.group(1)} is not mounted in grafana")
                continue
            entry = identity_of(grafana[match.group(1)])
            wanted = TENANT_IN_NAME.search(source["name"])
            if entry is None or wanted is None or entry.get("tenants") != [wanted.group(1)]:
                problems.append(f"{source['name']}: reads as {entry}")
        self.assertEqual(problems, [])

    def test_clients_read_mounted_tokens(self) -> None:
        """
        Every --token-file and credentials_file a client names is mounted
        into its container.
        """
        doc = compose()
        problems = []
        for name, service in doc["services"].items():
            command = service.get("command", [])
            if isinstance(command, list) and "--token-file" in command:
                path = command[command.index("--token-file") + 1]
                if path not in container_files(doc, name):
                    problems.append(f"{name}: {path} is not mounted")
        prometheus = read_yaml(os.path.join(DOCKER, "prometheus", "prometheus.yaml"))
        for remote in prometheus["remote_write"]:
            path = remote["authorization"]["credentials_file"]
            if path not in container_files(doc, "prometheus-agent"):
                problems.append(f"prometheus-agent: {path} is not mounted")
        self.assertEqual(problems, [])


# -- Grafana ----------------------------------------------------------------------


class GrafanaProvisioningTests(SynchronousTestCase):
    def test_datasources(self) -> None:
        """
        The datasources file parses; uids and names are unique; each one
        is a Prometheus, Loki or Tempo datasource of a tenant, and what they
        link to (traces to logs, logs to traces) exists.
        """
        doc = read_yaml(DATASOURCES)
        self.assertEqual(doc["apiVersion"], 1)
        sources = doc["datasources"]
        uids = [s["uid"] for s in sources]
        names = [s["name"] for s in sources]
        self.assertEqual(len(set(uids)), len(uids))
        self.assertEqual(len(set(names)), len(names))
        self.assertEqual(sum(1 for s in sources if s.get("isDefault")), 1)
        links = []
        for source in sources:
            self.assertIn(source["type"], ("prometheus", "loki", "tempo"))
            self.assertEqual(source["access"], "proxy")
            data = source.get("jsonData", {})
            links += [field["datasourceUid"] for field in data.get("derivedFields", [])]
            if "tracesToLogsV2" in data:
                links.append(data["tracesToLogsV2"]["datasourceUid"])
        self.assertEqual([uid for uid in links if uid not in uids], [])
        # Both teams can look at metrics, logs and traces.
        for tenant in ("team-a", "team-b"):
            kinds = sorted(s["type"] for s in sources if s["name"].endswith(f"({tenant})"))
            self.assertEqual(kinds, ["loki", "prometheus", "tempo"])

    def test_dashboard_provider(self) -> None:
        """
        The dashboards provider reads a folder Grafana's service mounts,
        which holds the demo's dashboards; the home dashboard is one.
        """
        doc = compose()
        providers = read_yaml(DASHBOARD_PROVIDERS)
        self.assertEqual(providers["apiVersion"], 1)
        files = container_files(doc, "grafana")
        for provider in providers["providers"]:
            folder = provider["options"]["path"].rstrip("/") + "/"
            found = [path for path in files if path.startswith(folder) and path.endswith(".json")]
            self.assertEqual(len(found), 2, found)
            for path in found:
                with open(files[path], encoding="utf-8") as f:
                    json.load(f)
        home = doc["services"]["grafana"]["environment"][
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
        ]
        self.assertIn(home, files)
        provisioning = [
            t for kind, _, t in volume_mounts(doc["services"]["grafana"]) if kind == "bind"
        ]
        self.assertIn("/etc/grafana/provisioning", provisioning)


# -- the Prometheus agent ------------------------------------------------------------


class PrometheusAgentTests(SynchronousTestCase):
    def test_promtool(self) -> None:
        """
        promtool accepts the agent's configuration in agent mode, and the
        service runs Prometheus in agent mode.
        """
        promtool = shutil.which("promtool")
        require(
            promtool is not None, "promtool is not on PATH (Debian: apt-get install prometheus)"
        )
        assert promtool is not None
        path = os.path.join(DOCKER, "prometheus", "prometheus.yaml")
        result = subprocess.run(
            [promtool, "check", "config", "--agent", "--syntax-only", path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("--agent", compose()["services"]["prometheus-agent"]["command"])

    def test_promtool_fails(self) -> None:
        """
        The check can fail: a scrape job without a name is refused.
        """
        promtool = shutil.which("promtool")
        require(
            promtool is not None, "promtool is not on PATH (Debian: apt-get install prometheus)"
        )
        assert promtool is not None
        path = os.path.join(os.path.abspath(self.mktemp()) + ".yaml")
        with open(os.path.join(DOCKER, "prometheus", "prometheus.yaml"), encoding="utf-8") as f:
            text = f.read().replace("job_name: sealgw", "jobname: sealgw")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        result = subprocess.run(
            [promtool, "check", "config", "--agent", "--syntax-only", path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(result.returncode, 0)


# -- the OpenTelemetry SDK example --------------------------------------------------


class OTelExampleTests(TestCase):
    timeout = 120

    async def test_sends_traces_and_logs(self) -> None:
        """
        docker/otel-example/otel_example.py, run as its container runs it,
        sends traces and logs through sealgw with its token, to its
        identity's tenant.
        """
        gateway = await start_gateway(
            self,
            {
                "upstreams": {"files": {"type": "file", "directory": "data"}},
                "push": {"otlp_traces": {"upstream": "files"}, "otlp_logs": {"upstream": "files"}},
            },
            tokens=[
                {
                    "name": "otel-team-a",
                    "token": "otel-example-token-0123456789",
                    "tenants": ["team-a"],
                }
            ],
        )
        token_file = os.path.join(gateway.directory, "token")
        with open(token_file, "w", encoding="utf-8") as f:
            f.write("otel-example-token-0123456789\n")
        command = [
            sys.executable,
            OTEL_EXAMPLE,
            "--endpoint",
            gateway.url,
            "--token-file",
            token_file,
            "--service-name",
            "shop-test",
            "--count",
            "3",
            "--interval",
            "0",
        ]
        result = await deferToThread(
            subprocess.run, command, capture_output=True, text=True, timeout=60, env=child_env()
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("3 checkout(s) sent", result.stderr)
        spans, logs = [], []
        for signal, into in (("otlp_traces", spans), ("otlp_logs", logs)):
            path = os.path.join(gateway.directory, "data", signal, "team-a.jsonl")
            with open(path, encoding="utf-8") as f:
                for line in f:
                    record = json.loads(line)["record"]
                    attributes = {a["key"]: a["value"] for a in record["resource"]["attributes"]}
                    self.assertEqual(attributes["service.name"], {"stringValue": "shop-test"})
                    for scope in record.get("scopeSpans", []):
                        into.extend(scope["spans"])
                    for scope in record.get("scopeLogs", []):
                        into.extend(scope["logRecords"])
        self.assertEqual(len([s for s in spans if s["name"] == "POST /checkout"]), 3)
        self.assertGreaterEqual(len(logs), 6)
        trace_ids = {s["traceId"] for s in spans}
        self.assertTrue(all(log.get("traceId") in trace_ids for log in logs), logs[:2])

    def test_container_runs_the_script(self) -> None:
        """
        The example's image copies the script its services run.
        """
        with open(os.path.join(DOCKER, "otel-example", "Dockerfile"), encoding="utf-8") as f:
            dockerfile = f.read()
        self.assertIn("COPY otel_example.py /app/otel_example.py", dockerfile)
        self.assertIn("opentelemetry-exporter-otlp-proto-http", dockerfile)
        for name in ("otel-team-a", "otel-team-b"):
            self.assertEqual(
                compose()["services"][name]["command"][:2], ["python", "/app/otel_example.py"]
            )
