"""
The gate as the web layer sees it: every status it answers with, the
tenant it decides, its audit log and its metrics.
"""

from __future__ import annotations

import hashlib
import os

from prometheus_client import CollectorRegistry
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import (
    Admission,
    AuthError,
    BadTenant,
    Forbidden,
    Gate,
    RateLimited,
    Unauthorized,
)
from sealgw.config import (
    AuthConfig,
    RateLimitConfig,
    TenancyConfig,
    TokenFileConfig,
)
from tests.idp import admit, fake_request, make_gate

TOKENS = """\
- {name: solo, token: solo-token-0123456789}
- {name: multi, token: multi-token-0123456789, tenants: [team-a, team-b, team-c]}
- {name: limited, token: limited-token-0123456789, limits: {requests_per_second: 1}}
"""
SECRETS = ("solo-token-0123456789", "multi-token-0123456789", "limited-token-0123456789")
#: Basic auth is on unless turned off, and a 401 says so next to Bearer.
CHALLENGE = 'Bearer realm="sealgw", Basic realm="sealgw", charset="UTF-8"'
INVALID_TOKEN_CHALLENGE = (
    'Bearer realm="sealgw", error="invalid_token", Basic realm="sealgw", charset="UTF-8"'
)


class GateTestsMixin:
    def make(self, federation: bool = False, header: str = "X-Scope-OrgID") -> Gate:
        directory = self.mktemp()  # type: ignore[attr-defined]
        os.makedirs(directory)
        path = os.path.join(directory, "bearer-tokens.yaml")
        with open(path, "w") as f:
            f.write(TOKENS)
        self.registry = CollectorRegistry()
        return make_gate(
            registry=self.registry,
            auth=AuthConfig(token_file=TokenFileConfig(path=path)),
            tenancy=TenancyConfig(header=header, federation=federation, default_tenant="main"),
        )

    def refused(self, gate: Gate, request: object, kind: type, **kw: object) -> AuthError:
        failure = self.failureResultOf(admit(gate, request, **kw), kind)  # type: ignore[attr-defined]
        error = failure.value
        for secret in SECRETS:
            self.assertNotIn(secret, error.message)  # type: ignore[attr-defined]
            self.assertNotIn(secret, repr(error))  # type: ignore[attr-defined]
        return error  # type: ignore[no-any-return]


class StatusTests(GateTestsMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.gate = self.make()

    def test_ok(self) -> None:
        admission = self.successResultOf(admit(self.gate, fake_request(SECRETS[0])))
        self.assertIsInstance(admission, Admission)
        self.assertEqual(admission.tenant, "main")

    def test_401_missing(self) -> None:
        error = self.refused(self.gate, fake_request(), Unauthorized)
        self.assertEqual(error.status, 401)
        self.assertEqual(error.reason, "missing")
        self.assertEqual(error.headers, {"WWW-Authenticate": CHALLENGE})

    def test_401_garbled(self) -> None:
        for value in (
            b"Bearer",
            b"Bearer ",
            b"Basic",
            b"Basic not-base64!",
            b"Bearer two words",
            b"Bearer caf\xc3\xa9",
            b"Bearer tab\there",
            b"Token solo-token-0123456789",
        ):
            request = fake_request(headers={b"Authorization": [value]})
            error = self.refused(self.gate, request, Unauthorized)
            self.assertEqual((error.status, error.reason), (401, "malformed"), value)
            self.assertEqual(error.headers, {"WWW-Authenticate": CHALLENGE})

    def test_401_two_authorization_headers(self) -> None:
        request = fake_request(
            headers={b"Authorization": [b"Bearer solo-token-0123456789", b"Bearer x"]}
        )
        error = self.refused(self.gate, request, Unauthorized)
        self.assertEqual(error.reason, "malformed")

    def test_scheme_is_case_insensitive(self) -> None:
        request = fake_request(headers={b"Authorization": [b"bearer  solo-token-0123456789"]})
        self.successResultOf(admit(self.gate, request))

    def test_401_unknown_token(self) -> None:
        error = self.refused(self.gate, fake_request("not-a-known-token"), Unauthorized)
        self.assertEqual((error.status, error.reason), (401, "invalid_token"))
        self.assertEqual(error.headers, {"WWW-Authenticate": INVALID_TOKEN_CHALLENGE})

    def test_403_forbidden_tenant(self) -> None:
        error = self.refused(self.gate, fake_request(SECRETS[0], tenant="other"), Forbidden)
        self.assertEqual((error.status, error.reason), (403, "forbidden_tenant"))
        self.assertIn("'other'", error.message)

    def test_400_malformed_tenant(self) -> None:
        for tenant in ("..", "a b", "x" * 151, "a/b", ""):
            error = self.refused(self.gate, fake_request(SECRETS[1], tenant=tenant), BadTenant)
            self.assertEqual((error.status, error.reason), (400, "bad_tenant"))
            self.assertTrue(error.message.startswith("X-Scope-OrgID: "), error.message)

    def test_400_non_ascii_tenant(self) -> None:
        request = fake_request(SECRETS[1], headers={b"X-Scope-OrgID": [b"caf\xc3\xa9"]})
        self.assertEqual(self.refused(self.gate, request, BadTenant).status, 400)

    def test_400_several_tenants_without_header(self) -> None:
        error = self.refused(self.gate, fake_request(SECRETS[1]), BadTenant)
        self.assertEqual((error.status, error.reason), (400, "tenant_required"))
        self.assertIn("X-Scope-OrgID", error.message)

    def test_several_tenants_with_header(self) -> None:
        admission = self.successResultOf(admit(self.gate, fake_request(SECRETS[1], tenant="team-b")))
        self.assertEqual(admission.tenant, "team-b")

    def test_one_tenant_header_may_be_omitted_or_given(self) -> None:
        self.assertEqual(self.successResultOf(admit(self.gate, fake_request(SECRETS[0]))).tenant, "main")
        self.assertEqual(
            self.successResultOf(admit(self.gate, fake_request(SECRETS[0], tenant="main"))).tenant,
            "main",
        )

    def test_429(self) -> None:
        self.successResultOf(admit(self.gate, fake_request(SECRETS[2])))
        error = self.refused(self.gate, fake_request(SECRETS[2]), RateLimited)
        self.assertEqual((error.status, error.reason), (429, "rate_limited"))
        self.assertEqual(error.headers, {"Retry-After": "1"})

    def test_multi_tenant_refused_on_push(self) -> None:
        error = self.refused(self.gate, fake_request(SECRETS[1], tenant="team-a|team-b"), BadTenant)
        self.assertEqual(error.status, 400)
        self.assertIn("a|b", error.message)

    def test_federation_argument_needs_config(self) -> None:
        """
        A query route asking for federation gets it only when the operator
        enabled it.
        """
        request = fake_request(SECRETS[1], tenant="team-a|team-b")
        self.refused(self.gate, request, BadTenant, federation=True)

    def test_release_is_idempotent(self) -> None:
        admission = self.successResultOf(admit(self.gate, fake_request(SECRETS[0])))
        admission.release()
        admission.release()


class FederationTests(GateTestsMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.gate = self.make(federation=True)

    def test_allowed_when_all_allowed(self) -> None:
        request = fake_request(SECRETS[1], tenant="team-a|team-c")
        admission = self.successResultOf(admit(self.gate, request, route="query", federation=True))
        self.assertEqual(admission.tenant, "team-a|team-c")

    def test_forbidden_when_one_is_not(self) -> None:
        request = fake_request(SECRETS[1], tenant="team-a|team-z")
        error = self.refused(self.gate, request, Forbidden, route="query", federation=True)
        self.assertIn("'team-z'", error.message)

    def test_still_refused_on_push(self) -> None:
        request = fake_request(SECRETS[1], tenant="team-a|team-b")
        self.refused(self.gate, request, BadTenant, route="remote_write")


class HeaderNameTests(GateTestsMixin, SynchronousTestCase):
    def test_configured_header(self) -> None:
        gate = self.make(header="X-Tenant")
        request = fake_request(SECRETS[1], tenant="team-c", tenant_header=b"X-Tenant")
        self.assertEqual(self.successResultOf(admit(gate, request)).tenant, "team-c")
        error = self.refused(gate, fake_request(SECRETS[1], tenant="team-c"), BadTenant)
        self.assertIn("X-Tenant", error.message)


class AuditTests(GateTestsMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.gate = self.make()
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def audit_events(self) -> list[dict]:
        return [e for e in self.events if e.get("audit")]

    def exercise(self) -> None:
        requests = [
            fake_request(SECRETS[0]),
            fake_request(SECRETS[1], tenant="team-a"),
            fake_request(SECRETS[1]),
            fake_request(SECRETS[1], tenant="nope"),
            fake_request(SECRETS[2]),
            fake_request(SECRETS[2]),
            fake_request("wrong-" + SECRETS[0]),
            fake_request(headers={b"Authorization": [b"Basic " + SECRETS[0].encode()]}),
            fake_request(headers={b"Authorization": [b"Bearer " + SECRETS[0].encode() + b" x"]}),
            fake_request(),
        ]
        for request in requests:
            d = admit(self.gate, request)
            d.addErrback(lambda f: f.trap(AuthError))
            self.successResultOf(d)

    def test_one_event_per_decision(self) -> None:
        self.exercise()
        events = self.audit_events()
        self.assertEqual(len(events), 10)
        first = events[0]
        self.assertEqual(
            {k: first[k] for k in ("outcome", "identity", "tenant", "route", "checker", "reason")},
            {
                "outcome": "allowed",
                "identity": "solo",
                "tenant": "main",
                "route": "remote_write",
                "checker": "token_file",
                "reason": "ok",
            },
        )
        self.assertEqual(
            [(e["outcome"], e["reason"], e["status"], e["identity"], e["tenant"]) for e in events],
            [
                ("allowed", "ok", 200, "solo", "main"),
                ("allowed", "ok", 200, "multi", "team-a"),
                ("denied", "tenant_required", 400, "multi", "-"),
                ("denied", "forbidden_tenant", 403, "multi", "nope"),
                ("allowed", "ok", 200, "limited", "main"),
                ("denied", "rate_limited", 429, "limited", "main"),
                ("denied", "invalid_token", 401, "-", "-"),
                ("denied", "malformed", 401, "-", "-"),
                ("denied", "malformed", 401, "-", "-"),
                ("denied", "missing", 401, "-", "-"),
            ],
        )

    def test_token_never_logged(self) -> None:
        """
        No log event, formatted or raw, holds a token or an Authorization
        header; a refused token appears as 8 hex digits of its SHA-256.
        """
        self.exercise()
        self.assertTrue(self.events)
        for event in self.events:
            text = repr(event) + (formatEvent(event) or "")
            for secret in SECRETS:
                self.assertNotIn(secret, text)
            self.assertNotIn("Bearer ", text)
            self.assertNotIn("Basic ", text)
        refused = [e for e in self.audit_events() if e["reason"] == "invalid_token"][0]
        expected = hashlib.sha256(("wrong-" + SECRETS[0]).encode()).hexdigest()[:8]
        self.assertEqual(refused["credential"], expected)
        self.assertIn(f"credential=sha256:{expected}", formatEvent(refused))
        allowed = self.audit_events()[0]
        self.assertIsNone(allowed["credential"])

    def test_metrics(self) -> None:
        self.exercise()

        def value(checker: str, outcome: str, reason: str) -> float | None:
            return self.registry.get_sample_value(
                "sealgw_auth_decisions_total",
                {"checker": checker, "outcome": outcome, "reason": reason},
            )

        self.assertEqual(value("token_file", "allowed", "ok"), 3.0)
        self.assertEqual(value("token_file", "denied", "rate_limited"), 1.0)
        self.assertEqual(value("token_file", "denied", "forbidden_tenant"), 1.0)
        self.assertEqual(value("none", "denied", "invalid_token"), 1.0)
        self.assertEqual(value("none", "denied", "malformed"), 2.0)
        self.assertEqual(value("none", "denied", "missing"), 1.0)


class NoSourceTests(SynchronousTestCase):
    def test_everyone_refused(self) -> None:
        gate = make_gate()
        self.failureResultOf(admit(gate, fake_request("anything")), Unauthorized)
        self.assertEqual(gate.health(), {})


class DefaultLimitsTests(SynchronousTestCase):
    def test_default_limits_apply(self) -> None:
        limits = RateLimitConfig(max_concurrent=1)
        from sealgw.config import Secret

        gate = make_gate(auth=AuthConfig(default_limits=limits), development_token=Secret("d", "x"))
        admission = self.successResultOf(admit(gate, fake_request("d")))
        self.assertEqual(admission.identity.limits, limits)
        self.failureResultOf(admit(gate, fake_request("d")), RateLimited)
        admission.release()
        self.successResultOf(admit(gate, fake_request("d")))
