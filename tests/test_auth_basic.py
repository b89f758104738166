"""
Basic auth with a token as the password: the credential factory, the
tenant its username chooses, every identity source behind it, turning it
off, and that neither part is ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.cred.error import LoginFailed
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sealgw.auth import (
    AuthError,
    BadTenant,
    BasicToken,
    BasicTokenCredentialFactory,
    Forbidden,
    Gate,
    IBasicToken,
    IBearerToken,
    Unauthorized,
    build_gate,
)
from sealgw.auth._basic import MAX_BASIC_LENGTH, MAX_USERNAME_LENGTH
from sealgw.auth._bearer import MAX_TOKEN_LENGTH
from sealgw.config import (
    AuthConfig,
    Config,
    OIDCConfig,
    Secret,
    TenancyConfig,
    TokenFileConfig,
)
from sealgw.tenancy import (
    TenantConflict,
    TenantError,
    TenantForbidden,
    TenantRequired,
    UsernameTenantError,
    choose_tenant,
)
from tests.idp import AUDIENCE, FakeIdentityProvider, admit, fake_request, make_gate

deterministic = settings(derandomize=True, deadline=None, max_examples=300)

SOLO = "solo-token-0123456789"
MULTI = "multi-token-0123456789"
HASHED = "hashed-token-0123456789"
TOKENS = f"""\
- {{name: solo, token: {SOLO}}}
- {{name: multi, token: {MULTI}, tenants: [team-a, team-b]}}
- {{name: hashed, token_sha256: {hashlib.sha256(HASHED.encode()).hexdigest()}, tenants: [team-h]}}
"""
BOTH = 'Bearer realm="sealgw", Basic realm="sealgw", charset="UTF-8"'
BOTH_INVALID = 'Bearer realm="sealgw", error="invalid_token", Basic realm="sealgw", charset="UTF-8"'

REFUSALS = {
    "the Basic credentials are empty",
    f"the Basic credentials are longer than {MAX_BASIC_LENGTH} bytes",
    "the Basic credentials are not valid base64",
    "the Basic credentials have no ':' between username and password",
    "the Basic password (the token) is empty",
    f"the Basic password is longer than {MAX_TOKEN_LENGTH} bytes",
    "the Basic password holds spaces, control or non-ASCII characters",
    f"the Basic username is longer than {MAX_USERNAME_LENGTH} bytes",
    "the Basic username is not UTF-8",
}


def encoded(username: str | bytes, password: str | bytes) -> bytes:
    if isinstance(username, str):
        username = username.encode("utf-8")
    if isinstance(password, str):
        password = password.encode("utf-8")
    return base64.b64encode(username + b":" + password)


def basic(
    username: str | bytes, password: str | bytes, tenant: Optional[str] = None
) -> Any:
    """
    A request with C{Authorization: Basic} and, optionally, a tenant header.
    """
    return fake_request(
        tenant=tenant, headers={b"Authorization": [b"Basic " + encoded(username, password)]}
    )


class FactoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.factory = BasicTokenCredentialFactory()

    def test_scheme_and_challenge(self) -> None:
        self.assertEqual(self.factory.scheme, b"basic")
        self.assertEqual(
            self.factory.getChallenge(None), {"realm": b"sealgw", "charset": b"UTF-8"}
        )

    def test_decode(self) -> None:
        credentials = self.factory.decode(encoded("team-a", "tok.EN-1_~+/="), None)
        self.assertTrue(IBasicToken.providedBy(credentials))
        # Every identity source that takes a bearer token takes this one.
        self.assertTrue(IBearerToken.providedBy(credentials))
        self.assertEqual(credentials.username, "team-a")
        self.assertEqual(credentials.token, "tok.EN-1_~+/=")
        self.assertEqual(credentials.digest, hashlib.sha256(b"tok.EN-1_~+/=").digest())

    def test_empty_username(self) -> None:
        self.assertEqual(self.factory.decode(encoded("", "tok"), None).username, "")

    def test_first_colon_splits(self) -> None:
        credentials = self.factory.decode(encoded("u", "a:b"), None)
        self.assertEqual((credentials.username, credentials.token), ("u", "a:b"))

    def test_utf8_username(self) -> None:
        self.assertEqual(self.factory.decode(encoded("café", "tok"), None).username, "café")

    def test_missing_padding(self) -> None:
        value = encoded("u", "tok").rstrip(b"=")
        self.assertEqual(self.factory.decode(value, None).token, "tok")

    def test_refused(self) -> None:
        for value in (
            b"",
            b"!!!!",
            b"dXNlcjpw YXNz",
            base64.b64encode(b"no-colon"),
            encoded("user", ""),
            encoded("user", "a b"),
            encoded("user", "caf\xe9"),
            encoded("user", "tab\there"),
            encoded(b"\xff\xfe", "tok"),
            encoded("u" * (MAX_USERNAME_LENGTH + 1), "tok"),
            encoded("u", "t" * (MAX_TOKEN_LENGTH + 1)),
            b"A" * (MAX_BASIC_LENGTH + 4),
        ):
            with self.assertRaises(LoginFailed, msg=value[:40]) as caught:
                self.factory.decode(value, None)
            self.assertIn(str(caught.exception), REFUSALS)

    @deterministic
    @given(st.binary(max_size=64))
    def test_any_credentials(self, raw: bytes) -> None:
        """
        Whatever was encoded becomes credentials that give it back, or one
        of a few fixed refusals that cannot repeat it.
        """
        try:
            credentials = self.factory.decode(base64.b64encode(raw), None)
        except LoginFailed as e:
            self.assertIn(str(e), REFUSALS)
        else:
            self.assertEqual(
                credentials.username.encode("utf-8") + b":" + credentials.token.encode(), raw
            )

    @deterministic
    @given(st.binary(max_size=64))
    def test_any_bytes(self, value: bytes) -> None:
        try:
            self.factory.decode(value, None)
        except LoginFailed as e:
            self.assertIn(str(e), REFUSALS)

    def test_repr_hides_both_parts(self) -> None:
        credentials = BasicToken("very-secret-token", username="secret-user")
        fingerprint = hashlib.sha256(b"very-secret-token").hexdigest()[:8]
        self.assertEqual(credentials.fingerprint, fingerprint)
        for text in (repr(credentials), str(credentials), repr([credentials])):
            self.assertNotIn("very-secret-token", text)
            self.assertNotIn("secret-user", text)
            self.assertIn(fingerprint, text)


class ChooseTenantTests(SynchronousTestCase):
    """
    The username names a tenant exactly as the header does.
    """

    allowed = frozenset(["a", "b", "c"])

    def test_username_chooses(self) -> None:
        self.assertEqual(choose_tenant(None, self.allowed, username="b"), "b")

    def test_empty_username_chooses_nothing(self) -> None:
        self.assertEqual(choose_tenant(["c"], self.allowed, username=""), "c")
        self.assertEqual(choose_tenant(None, frozenset(["a"]), username=""), "a")
        e = self.assertRaises(TenantRequired, choose_tenant, None, self.allowed, username="")
        self.assertIn("Basic auth username", str(e))

    def test_bearer_message_unchanged(self) -> None:
        e = self.assertRaises(TenantRequired, choose_tenant, None, self.allowed)
        self.assertNotIn("Basic", str(e))

    def test_agreement(self) -> None:
        self.assertEqual(choose_tenant(["a"], self.allowed, username="a"), "a")
        self.assertRaises(TenantConflict, choose_tenant, ["a"], self.allowed, username="b")

    def test_forbidden(self) -> None:
        e = self.assertRaises(TenantForbidden, choose_tenant, None, self.allowed, username="z")
        self.assertEqual(e.tenant, "z")

    def test_malformed(self) -> None:
        for username in ("a b", "..", "x" * 151, "a/b", "a|b"):
            e = self.assertRaises(
                UsernameTenantError, choose_tenant, None, self.allowed, username=username
            )
            self.assertTrue(str(e).startswith("the Basic auth username: "))

    def test_header_problems_come_first(self) -> None:
        self.assertRaises(TenantError, choose_tenant, ["a", "a"], self.allowed, username="a")
        self.assertRaises(TenantError, choose_tenant, ["a/b"], self.allowed, username="a")

    def test_federation(self) -> None:
        """
        Where C{a|b} is allowed, the username may name several tenants too;
        it agrees with a header naming the same ones in another order.
        """
        self.assertEqual(choose_tenant(None, self.allowed, username="a|c", federation=True), "a|c")
        self.assertEqual(
            choose_tenant(["c|a"], self.allowed, username="a|c", federation=True), "c|a"
        )
        self.assertRaises(
            TenantConflict, choose_tenant, ["a|b"], self.allowed, username="a|c", federation=True
        )


class BasicGateMixin:
    def make(self, basic: bool = True, **config: Any) -> Gate:
        directory = self.mktemp()  # type: ignore[attr-defined]
        os.makedirs(directory)
        path = os.path.join(directory, "bearer-tokens.yaml")
        with open(path, "w") as f:
            f.write(TOKENS)
        return make_gate(  # type: ignore[no-any-return]
            auth=AuthConfig(token_file=TokenFileConfig(path=path), basic=basic),
            tenancy=TenancyConfig(default_tenant="main"),
            **config,
        )

    def refused(self, gate: Gate, request: Any, kind: type, **kw: Any) -> Any:
        return self.failureResultOf(  # type: ignore[attr-defined]
            admit(gate, request, **kw), kind
        ).value


class GateTests(BasicGateMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.gate = self.make()

    def test_prometheus_style(self) -> None:
        """
        Prometheus's C{basic_auth}: the username is the tenant, the password
        the token, and no tenant header.
        """
        admission = self.successResultOf(admit(self.gate, basic("team-b", MULTI)))
        self.assertEqual(admission.identity.name, "multi")
        self.assertEqual(admission.identity.checker, "token_file")
        self.assertEqual(admission.tenant, "team-b")

    def test_promtail_style(self) -> None:
        """
        Promtail's C{basic_auth} with its C{tenant_id}: the same tenant as
        the username and in the header.
        """
        admission = self.successResultOf(
            admit(self.gate, basic("team-a", MULTI, tenant="team-a"))
        )
        self.assertEqual(admission.tenant, "team-a")

    def test_empty_username_lets_the_header_choose(self) -> None:
        admission = self.successResultOf(admit(self.gate, basic("", MULTI, tenant="team-b")))
        self.assertEqual(admission.tenant, "team-b")

    def test_empty_username_one_tenant(self) -> None:
        admission = self.successResultOf(admit(self.gate, basic("", SOLO)))
        self.assertEqual((admission.identity.name, admission.tenant), ("solo", "main"))

    def test_username_names_the_only_tenant(self) -> None:
        self.assertEqual(self.successResultOf(admit(self.gate, basic("main", SOLO))).tenant, "main")

    def test_nothing_chosen_among_several(self) -> None:
        error = self.refused(self.gate, basic("", MULTI), BadTenant)
        self.assertEqual((error.status, error.reason), (400, "tenant_required"))
        self.assertIn("Basic auth username", error.message)
        self.assertIn("X-Scope-OrgID", error.message)

    def test_hashed_token_file_entry(self) -> None:
        admission = self.successResultOf(admit(self.gate, basic("team-h", HASHED)))
        self.assertEqual((admission.identity.name, admission.tenant), ("hashed", "team-h"))

    def test_development_token(self) -> None:
        gate = make_gate(development_token=Secret("dev-token-0123456789", "generated"))
        admission = self.successResultOf(admit(gate, basic("", "dev-token-0123456789")))
        self.assertEqual(admission.identity.name, "development")

    def test_wrong_password(self) -> None:
        error = self.refused(self.gate, basic("team-a", "wrong-" + MULTI), Unauthorized)
        self.assertEqual((error.status, error.reason), (401, "invalid_token"))
        self.assertEqual(error.headers, {"WWW-Authenticate": BOTH_INVALID})

    def test_garbled(self) -> None:
        request = fake_request(headers={b"Authorization": [b"Basic %%%%"]})
        error = self.refused(self.gate, request, Unauthorized)
        self.assertEqual((error.status, error.reason), (401, "malformed"))
        self.assertEqual(error.message, "the Basic credentials are not valid base64")
        self.assertEqual(error.headers, {"WWW-Authenticate": BOTH})

    def test_missing_advertises_both(self) -> None:
        error = self.refused(self.gate, fake_request(), Unauthorized)
        self.assertEqual(error.headers, {"WWW-Authenticate": BOTH})
        self.assertIn("Basic", error.message)

    def test_username_outside_the_identity(self) -> None:
        error = self.refused(self.gate, basic("team-z", MULTI), Forbidden)
        self.assertEqual((error.status, error.reason), (403, "forbidden_tenant"))
        self.assertIn("'team-z'", error.message)

    def test_username_and_header_disagree(self) -> None:
        for username, header in [("team-a", "team-b"), ("team-a", "team-z"), ("team-z", "team-a")]:
            error = self.refused(self.gate, basic(username, MULTI, tenant=header), BadTenant)
            self.assertEqual((error.status, error.reason), (400, "tenant_conflict"))
            self.assertEqual(
                error.message,
                "the Basic auth username and X-Scope-OrgID name different tenants; "
                "send one of them, or the same tenant in both",
            )

    def test_username_not_a_tenant(self) -> None:
        error = self.refused(self.gate, basic("alice@example.com", MULTI), BadTenant)
        self.assertEqual((error.status, error.reason), (400, "bad_tenant"))
        self.assertTrue(error.message.startswith("the Basic auth username: "), error.message)
        self.assertNotIn("alice", error.message)

    def test_username_multi_tenant_on_push(self) -> None:
        error = self.refused(self.gate, basic("team-a|team-b", MULTI), BadTenant)
        self.assertIn("a|b", error.message)

    def test_bearer_unchanged(self) -> None:
        self.assertEqual(self.successResultOf(admit(self.gate, fake_request(SOLO))).tenant, "main")


class TurnedOffTests(BasicGateMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.gate = self.make(basic=False)

    def test_basic_refused(self) -> None:
        error = self.refused(self.gate, basic("team-a", MULTI), Unauthorized)
        self.assertEqual((error.status, error.reason), (401, "malformed"))
        self.assertIn("auth.basic", error.message)
        self.assertEqual(error.headers, {"WWW-Authenticate": 'Bearer realm="sealgw"'})

    def test_challenges_name_bearer_only(self) -> None:
        error = self.refused(self.gate, fake_request(), Unauthorized)
        self.assertEqual(error.headers, {"WWW-Authenticate": 'Bearer realm="sealgw"'})
        self.assertNotIn("Basic", error.message)
        error = self.refused(self.gate, fake_request("wrong"), Unauthorized)
        self.assertEqual(
            error.headers, {"WWW-Authenticate": 'Bearer realm="sealgw", error="invalid_token"'}
        )

    def test_bearer_still_works(self) -> None:
        self.successResultOf(admit(self.gate, fake_request(MULTI, tenant="team-a")))


class LogTests(BasicGateMixin, SynchronousTestCase):
    """
    Neither the username nor the password reaches a log event; a refused
    password is named by the same 8 hex digits a refused bearer token is.
    """

    USERNAME = "user-nobody-logs"

    def test_neither_part_logged(self) -> None:
        gate = self.make()
        requests = [
            basic("team-a", MULTI),
            basic(self.USERNAME, "wrong-" + MULTI),
            basic("team-zz", MULTI),
            basic("team-zz", MULTI, tenant="team-a"),
            basic(self.USERNAME, MULTI),
            basic("user@nobody", MULTI),
            basic("team-zz", "has space"),
        ]
        with capturedLogs() as events:
            for request in requests:
                d = admit(gate, request)
                d.addErrback(lambda f: f.trap(AuthError))
                self.successResultOf(d)
        audit = [e for e in events if e.get("audit")]
        self.assertEqual(
            [(e["status"], e["reason"], e["identity"], e["tenant"]) for e in audit],
            [
                (200, "ok", "multi", "team-a"),
                (401, "invalid_token", "-", "-"),
                (403, "forbidden_tenant", "multi", "-"),
                (400, "tenant_conflict", "multi", "-"),
                (403, "forbidden_tenant", "multi", "-"),
                (400, "bad_tenant", "multi", "-"),
                (401, "malformed", "-", "-"),
            ],
        )
        expected = hashlib.sha256(("wrong-" + MULTI).encode()).hexdigest()[:8]
        self.assertEqual(audit[1]["credential"], expected)
        for event in events:
            text = repr(event) + (formatEvent(event) or "")
            for secret in (MULTI, self.USERNAME, "team-zz", "user@nobody", "has space", "Basic "):
                self.assertNotIn(secret, text)
            for request in requests:
                value = request.requestHeaders.getRawHeaders(b"authorization")[0]
                self.assertNotIn(value[6:].decode("ascii"), text)


OPAQUE = "opaque-basic-token-51c0e2"


class OIDCTests(TestCase):
    """
    OIDC tokens as the password: a JWT verified locally, an opaque token
    asked of the userinfo endpoint of a fake issuer on a real socket.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.idp = FakeIdentityProvider()
        self.idp.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.idp.stop()))
        self.idp.opaque[OPAQUE] = {
            "sub": "svc-9",
            "email": "robot@example.com",
            "groups": ["team-x", "team-y"],
        }
        config = Config(
            source="test.yaml",
            listeners=(),
            auth=AuthConfig(
                oidc=OIDCConfig(issuer=self.idp.issuer, audience=(AUDIENCE,), timeout=2.0)
            ),
        )
        self.gate = build_gate(config, reactor, CollectorRegistry())
        self.gate.startService()
        self.addCleanup(self.gate.stopService)
        assert self.gate.oidc is not None
        await self.gate.oidc.when_discovered()

    async def test_jwt(self) -> None:
        token = self.idp.issue(groups=["team-a", "team-b"], email="bob@example.com")
        admission = await admit(self.gate, basic("team-b", token))
        self.assertEqual(admission.identity.name, "bob@example.com")
        self.assertEqual(admission.identity.checker, "oidc")
        self.assertEqual(admission.tenant, "team-b")

    async def test_opaque_via_userinfo(self) -> None:
        admission = await admit(self.gate, basic("team-y", OPAQUE))
        self.assertEqual(admission.identity.name, "robot@example.com")
        self.assertEqual(admission.tenant, "team-y")
        self.assertEqual(self.idp.requests["userinfo"], 1)

    async def test_username_outside_groups(self) -> None:
        token = self.idp.issue(groups=["team-a"])
        with self.assertRaises(Forbidden):
            await admit(self.gate, basic("team-b", token))
