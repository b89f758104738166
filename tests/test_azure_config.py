"""
The C{azure_ad} section and the environment it falls back on, the
credential kinds' token requests and answers, the client assertion, and
sidecar mode's C{auth: none} listeners (configuration, site, gate).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Optional, cast
from urllib.parse import parse_qs

from joserfc import jwt
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from sealgw.auth import Forbidden, Unauthorized, build_gate, listener_identity
from sealgw.config import ConfigError, ListenerConfig, Secret, read
from sealgw.config._azure import INGESTION_SCOPE, QUERY_SCOPE, AzureADConfig
from sealgw.credentials.azure import (
    AppServiceIdentitySource,
    ClientCertificateSource,
    ClientSecretSource,
    ManagedIdentitySource,
    TokenRefused,
    TokenUnavailable,
    WorkloadIdentitySource,
    build_credentials,
    load_certificate,
    parse_answer,
    resolve,
)
from sealgw.credentials.azure._assertion import CLIENT_ASSERTION_TYPE, b64url
from sealgw.web import GatewayMetrics, GatewaySite
from tests.idp import fake_request, make_gate
from tests.test_azure_fakes import CLIENT, SECRET, TENANT, ec_certificate, rsa_certificate

LISTENER = {"endpoint": "tcp:0:interface=127.0.0.1"}


def config_of(azure: Any, **upstream: Any) -> Any:
    return read({
        "listeners": [LISTENER],
        "upstreams": {"azure": {"url": "https://w.example", "azure_ad": azure, **upstream}},
    })


def problems(data: dict[str, Any]) -> list[str]:
    try:
        read(data)
    except ConfigError as e:
        return e.problems
    raise AssertionError("no problem found")


def azure_problems(azure: Any, **upstream: Any) -> list[str]:
    return problems({
        "listeners": [LISTENER],
        "upstreams": {"azure": {"url": "https://w.example", "azure_ad": azure, **upstream}},
    })


class AzureSectionTests(SynchronousTestCase):
    def test_empty_means_environment(self) -> None:
        upstream = config_of({}).upstreams["azure"]
        self.assertEqual(upstream.azure_ad, AzureADConfig())
        self.assertEqual(upstream.azure_ad.scope, QUERY_SCOPE)
        self.assertEqual(upstream.azure_ad.refresh_interval, 1800.0)
        self.assertFalse(upstream.azure_ad.start_degraded)

    def test_keys(self) -> None:
        azure = config_of({
            "tenant_id": TENANT, "client_id": CLIENT, "client_secret": {"env": "HOME"},
            "scope": INGESTION_SCOPE, "refresh_interval": "10m", "start_degraded": True,
            "authority_host": "login.microsoftonline.us",
        }).upstreams["azure"].azure_ad
        self.assertEqual(azure.refresh_interval, 600.0)
        self.assertEqual(azure.client_secret, Secret(os.environ["HOME"], "environment variable HOME"))
        self.assertEqual(azure.authority_host, "https://login.microsoftonline.us")

    def test_authority(self) -> None:
        """
        https, or plain http on a loopback address only.
        """
        for good, expected in [
            ("https://login.chinacloudapi.cn/", "https://login.chinacloudapi.cn"),
            ("http://127.0.0.1:8443", "http://127.0.0.1:8443"),
            ("http://localhost:1", "http://localhost:1"),
            ("http://[::1]:1", "http://[::1]:1"),
        ]:
            azure = config_of({"authority_host": good}).upstreams["azure"].azure_ad
            self.assertEqual(azure.authority_host, expected)
        self.assertEqual(azure_problems({"authority_host": "http://login.example"}), [
            "<config>: upstreams.azure.azure_ad.authority_host: 'http://login.example': the "
            "authority must be https:// (http:// only on a loopback address)",
        ])
        self.assertEqual(len(azure_problems({"authority_host": "ftp://x"})), 1)

    def test_scope(self) -> None:
        self.assertEqual(azure_problems({"scope": "https://monitor.azure.com"}), [
            "<config>: upstreams.azure.azure_ad.scope: 'https://monitor.azure.com' is not a "
            "resource's /.default scope",
        ])

    def test_unknown_key(self) -> None:
        [problem] = azure_problems({"tenant": "x"})
        self.assertIn("upstreams.azure.azure_ad.tenant: unknown key", problem)

    def test_not_with_static_credentials(self) -> None:
        self.assertEqual(azure_problems({}, bearer_token="t"), [
            "<config>: upstreams.azure.azure_ad: azure_ad presents its own token: give no "
            "basic_auth or bearer_token with it",
        ])


class ListenerAuthTests(SynchronousTestCase):
    def listener(self, **fields: Any) -> ListenerConfig:
        listener: ListenerConfig = read({"listeners": [fields]}).listeners[0]
        return listener

    def test_loopback_and_unix(self) -> None:
        for endpoint in [
            "tcp:8080:interface=127.0.0.1",
            "tcp:8080:interface=127.0.0.2",
            r"tcp6:8080:interface=\:\:1",
            "unix:/run/sealgw.sock",
        ]:
            listener = self.listener(endpoint=endpoint, auth="none", identity="sidecar")
            self.assertEqual((listener.auth, listener.identity), ("none", "sidecar"))

    def test_refused_elsewhere(self) -> None:
        for endpoint in [
            "tcp:8080",
            "tcp:8080:interface=0.0.0.0",
            "tcp:8080:interface=10.0.0.1",
            r"tcp6:8080:interface=\:\:",
            "systemd:domain=INET:index=0",
        ]:
            self.assertEqual(
                problems({"listeners": [
                    {"endpoint": endpoint, "auth": "none", "identity": "sidecar"}
                ]}),
                [f"<config>: listeners[0].auth: auth: none is only allowed on a loopback "
                 f"address or a unix socket, not {endpoint!r}"],
            )

    def test_identity(self) -> None:
        self.assertEqual(
            problems({"listeners": [{**LISTENER, "auth": "none"}]}),
            ["<config>: listeners[0].identity: required with auth: none"],
        )
        self.assertEqual(
            problems({"listeners": [{**LISTENER, "identity": "x"}]}),
            ["<config>: listeners[0].identity: only used with auth: none"],
        )
        self.assertEqual(len(problems({"listeners": [{**LISTENER, "auth": "maybe"}]})), 1)

    def test_default(self) -> None:
        listener = self.listener(**LISTENER)
        self.assertEqual((listener.auth, listener.identity), ("required", None))


class ListenerIdentityTests(SynchronousTestCase):
    """
    The site of an C{auth: none} listener names its identity; the gate
    admits any request on it as that identity, with the default tenant.
    """

    def site(self, **fields: Any) -> GatewaySite:
        return GatewaySite(Resource(), Clock(), GatewayMetrics(CollectorRegistry()), 1024,
                           listener=ListenerConfig(**fields))

    def test_site(self) -> None:
        site = self.site(endpoint="tcp:1:interface=127.0.0.1", auth="none", identity="sidecar")
        self.assertEqual(site.listener_identity, "sidecar")
        self.assertIsNone(self.site(endpoint="tcp:1").listener_identity)

    def test_request(self) -> None:
        request = fake_request()
        self.assertIsNone(listener_identity(request))
        site = self.site(endpoint="tcp:1:interface=127.0.0.1", auth="none", identity="sidecar")
        setattr(request, "site", site)  # noqa: B010 - DummyRequest has no site
        self.assertEqual(listener_identity(request), "sidecar")

    def admit(self, request: Any, identity: Optional[str]) -> Deferred[Any]:
        gate = make_gate()
        return Deferred.fromCoroutine(gate.admit(
            request, route="read_prometheus_query", body_size=0, listener_identity=identity,
        ))

    def test_admitted_without_credentials(self) -> None:
        admission = self.successResultOf(self.admit(fake_request(), "sidecar"))
        self.assertEqual(admission.identity.name, "sidecar")
        self.assertEqual(admission.identity.checker, "listener")
        self.assertEqual(admission.tenant, "anonymous")
        admission.release()

    def test_token_ignored(self) -> None:
        admission = self.successResultOf(self.admit(fake_request(token="whatever"), "sidecar"))
        self.assertEqual(admission.identity.name, "sidecar")

    def test_other_tenant_forbidden(self) -> None:
        self.failureResultOf(self.admit(fake_request(tenant="other"), "sidecar"), Forbidden)

    def test_elsewhere_credentials_asked(self) -> None:
        self.failureResultOf(self.admit(fake_request(), None), Unauthorized)

    def test_no_warning_about_identity_sources(self) -> None:
        """
        A gateway with no identity source warns that every request will be
        refused, unless a listener needs none.
        """
        events: list[LogEvent] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        build_gate(read({"listeners": [LISTENER]}), Clock(), CollectorRegistry())
        self.assertEqual(len([e for e in events if "no identity source" in formatEvent(e)]), 1)
        build_gate(read({"listeners": [LISTENER, {
            "endpoint": "unix:/tmp/s.sock", "auth": "none", "identity": "sidecar"}]}),
            Clock(), CollectorRegistry())
        self.assertEqual(len([e for e in events if "no identity source" in formatEvent(e)]), 1)


def resolved(environ: dict[str, str], **azure: Any) -> Any:
    return resolve(AzureADConfig(**azure), environ).source


def resolve_problems(environ: dict[str, str], **azure: Any) -> list[str]:
    try:
        resolve(AzureADConfig(**azure), environ)
    except ConfigError as e:
        return e.problems
    raise AssertionError("no problem found")


class ResolveTests(SynchronousTestCase):
    """
    C{DefaultAzureCredential}'s order, from the environment and the file.
    """

    def setUp(self) -> None:
        pem, _, _ = rsa_certificate()
        self.certificate = os.path.abspath(self.mktemp())
        with open(self.certificate, "wb") as f:
            f.write(pem)
        self.token_file = os.path.abspath(self.mktemp())
        with open(self.token_file, "w") as f:
            f.write("federated")

    def environment(self) -> dict[str, str]:
        return {
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": CLIENT,
            "AZURE_CLIENT_SECRET": SECRET,
            "AZURE_CLIENT_CERTIFICATE_PATH": self.certificate,
            "AZURE_FEDERATED_TOKEN_FILE": self.token_file,
            "IDENTITY_ENDPOINT": "http://localhost:41000/msi/token",
            "IDENTITY_HEADER": "header",
        }

    def test_order(self) -> None:
        env = self.environment()
        source = resolved(env)
        self.assertIsInstance(source, ClientSecretSource)
        self.assertEqual(source.secret, Secret(SECRET, "environment variable AZURE_CLIENT_SECRET"))
        self.assertEqual(source.endpoint,
                         f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        del env["AZURE_CLIENT_SECRET"]
        self.assertIsInstance(resolved(env), ClientCertificateSource)
        del env["AZURE_CLIENT_CERTIFICATE_PATH"]
        source = resolved(env)
        self.assertIsInstance(source, WorkloadIdentitySource)
        self.assertEqual(source.token_file, self.token_file)
        del env["AZURE_FEDERATED_TOKEN_FILE"]
        source = resolved(env)
        self.assertIsInstance(source, AppServiceIdentitySource)
        self.assertEqual(source.client_id, CLIENT)
        del env["IDENTITY_ENDPOINT"]
        source = resolved(env)
        self.assertEqual(source, ManagedIdentitySource(QUERY_SCOPE, CLIENT,
                                                       "http://169.254.169.254"))
        self.assertEqual(resolved({}), ManagedIdentitySource(QUERY_SCOPE))

    def test_empty_is_unset(self) -> None:
        env = dict(self.environment(), AZURE_CLIENT_SECRET="")
        self.assertIsInstance(resolved(env), ClientCertificateSource)

    def test_file_over_environment(self) -> None:
        source = resolved(self.environment(), client_id="other-client",
                          client_secret=Secret("file-secret", "sealgw.yaml"))
        self.assertEqual(source.client_id, "other-client")
        self.assertEqual(source.secret.value, "file-secret")

    def test_explicit_source(self) -> None:
        source = resolved(self.environment(), source="workload_identity")
        self.assertIsInstance(source, WorkloadIdentitySource)
        source = resolved(self.environment(), source="managed_identity")
        self.assertIsInstance(source, AppServiceIdentitySource)
        self.assertEqual(resolve_problems({"AZURE_TENANT_ID": TENANT}, source="client_secret"), [
            "azure_ad.source: source client_secret needs client_id (or AZURE_CLIENT_ID) and "
            "client_secret (or AZURE_CLIENT_SECRET)",
        ])

    def test_authority_from_environment(self) -> None:
        env = dict(self.environment(), AZURE_AUTHORITY_HOST="https://login.microsoftonline.us/")
        self.assertEqual(resolved(env).authority, "https://login.microsoftonline.us")
        result = resolve(AzureADConfig(), dict(env, AZURE_AUTHORITY_HOST="http://127.0.0.1:9"))
        self.assertTrue(result.plain_http)
        self.assertFalse(resolve(AzureADConfig(), env).plain_http)
        self.assertEqual(
            resolve_problems(dict(env, AZURE_AUTHORITY_HOST="http://login.example")),
            ["azure_ad.authority_host: AZURE_AUTHORITY_HOST: 'http://login.example': the "
             "authority must be https:// (http:// only on a loopback address)"],
        )

    def test_bad_ids(self) -> None:
        env = dict(self.environment(), AZURE_TENANT_ID="../../evil", AZURE_CLIENT_ID="a b")
        self.assertEqual(resolve_problems(env), [
            "azure_ad.client_id: AZURE_CLIENT_ID: 'a b' is not a client id",
            "azure_ad.tenant_id: AZURE_TENANT_ID: '../../evil' is not a tenant id or domain",
        ])

    def test_certificate_problems(self) -> None:
        env = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": CLIENT}
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(ec_certificate())
        self.assertEqual(
            resolve_problems(dict(env, AZURE_CLIENT_CERTIFICATE_PATH=path)),
            [f"azure_ad.client_certificate: AZURE_CLIENT_CERTIFICATE_PATH: {path}: the private "
             "key is not RSA, which Entra ID needs here"],
        )
        self.assertEqual(
            resolve_problems(env, client_certificate="/nonexistent/cert.pem"),
            ["azure_ad.client_certificate: cannot read /nonexistent/cert.pem: No such file or "
             "directory"],
        )

    def test_token_file_missing(self) -> None:
        env = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": CLIENT,
               "AZURE_FEDERATED_TOKEN_FILE": "/nonexistent/token"}
        self.assertEqual(resolve_problems(env), [
            "azure_ad.federated_token_file: AZURE_FEDERATED_TOKEN_FILE: /nonexistent/token does "
            "not exist or is not a file",
        ])

    def test_imds_endpoint(self) -> None:
        env = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:2"}
        self.assertEqual(resolved(env).endpoint,
                         "http://127.0.0.1:2/metadata/identity/oauth2/token")
        self.assertEqual(
            resolve_problems({"AZURE_POD_IDENTITY_AUTHORITY_HOST": "nope"}),
            ["azure_ad.imds_endpoint: AZURE_POD_IDENTITY_AUTHORITY_HOST: 'nope' is not an "
             "http(s) URL"],
        )

    def test_build_collects_every_problem(self) -> None:
        config = read({
            "listeners": [LISTENER],
            "upstreams": {
                "a": {"url": "https://a", "azure_ad": {"source": "client_secret"}},
                "b": {"url": "https://b", "azure_ad": {"client_certificate": __file__,
                                                        "tenant_id": "t", "client_id": "c"}},
                "c": {"url": "https://c"},
                "files": {"type": "file", "directory": "/tmp"},
            },
        })
        with self.assertRaises(ConfigError) as caught:
            build_credentials(config.upstreams, Clock(), environ={})
        self.assertEqual(caught.exception.problems, [
            "upstreams.a.azure_ad.source: source client_secret needs tenant_id (or "
            "AZURE_TENANT_ID) and client_id (or AZURE_CLIENT_ID) and client_secret (or "
            "AZURE_CLIENT_SECRET)",
            f"upstreams.b.azure_ad.client_certificate: {__file__}: no PEM certificate in it "
            "(PKCS#12 files are not read: convert with openssl pkcs12 -nodes)",
        ])

    def test_build_only_azure_upstreams(self) -> None:
        config = read({
            "listeners": [LISTENER],
            "upstreams": {"a": {"url": "https://a", "azure_ad": {}}, "c": {"url": "https://c"}},
        })
        service = build_credentials(config.upstreams, Clock(), environ={})
        self.assertEqual(list(service.credentials), ["a"])
        self.assertEqual(list(service.by_upstream), ["a"])


class SourceRequestTests(SynchronousTestCase):
    """
    What each kind of credential asks for, exactly.
    """

    def test_client_secret(self) -> None:
        source = ClientSecretSource("https://login.example", TENANT, CLIENT, QUERY_SCOPE,
                                    secret=Secret(SECRET, "test"))
        request = source.token_request(0)
        self.assertEqual((request.method, request.url, request.content_type), (
            "POST", f"https://login.example/{TENANT}/oauth2/v2.0/token",
            "application/x-www-form-urlencoded",
        ))
        assert request.body is not None
        self.assertEqual(parse_qs(request.body.decode()), {
            "grant_type": ["client_credentials"], "client_id": [CLIENT],
            "scope": [QUERY_SCOPE], "client_secret": [SECRET],
        })
        self.assertNotIn(SECRET, repr(request) + repr(source) + source.describe())

    def test_workload_identity_reads_file_each_time(self) -> None:
        path = os.path.abspath(self.mktemp())
        source = WorkloadIdentitySource("https://login.example", TENANT, CLIENT, QUERY_SCOPE,
                                        token_file=path)
        for content in ["one\n", "two"]:
            with open(path, "w") as f:
                f.write(content)
            body = source.token_request(0).body
            assert body is not None
            form = parse_qs(body.decode())
            self.assertEqual(form["client_assertion"], [content.strip()])
            self.assertEqual(form["client_assertion_type"], [CLIENT_ASSERTION_TYPE])
        os.remove(path)
        with self.assertRaises(TokenUnavailable) as caught:
            source.token_request(0)
        self.assertEqual(str(caught.exception), f"cannot read {path}: No such file or directory")

    def test_managed_identity(self) -> None:
        request = ManagedIdentitySource(INGESTION_SCOPE, CLIENT).token_request(0)
        self.assertEqual((request.method, request.url), (
            "GET", "http://169.254.169.254/metadata/identity/oauth2/token",
        ))
        self.assertEqual(request.query, (("api-version", "2018-02-01"),
                                         ("resource", "https://monitor.azure.com"),
                                         ("client_id", CLIENT)))
        self.assertEqual(dict(request.headers), {"Metadata": "true"})
        self.assertIsNone(request.body)
        system = ManagedIdentitySource(QUERY_SCOPE).token_request(0)
        self.assertEqual([k for k, _ in system.query], ["api-version", "resource"])

    def test_app_service(self) -> None:
        source = AppServiceIdentitySource(QUERY_SCOPE, "http://localhost:4/msi/token",
                                          Secret("hdr", "test"))
        request = source.token_request(0)
        self.assertEqual(request.url, "http://localhost:4/msi/token")
        self.assertEqual(dict(request.headers), {"X-IDENTITY-HEADER": "hdr"})
        self.assertEqual(request.query[0], ("api-version", "2019-08-01"))
        self.assertNotIn("hdr", repr(request) + source.describe())


class AssertionTests(SynchronousTestCase):
    def write(self, data: bytes) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_signed_with_thumbprint(self) -> None:
        pem, public, x5t = rsa_certificate()
        certificate = load_certificate(self.write(pem))
        self.assertEqual(certificate.x5t, x5t)
        self.assertEqual(b64url(bytes.fromhex(certificate.thumbprint)), x5t)
        assertion = certificate.assertion(CLIENT, "https://login.example/t/oauth2/v2.0/token",
                                          1000.0, jti=lambda: "jti-1")
        token = jwt.decode(assertion, public, algorithms=["RS256"])
        self.assertEqual(token.header, {"alg": "RS256", "typ": "JWT", "x5t": x5t})
        self.assertEqual(token.claims, {
            "aud": "https://login.example/t/oauth2/v2.0/token", "iss": CLIENT, "sub": CLIENT,
            "jti": "jti-1", "iat": 1000, "nbf": 1000, "exp": 1600,
        })
        self.assertNotIn("PRIVATE", repr(certificate))

    def test_source_assertion_audience(self) -> None:
        pem, public, _ = rsa_certificate()
        source = ClientCertificateSource("https://login.example", TENANT, CLIENT, QUERY_SCOPE,
                                         certificate=load_certificate(self.write(pem)))
        body = source.token_request(1000.0).body
        assert body is not None
        form = parse_qs(body.decode())
        self.assertEqual(form["client_assertion_type"], [CLIENT_ASSERTION_TYPE])
        claims = jwt.decode(form["client_assertion"][0], public).claims
        self.assertEqual(claims["aud"], source.endpoint)

    def test_encrypted_key(self) -> None:
        from cryptography.hazmat.primitives import serialization

        pem, _, x5t = rsa_certificate()
        key = serialization.load_pem_private_key(pem, None)
        certificate = pem.split(b"-----BEGIN PRIVATE KEY-----")[0]
        encrypted = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        path = self.write(certificate + encrypted)
        self.assertEqual(load_certificate(path, "pw").x5t, x5t)
        with self.assertRaises(ValueError) as caught:
            load_certificate(path)
        self.assertIn("encrypted and no password", str(caught.exception))
        with self.assertRaises(ValueError):
            load_certificate(path, "wrong")

    def test_mismatched_key(self) -> None:
        pem, _, _ = rsa_certificate()
        other, _, _ = rsa_certificate()
        certificate = pem.split(b"-----BEGIN PRIVATE KEY-----")[0]
        key = b"-----BEGIN PRIVATE KEY-----" + other.split(b"-----BEGIN PRIVATE KEY-----")[1]
        path = self.write(certificate + key)
        with self.assertRaises(ValueError) as caught:
            load_certificate(path)
        self.assertEqual(str(caught.exception),
                         f"{path}: no certificate in it matches its private key")

    def test_thumbprint_is_sha1_of_der(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        pem, _, _ = rsa_certificate()
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        self.assertEqual(load_certificate(self.write(pem)).thumbprint,
                         hashlib.sha1(der).hexdigest().upper())


class AnswerTests(SynchronousTestCase):
    """
    Answers as the v2 endpoint (numbers), IMDS (strings) and App Service
    (C{expires_on} only) write them, and how they fail.
    """

    def answer(self, status: int, document: Any) -> bytes:
        return json.dumps(document).encode()

    def test_v2_numbers(self) -> None:
        token = parse_answer(200, self.answer(200, {
            "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": "eyJ.x.y",
        }), 1000.0)
        self.assertEqual((token.value, token.expires_at, token.refresh_at),
                         ("eyJ.x.y", 4599.0, None))
        self.assertNotIn("eyJ", repr(token) + str(token))

    def test_imds_strings(self) -> None:
        token = parse_answer(200, self.answer(200, {
            "access_token": "abc", "expires_in": "3599", "expires_on": "1506484173",
            "resource": "https://monitor.azure.com", "token_type": "Bearer",
        }), 1000.0)
        self.assertEqual(token.expires_at, 4599.0)

    def test_expires_on_only(self) -> None:
        token = parse_answer(200, self.answer(200, {
            "access_token": "abc", "expires_on": "1506484173", "token_type": "Bearer",
        }), 1506480573.0)
        self.assertEqual(token.expires_at, 1506484173.0)

    def test_refresh_in(self) -> None:
        token = parse_answer(200, self.answer(200, {
            "access_token": "abc", "expires_in": 86399, "refresh_in": 43199,
            "token_type": "Bearer",
        }), 0.0)
        self.assertEqual(token.refresh_at, 43199.0)

    def test_refusals(self) -> None:
        body = self.answer(400, {
            "error": "unauthorized_client",
            "error_description": "AADSTS700016: Application with identifier 'x' was not "
                                 "found in the directory 'y'. This can happen if ...\r\n"
                                 "Trace ID: 1\r\nCorrelation ID: 2",
        })
        with self.assertRaises(TokenRefused) as caught:
            parse_answer(400, body, 0)
        self.assertEqual(str(caught.exception),
                         "refused: 400 unauthorized_client: AADSTS700016: Application with "
                         "identifier 'x' was not found in the directory 'y'.")

    def test_transient(self) -> None:
        for status in (404, 408, 429, 500, 503):
            with self.assertRaises(TokenUnavailable):
                parse_answer(status, b"", 0)
        with self.assertRaises(TokenUnavailable) as caught:
            parse_answer(503, b"<html>busy</html>", 0)
        self.assertEqual(str(caught.exception), "answered 503")

    def test_nonsense(self) -> None:
        for body, message in [
            (b"not json", "answered 200 with something that is not JSON"),
            (b"[1]", "answered 200 with something that is not a token"),
            (b'{"expires_in": 5}', "answered 200 without an access_token"),
            (b'{"access_token": "a b", "expires_in": 5}',
             "answered 200 with a token that cannot go in a header"),
            (b'{"access_token": "ab", "expires_in": 5, "token_type": "pop"}',
             "answered 200 with a token that is not a bearer token"),
            (b'{"access_token": "ab"}', "answered 200 without expires_in or expires_on"),
            (b'{"access_token": "ab", "expires_in": true}',
             "answered 200 without expires_in or expires_on"),
            (b'{"access_token": "ab", "expires_on": "5"}',
             "answered 200 with a token that has already expired"),
        ]:
            with self.assertRaises(TokenUnavailable) as caught:
                parse_answer(200, body, 10)
            self.assertEqual(str(caught.exception), message)
            self.assertNotIn("ab", str(caught.exception).replace("a bearer", ""))


class ExitTests(SynchronousTestCase):
    def test_exit_after_stop(self) -> None:
        """
        twistd's fatal hook stops the reactor and ends the process with
        status 1 once the shutdown has run, once.
        """
        from sealgw import tap

        reactor = MemoryReactorClock()
        exits: list[int] = []
        self.patch(tap, "_exit", exits.append)
        hook = tap.ExitAfterStop(reactor)
        hook("why")
        hook("again")
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(reactor.triggers, {"after": {"shutdown": [(tap._exit, (1,), {})]}})
        self.assertEqual(exits, [])
        # A worker's, with the status its main process reads.
        worker = MemoryReactorClock()
        tap.ExitAfterStop(worker, status=3)("why")
        self.assertEqual(worker.triggers, {"after": {"shutdown": [(tap._exit, (3,), {})]}})
