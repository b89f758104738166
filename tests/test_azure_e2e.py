"""
Entra ID credentials end to end, over real sockets on loopback: a fake
Entra ID token endpoint, a fake IMDS and App Service endpoint, a fake
Azure Monitor workspace that accepts only the token issued last, and a
gateway in this process (or under twistd) between them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional
from urllib.parse import urlencode

import yaml
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from sealgw.config import read
from sealgw.credentials.azure import (
    AzureADCredentials,
    OutboundCredentials,
    build_credentials,
)
from tests.e2e_support import (
    TEST_TIMEOUT,
    Gateway,
    HeaderMap,
    http_client,
    now_ms,
    remote_write_body,
    run_gateway,
    serve,
    wait_until,
    write_request,
)
from tests.subprocesses import ROOT, Child, free_port, spawn, stop
from tests.test_azure_fakes import (
    CLIENT,
    SECRET,
    TENANT,
    WRONG_SECRET,
    FakeAppService,
    FakeEntraID,
    FakeIMDS,
    FakeWorkspace,
    rsa_certificate,
)

EXAMPLE = os.path.join(ROOT, "docs", "examples", "azure-sidecar.yaml")
INGESTION_PATH = (
    "/dataCollectionRules/dcr-00000000000000000000000000000000/streams/"
    "Microsoft-PrometheusMetrics/api/v1/write"
)
INGESTION_QUERY = "api-version=2023-04-24"

FORM: HeaderMap = {"Content-Type": ["application/x-www-form-urlencoded"]}
REMOTE_WRITE: HeaderMap = {
    "Content-Type": ["application/x-protobuf"],
    "Content-Encoding": ["snappy"],
    "X-Prometheus-Remote-Write-Version": ["0.1.0"],
}


def write_config(test: TestCase, config: dict[str, Any]) -> str:
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, "sealgw.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return path


def secret_credentials(entra: FakeEntraID, **more: Any) -> dict[str, Any]:
    return {
        "source": "client_secret",
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "authority_host": entra.url,
        **more,
    }


class FakesMixin:
    """
    A fake Entra ID with one client (its secret registered) and a
    workspace accepting the token it issued last, served for the test.
    """

    def start_fakes(self: Any) -> None:
        self.entra = FakeEntraID()
        self.entra.secrets[CLIENT] = SECRET
        self.entra_server = serve(self, self.entra)
        self.entra.url = self.entra_server.url
        self.workspace = FakeWorkspace(lambda token: token == self.entra.current)
        self.workspace_server = serve(self, self.workspace)
        self.http = http_client(self)

    async def query(self, gateway_url: str, query: str = "up") -> tuple[int, Any, Any]:
        response = await self.http.post(
            gateway_url + "/api/v1/query", data=urlencode({"query": query}).encode(),
            headers=FORM,
        )
        body = await response.content()
        return response.code, response.headers, body


class SidecarInProcessTests(FakesMixin, TestCase):
    """
    The sidecar's shape (an C{auth: none} loopback listener, one Azure
    upstream for queries) in this process, with the credentials written
    in the file.
    """

    timeout = TEST_TIMEOUT

    def start(self, **azure: Any) -> Gateway:
        path = write_config(self, {
            "listeners": [{
                "endpoint": "tcp:0:interface=127.0.0.1",
                "auth": "none",
                "identity": "sidecar",
                "ops": True,
            }],
            "upstreams": {
                "azure-prometheus": {
                    "url": self.workspace_server.url,
                    "azure_ad": secret_credentials(self.entra, **azure),
                },
            },
            "query": {"prometheus": {"upstream": "azure-prometheus"}},
            "log": {"access": False},
            "drain_grace": "1s",
        })
        return run_gateway(self, path)

    def setUp(self) -> None:
        self.start_fakes()

    async def test_query_with_token(self) -> None:
        """
        A query without credentials on the C{auth: none} listener reaches
        the workspace with the token Entra ID issued, and its answer comes
        back.
        """
        gateway = self.start()
        await wait_until(self.healthy(gateway), what="a token")
        status, _, body = await self.query(gateway.url)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["status"], "success")
        [sent] = self.workspace.received
        self.assertEqual(sent.authorization, f"Bearer {self.entra.current}")
        self.assertEqual(sent.uri, "/api/v1/query")
        self.assertEqual(sent.body, b"query=up")
        [form] = self.entra.forms
        self.assertEqual(form["scope"], "https://prometheus.monitor.azure.com/.default")

    def healthy(self, gateway: Gateway) -> Any:
        async def check() -> Optional[dict[str, Any]]:
            response = await self.http.get(gateway.url + "/health")
            body = json.loads(await response.content())
            return body if response.code == 200 else None

        return check


def environment(entra: FakeEntraID, secret: str = SECRET) -> dict[str, str]:
    """
    The sidecar pod's environment, its authority the fake; every other
    variable the credentials read is blanked (empty counts as unset).
    """
    from sealgw.credentials.azure import ENVIRONMENT

    env = {name: "" for name in ENVIRONMENT.values()}
    env.update({
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_CLIENT_SECRET": secret,
        "AZURE_AUTHORITY_HOST": entra.url,
    })
    return env


def twistd_with(env: dict[str, str], *args: str) -> Child:
    return spawn(
        ["-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
         *args],
        **env,
    )


class SidecarExampleTests(FakesMixin, TestCase):
    """
    C{docs/examples/azure-sidecar.yaml} under twistd, with the sidecar
    pod's C{AZURE_*} environment pointing at the fake Entra ID.  The copy
    run differs from the example in the workspace's URL (a fake on
    loopback) and the port (a free one: 8080 may be taken on a shared
    test machine); that the example itself is valid as it stands is
    checked by C{sealgw check-config}.
    """

    timeout = TEST_TIMEOUT

    def setUp(self) -> None:
        self.start_fakes()

    def example_copy(self, port: int) -> str:
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        url = "https://myworkspace.eastus.prometheus.monitor.azure.com"
        self.assertEqual(text.count(url), 1)
        self.assertEqual(text.count("tcp:8080:"), 1)
        text = text.replace(url, self.workspace_server.url).replace("tcp:8080:", f"tcp:{port}:")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "azure-sidecar.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    async def test_example_end_to_end(self) -> None:
        """
        The sidecar's own request, C{POST /api/v1/query} with a form body
        and no credentials, reaches the workspace with the current token;
        C{/health} carries the sidecar's fields; nothing secret is logged.
        """
        port = free_port()
        child = twistd_with(environment(self.entra), "sealgw", "--config",
                            self.example_copy(port))
        self.addCleanup(stop, child)
        url = f"http://127.0.0.1:{port}"

        async def health() -> Optional[dict[str, Any]]:
            response = await self.http.get(url + "/health")
            body = json.loads(await response.content())
            return body if response.code == 200 else None

        report = await wait_until(health, what="the sidecar healthy")
        status, _, body = await self.query(url)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["data"]["result"][0]["value"], [1757257215, "1"])
        [sent] = self.workspace.received
        self.assertEqual(sent.authorization, f"Bearer {self.entra.current}")
        self.assertEqual((sent.method, sent.uri, sent.body), ("POST", "/api/v1/query", b"query=up"))

        self.assertEqual(report["status"], "healthy")
        self.assertIs(report["token_valid"], True)
        self.assertRegex(report["expires_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertRegex(report["time_to_expiry"], r"^0:5\d:\d\d\.\d{6}$")
        self.assertRegex(report["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        credential = report["components"]["credentials"]["azure-prometheus"]
        self.assertEqual(credential["status"], "ok")
        self.assertEqual(credential["source"], "client_secret")

        ready = await self.http.get(url + "/ready")
        self.assertEqual(ready.code, 200, await ready.content())
        self.assertEqual(await stop(child), None)
        self.assertEqual(child.exit_code, 0)
        output = (child.out + child.err).decode()
        self.assertIn("plain http", output)
        self.assertNotIn(SECRET, output)
        self.assertNotIn(self.entra.current or "-", output)

    async def test_fail_fast(self) -> None:
        """
        An authority that refuses the secret ends start-up: status 1 and
        one line naming the upstream, the credential and the authority's
        reason, without the secret.
        """
        port = free_port()
        child = twistd_with(environment(self.entra, WRONG_SECRET), "sealgw", "--config",
                            self.example_copy(port))
        self.addCleanup(stop, child)
        code = await child.ended
        self.assertEqual(code, 1)
        output = (child.out + child.err).decode()
        lines = [line for line in output.splitlines() if "cannot get" in line]
        self.assertEqual(len(lines), 1, output)
        [line] = lines
        self.assertIn("#critical]", line)
        self.assertIn(
            f"cannot get an Entra ID token for upstream 'azure-prometheus': client secret "
            f"(tenant {TENANT}, client {CLIENT}, secret from environment variable "
            f"AZURE_CLIENT_SECRET) at {self.entra.url}/{TENANT}/oauth2/v2.0/token: refused: "
            "401 invalid_client: AADSTS7000215: Invalid client secret provided.",
            line,
        )
        self.assertNotIn(WRONG_SECRET, output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(len(self.entra.forms), 1)

    async def test_fail_fast_with_workers(self) -> None:
        """
        With workers, the same: the main process, which asks for the
        daemon's tokens, is refused once and ends the daemon with status 1
        in one line naming the credential, rather than workers restarted
        for ever behind a daemon that looks alive; no worker asks too.
        """
        port = free_port()
        path = self.example_copy(port)
        with open(path, "a", encoding="utf-8") as f:
            f.write("\nworkers: 2\n")
        child = twistd_with(environment(self.entra, WRONG_SECRET), "sealgw", "--config", path)
        self.addCleanup(stop, child)
        code = await child.ended
        self.assertEqual(code, 1)
        output = (child.out + child.err).decode()
        lines = [line for line in output.splitlines() if "cannot get" in line]
        self.assertEqual(len(lines), 1, output)
        [line] = lines
        self.assertIn("#critical]", line)
        self.assertIn(
            f"cannot get an Entra ID token for upstream 'azure-prometheus': client secret "
            f"(tenant {TENANT}, client {CLIENT}",
            line,
        )
        self.assertNotIn("is serving", output)
        self.assertNotIn(WRONG_SECRET, output)
        self.assertNotIn("restarting it in", output)
        self.assertEqual(len(self.entra.forms), 1)

    async def test_example_passes_check_config(self) -> None:
        """
        The example as it stands is valid (with no C{AZURE_*} variables,
        its credentials are the managed identity).
        """
        blank = {name: "" for name in environment(self.entra)}
        child = spawn(["-m", "sealgw", "check-config", EXAMPLE], **blank)
        code = await child.ended
        self.assertEqual(code, 0, child.err)
        self.assertEqual(
            child.out.decode(), f"{EXAMPLE}: ok (1 listener(s), 1 upstream(s))\n"
        )


class DegradedAndIngestionTests(FakesMixin, TestCase):
    """
    In this process: an authority that is down at start (with
    C{start_degraded}), and remote write to an Azure Monitor ingestion
    endpoint.
    """

    timeout = TEST_TIMEOUT

    def setUp(self) -> None:
        self.start_fakes()

    def start(self, upstream: dict[str, Any], **sections: Any) -> Gateway:
        path = write_config(self, {
            "listeners": [{
                "endpoint": "tcp:0:interface=127.0.0.1",
                "auth": "none",
                "identity": "sidecar",
                "ops": True,
            }],
            "upstreams": {"azure": upstream},
            "log": {"access": False},
            "drain_grace": "1s",
            **sections,
        })
        return run_gateway(self, path)

    async def test_degraded_then_recovered(self) -> None:
        """
        While no token can be had: C{/health} and C{/ready} 503, reads and
        pushes 503 with C{Retry-After} and nothing sent upstream, counted.
        Once the authority answers again: 200, and the token is used.
        """
        self.entra.failing = 503
        gateway = self.start(
            {"url": self.workspace_server.url,
             "azure_ad": secret_credentials(self.entra, start_degraded=True)},
            query={"prometheus": {"upstream": "azure"}},
            push={"remote_write": {"upstream": "azure", "path": "/api/v1/write"}},
        )
        await wait_until(self.failed_once, what="a failed token request")
        health = await self.http.get(gateway.url + "/health")
        report = json.loads(await health.content())
        self.assertEqual(health.code, 503)
        self.assertEqual(report["status"], "unhealthy")
        self.assertIs(report["token_valid"], False)
        credential = report["components"]["credentials"]["azure"]
        self.assertEqual(credential["status"], "down")
        self.assertIn("answered 503", credential["last_error"])
        self.assertEqual((await self.http.get(gateway.url + "/ready")).code, 503)

        status, headers, body = await self.query(gateway.url)
        self.assertEqual(status, 503, body)
        self.assertGreaterEqual(int(headers.getRawHeaders("retry-after")[0]), 1)
        push = await self.http.post(
            gateway.url + "/api/v1/write",
            data=remote_write_body(write_request([({"__name__": "x"}, [(1.0, now_ms())])])),
            headers=REMOTE_WRITE,
        )
        await push.content()
        self.assertEqual(push.code, 503)
        self.assertGreaterEqual(int(push.headers.getRawHeaders("retry-after")[0]), 1)
        self.assertEqual(self.workspace.received, [])
        without = gateway.registry.get_sample_value(
            "sealgw_outbound_requests_without_token_total", {"upstream": "azure"}
        )
        self.assertEqual(without, 2)

        self.entra.failing = None

        async def healthy() -> Optional[bool]:
            response = await self.http.get(gateway.url + "/health")
            await response.content()
            return True if response.code == 200 else None

        await wait_until(healthy, what="a token after the authority's recovery")
        self.assertEqual((await self.http.get(gateway.url + "/ready")).code, 200)
        status, _, body = await self.query(gateway.url)
        self.assertEqual(status, 200, body)
        self.assertEqual(self.workspace.received[-1].authorization,
                         f"Bearer {self.entra.current}")

    async def test_no_azure_no_credentials_component(self) -> None:
        """
        Without C{azure_ad} anywhere, C{/health} is as it was: no
        credentials component, no sidecar fields.
        """
        gateway = self.start({"url": self.workspace_server.url},
                             query={"prometheus": {"upstream": "azure"}})
        response = await self.http.get(gateway.url + "/health")
        report = json.loads(await response.content())
        self.assertEqual(response.code, 200)
        self.assertEqual(report["status"], "ok")
        self.assertNotIn("credentials", report["components"])
        self.assertNotIn("token_valid", report)

    async def failed_once(self) -> Optional[bool]:
        return True if self.entra.forms else None

    async def test_ingestion_url_as_is(self) -> None:
        """
        Remote write to a data collection endpoint: the upstream's URL,
        with its rule's path and C{api-version} query string, is used as
        it is, with an ingestion-scoped token.
        """
        url = f"{self.workspace_server.url}{INGESTION_PATH}?{INGESTION_QUERY}"
        gateway = self.start(
            {"url": url,
             "azure_ad": secret_credentials(self.entra,
                                            scope="https://monitor.azure.com/.default")},
            push={"remote_write": {"upstream": "azure"}},
        )
        body = remote_write_body(write_request([({"__name__": "up", "job": "a"},
                                                 [(1.0, now_ms())])]))
        response = await self.http.post(
            gateway.url + "/api/v1/push",
            data=body,
            headers=REMOTE_WRITE,
        )
        self.assertEqual(response.code, 204, await response.content())
        [sent] = self.workspace.received
        self.assertEqual(sent.uri, f"{INGESTION_PATH}?{INGESTION_QUERY}")
        self.assertEqual(sent.body, body)
        self.assertEqual(sent.authorization, f"Bearer {self.entra.current}")
        [form] = self.entra.forms
        self.assertEqual(form["scope"], "https://monitor.azure.com/.default")


class SourcesTests(TestCase):
    """
    Each kind of credential against its fake, over the one HTTP client.
    """

    timeout = TEST_TIMEOUT

    async def credential(self, azure: dict[str, Any]) -> AzureADCredentials:
        config = read({
            "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1"}],
            "upstreams": {"azure": {"url": "https://w.example", "azure_ad": azure}},
        })
        service: OutboundCredentials = build_credentials(
            config.upstreams, reactor, registry=CollectorRegistry(), environ={}
        )
        service.startService()
        self.addCleanup(service.stopService)
        [credential] = service.credentials.values()
        self.assertIsNone(await credential.started, credential.last_error)
        return credential

    def entra(self) -> FakeEntraID:
        entra = FakeEntraID()
        entra.url = serve(self, entra).url
        return entra

    async def test_certificate(self) -> None:
        """
        The client assertion is signed with the certificate's key and names
        it by its thumbprint; the fake verifies both.
        """
        entra = self.entra()
        pem, public, x5t = rsa_certificate()
        entra.certificates[CLIENT] = (public, x5t)
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(pem)
        credential = await self.credential({
            "tenant_id": TENANT, "client_id": CLIENT, "client_certificate": path,
            "authority_host": entra.url,
        })
        self.assertEqual(credential.source.kind, "client_certificate")
        self.assertEqual(await credential.authorization(), f"Bearer {entra.current}".encode())
        [form] = entra.forms
        self.assertNotIn("client_secret", form)

    async def test_certificate_not_registered(self) -> None:
        entra = self.entra()
        pem, _, _ = rsa_certificate()
        other, public, x5t = rsa_certificate("other")
        entra.certificates[CLIENT] = (public, x5t)
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(pem)
        config = read({
            "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1"}],
            "upstreams": {"azure": {"url": "https://w.example", "azure_ad": {
                "tenant_id": TENANT, "client_id": CLIENT, "client_certificate": path,
                "authority_host": entra.url}}},
        })
        service = build_credentials(config.upstreams, reactor, environ={})
        service.startService()
        self.addCleanup(service.stopService)
        [credential] = service.credentials.values()
        error = await credential.started
        self.assertIn("401 invalid_client: AADSTS700027", str(error))

    async def test_workload_identity_file_reread(self) -> None:
        """
        The federated token file is read for every token request: after
        Kubernetes rotates it, the next request carries the new one.
        """
        entra = self.entra()
        entra.federated[CLIENT] = "federated-1"
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("federated-1\n")
        credential = await self.credential({
            "tenant_id": TENANT, "client_id": CLIENT, "federated_token_file": path,
            "authority_host": entra.url,
        })
        self.assertEqual(credential.source.kind, "workload_identity")
        first = entra.current
        with open(path, "w") as f:
            f.write("federated-2\n")
        entra.federated[CLIENT] = "federated-2"
        await credential.refresh()
        self.assertIsNone(credential.last_error)
        self.assertNotEqual(entra.current, first)
        self.assertEqual([f["client_assertion"] for f in entra.forms],
                         ["federated-1", "federated-2"])
        self.assertEqual(await credential.authorization(), f"Bearer {entra.current}".encode())

    async def test_managed_identity(self) -> None:
        """
        IMDS: a GET with C{Metadata: true} for the resource, the
        user-assigned identity's client id, and an answer of strings.
        """
        imds = FakeIMDS(identities=(CLIENT,))
        server = serve(self, imds)
        credential = await self.credential({
            "source": "managed_identity", "client_id": CLIENT, "imds_endpoint": server.url,
            "scope": "https://prometheus.monitor.azure.com/.default",
        })
        self.assertEqual(await credential.authorization(), f"Bearer {imds.current}".encode())
        [query] = imds.queries
        self.assertEqual(query, {"api-version": "2018-02-01",
                                 "resource": "https://prometheus.monitor.azure.com",
                                 "client_id": CLIENT})
        assert credential.token is not None
        lifetime = credential.token.expires_at - reactor.seconds()
        self.assertTrue(3500 < lifetime <= 3599, lifetime)

    async def test_managed_identity_unknown(self) -> None:
        imds = FakeIMDS(identities=(None,))
        server = serve(self, imds)
        config = read({
            "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1"}],
            "upstreams": {"azure": {"url": "https://w.example", "azure_ad": {
                "client_id": CLIENT, "imds_endpoint": server.url}}},
        })
        service = build_credentials(config.upstreams, reactor, environ={})
        service.startService()
        self.addCleanup(service.stopService)
        [credential] = service.credentials.values()
        error = await credential.started
        self.assertEqual(str(error), "refused: 400 invalid_request: Identity not found")

    async def test_app_service(self) -> None:
        fake = FakeAppService("header-secret")
        server = serve(self, fake)
        credential = await self.credential({
            "identity_endpoint": server.url + "/msi/token", "identity_header": "header-secret",
        })
        self.assertEqual(
            await credential.authorization(), f"Bearer {fake.issued[-1].value}".encode()
        )
        assert credential.token is not None
        lifetime = credential.token.expires_at - reactor.seconds()
        self.assertTrue(3500 < lifetime <= 3600, lifetime)
