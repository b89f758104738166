"""
OpenID Connect against a fake identity provider on a real socket: JWT
verification (what is accepted and everything that is not), key refresh and
rotation, userinfo with its cache, and failing closed when the issuer is
down.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from joserfc.jwk import RSAKey
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from sealgw.auth import (
    AuthError,
    Forbidden,
    IdentityProviderUnavailable,
    RateLimited,
    Unauthorized,
    build_gate,
)
from sealgw.config import AuthConfig, Config, OIDCConfig, RateLimitConfig
from tests.idp import AUDIENCE, FakeIdentityProvider, admit, fake_request

OPAQUE = "opaque-access-token-3f9a1c"


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, 0.01, lambda: None)


class OIDCTestCase(TestCase):
    """
    Starts a fake identity provider and a gate pointed at it.
    """

    mode = "auto"
    min_refresh = 0.0
    group_tenants: dict[str, tuple[str, ...]] = {}
    group_limits: dict[str, RateLimitConfig] = {}
    wait_for_discovery = True

    async def setUp(self) -> None:
        self.idp = FakeIdentityProvider()
        self.idp.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.idp.stop()))
        self.idp.opaque[OPAQUE] = {
            "sub": "svc-7",
            "email": "robot@example.com",
            "groups": ["team-x"],
        }
        self.gate = self.build()
        if self.wait_for_discovery:
            self.start()
            await self.gate.oidc.when_discovered()

    def start(self) -> None:
        self.gate.startService()
        self.addCleanup(self.gate.stopService)

    def oidc_config(self, **overrides: Any) -> OIDCConfig:
        values: dict[str, Any] = dict(
            issuer=self.idp.issuer,
            audience=(AUDIENCE,),
            mode=self.mode,
            name_claim="email",
            tenants_claim="groups",
            group_tenants=self.group_tenants,
            group_limits=self.group_limits,
            leeway=30.0,
            cache_ttl=300.0,
            timeout=2.0,
            jwks_min_refresh_interval=self.min_refresh,
        )
        values.update(overrides)
        return OIDCConfig(**values)

    def build(self, **overrides: Any) -> Any:
        self.registry = CollectorRegistry()
        config = Config(
            source="test.yaml",
            listeners=(),
            auth=AuthConfig(oidc=self.oidc_config(**overrides)),
        )
        gate = build_gate(config, reactor, self.registry)
        gate.oidc.retry_interval = 0.05
        return gate

    async def refused(self, request: Any, kind: type[AuthError], **kw: Any) -> Any:
        try:
            admission = await admit(self.gate, request, **kw)
        except kind as e:
            return e
        self.fail(f"admitted as {admission!r}, expected {kind.__name__}")


class JWTTests(OIDCTestCase):
    async def test_rs256_accepted(self) -> None:
        token = self.idp.issue(self.idp.rsa)
        admission = await admit(self.gate, fake_request(token))
        self.assertEqual(admission.identity.name, "alice@example.com")
        self.assertEqual(admission.identity.checker, "oidc")
        self.assertEqual(admission.identity.tenants, frozenset(["team-a"]))
        self.assertEqual(admission.tenant, "team-a")

    async def test_es256_accepted(self) -> None:
        token = self.idp.issue(self.idp.ec, groups=["team-a", "team-b"], email="bob@example.com")
        admission = await admit(self.gate, fake_request(token, tenant="team-b"))
        self.assertEqual(admission.identity.name, "bob@example.com")
        self.assertEqual(admission.identity.tenants, frozenset(["team-a", "team-b"]))
        self.assertEqual(admission.tenant, "team-b")

    async def test_name_falls_back_to_sub(self) -> None:
        token = self.idp.issue(email=None)
        admission = await admit(self.gate, fake_request(token))
        self.assertEqual(admission.identity.name, "user-1")

    async def test_no_groups_default_tenant(self) -> None:
        admission = await admit(self.gate, fake_request(self.idp.issue(groups=None)))
        self.assertEqual(admission.tenant, "anonymous")

    async def test_audience_list(self) -> None:
        token = self.idp.issue(aud=["someone-else", AUDIENCE])
        await admit(self.gate, fake_request(token))

    async def test_within_leeway(self) -> None:
        now = int(time.time())
        await admit(self.gate, fake_request(self.idp.issue(exp=now - 10)))
        await admit(self.gate, fake_request(self.idp.issue(nbf=now + 10)))

    async def test_expired(self) -> None:
        token = self.idp.issue(exp=int(time.time()) - 120)
        error = await self.refused(fake_request(token), Unauthorized)
        self.assertEqual((error.status, error.reason), (401, "expired"))
        self.assertEqual(
            error.headers["WWW-Authenticate"], 'Bearer realm="sealgw", error="invalid_token"'
        )

    async def test_not_yet_valid(self) -> None:
        token = self.idp.issue(nbf=int(time.time()) + 120)
        error = await self.refused(fake_request(token), Unauthorized)
        self.assertEqual(error.reason, "not_yet_valid")

    async def test_no_expiry(self) -> None:
        error = await self.refused(fake_request(self.idp.issue(exp=None)), Unauthorized)
        self.assertIn("exp", error.message)

    async def test_wrong_issuer(self) -> None:
        token = self.idp.issue(iss="https://evil.example.com")
        error = await self.refused(fake_request(token), Unauthorized)
        self.assertEqual(error.reason, "invalid_token")
        self.assertIn("issuer", error.message)

    async def test_wrong_audience(self) -> None:
        error = await self.refused(fake_request(self.idp.issue(aud="other-app")), Unauthorized)
        self.assertIn("aud", error.message)

    async def test_unknown_kid_after_refresh(self) -> None:
        """
        A token signed by a key the issuer does not publish makes the gate
        fetch the JWKS again, then refuses it.
        """
        stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
        before = self.idp.requests["jwks"]
        error = await self.refused(fake_request(self.idp.issue(stranger)), Unauthorized)
        self.assertEqual(self.idp.requests["jwks"], before + 1)
        self.assertIn("signing key is unknown", error.message)

    async def test_stolen_kid(self) -> None:
        """
        A foreign key claiming a published kid fails on the signature.
        """
        impostor = RSAKey.generate_key(2048, parameters={"kid": self.idp.rsa.kid})
        error = await self.refused(fake_request(self.idp.issue(impostor)), Unauthorized)
        self.assertIn("signature", error.message)

    async def test_alg_none(self) -> None:
        before = self.idp.requests["jwks"]
        error = await self.refused(fake_request(self.idp.forge_none()), Unauthorized)
        self.assertIn("algorithm", error.message)
        self.assertEqual(self.idp.requests["jwks"], before)
        self.assertEqual(self.idp.requests["userinfo"], 0)

    async def test_hs256_with_public_key(self) -> None:
        token = self.idp.forge_hs256_with_public_key()
        error = await self.refused(fake_request(token), Unauthorized)
        self.assertIn("algorithm", error.message)

    async def test_altered_signature(self) -> None:
        token = self.idp.issue()
        header, payload, signature = token.split(".")
        # Change one byte of the signature (not just the base64 padding bits
        # of the last character).
        raw = bytearray(signature.encode())
        raw[10] = ord("A") if raw[10] != ord("A") else ord("B")
        forged = f"{header}.{payload}.{raw.decode()}"
        error = await self.refused(fake_request(forged), Unauthorized)
        self.assertEqual(error.reason, "invalid_token")
        self.assertIn("signature", error.message)

    async def test_altered_payload(self) -> None:
        """
        Claims changed after signing (a tenant grab) do not verify.
        """
        token = self.idp.issue()
        header, _, signature = token.split(".")
        import json

        from tests.idp import b64url

        payload = b64url(json.dumps(self.idp.claims(groups=["team-admin"])).encode())
        error = await self.refused(fake_request(f"{header}.{payload}.{signature}"), Unauthorized)
        self.assertIn("signature", error.message)

    async def test_key_rotation(self) -> None:
        new_key = self.idp.rotate()
        before = self.idp.requests["jwks"]
        admission = await admit(self.gate, fake_request(self.idp.issue(new_key)))
        self.assertEqual(admission.identity.name, "alice@example.com")
        self.assertEqual(self.idp.requests["jwks"], before + 1)

    async def test_forbidden_tenant(self) -> None:
        error = await self.refused(fake_request(self.idp.issue(), tenant="team-z"), Forbidden)
        self.assertEqual(error.status, 403)

    async def test_health(self) -> None:
        health = self.gate.health()["oidc"]
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["keys"], 2)
        self.assertGreaterEqual(health["jwks_age_seconds"], 0)


class RefreshRateTests(OIDCTestCase):
    min_refresh = 3600.0

    async def test_no_refresh_within_min_interval(self) -> None:
        """
        Unknown kids do not make the gate hammer the issuer: within
        jwks_min_refresh_interval of the last fetch, no new fetch happens.
        """
        stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
        before = self.idp.requests["jwks"]
        for _ in range(3):
            await self.refused(fake_request(self.idp.issue(stranger)), Unauthorized)
        self.assertEqual(self.idp.requests["jwks"], before)


class GroupTests(OIDCTestCase):
    group_tenants = {"team-a": ("metrics-a", "logs-a"), "admins": ("ops",)}
    group_limits = {
        "admins": RateLimitConfig(max_concurrent=1),
        "team-a": RateLimitConfig(requests_per_second=100),
    }

    async def test_group_tenants_mapping(self) -> None:
        token = self.idp.issue(groups=["team-a", "unmapped"])
        admission = await admit(self.gate, fake_request(token, tenant="logs-a"))
        self.assertEqual(admission.identity.tenants, frozenset(["metrics-a", "logs-a"]))
        self.assertEqual(admission.tenant, "logs-a")
        await self.refused(fake_request(token, tenant="team-a"), Forbidden)

    async def test_group_limits_first_listed_wins(self) -> None:
        token = self.idp.issue(groups=["team-a", "admins"])
        admission = await admit(self.gate, fake_request(token, tenant="ops"))
        self.assertEqual(admission.identity.limits, RateLimitConfig(max_concurrent=1))
        await self.refused(fake_request(token, tenant="ops"), RateLimited)
        admission.release()
        await admit(self.gate, fake_request(token, tenant="ops"))


class UserinfoTests(OIDCTestCase):
    async def test_opaque_token(self) -> None:
        admission = await admit(self.gate, fake_request(OPAQUE))
        self.assertEqual(admission.identity.name, "robot@example.com")
        self.assertEqual(admission.tenant, "team-x")
        self.assertEqual(self.idp.requests["userinfo"], 1)

    async def test_cached_within_ttl(self) -> None:
        await admit(self.gate, fake_request(OPAQUE))
        await admit(self.gate, fake_request(OPAQUE))
        self.assertEqual(self.idp.requests["userinfo"], 1)

    async def test_cache_key_is_not_the_token(self) -> None:
        await admit(self.gate, fake_request(OPAQUE))
        cache = self.gate.userinfo
        self.assertEqual(cache.keys(), [hashlib.sha256(OPAQUE.encode()).digest()])
        self.assertNotIn(OPAQUE, repr(vars(cache)))
        self.assertNotIn(OPAQUE.encode(), cache.keys())

    async def test_concurrent_requests_share_one_call(self) -> None:
        hold: Deferred[None] = Deferred()
        self.idp.userinfo_hold = hold
        waiting = [admit(self.gate, fake_request(OPAQUE)) for _ in range(5)]
        await until(lambda: self.idp.requests["userinfo"] == 1)
        # Give any extra lookups a chance to show up before answering.
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.idp.requests["userinfo"], 1)
        self.idp.userinfo_hold = None
        hold.callback(None)
        admissions = await gatherResults(waiting)
        self.assertEqual({a.identity.name for a in admissions}, {"robot@example.com"})
        self.assertEqual(self.idp.requests["userinfo"], 1)

    async def test_refused_token(self) -> None:
        error = await self.refused(fake_request("opaque-unknown"), Unauthorized)
        self.assertEqual(error.reason, "invalid_token")
        # The refusal is remembered for a while too.
        await self.refused(fake_request("opaque-unknown"), Unauthorized)
        self.assertEqual(self.idp.requests["userinfo"], 1)

    async def test_timeout_fails_closed(self) -> None:
        self.gate = self.build(timeout=0.3)
        self.start()
        await self.gate.oidc.when_discovered()
        self.idp.userinfo_hold = Deferred()
        error = await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertEqual(error.status, 503)
        self.assertIn("Retry-After", error.headers)

    async def test_issuer_error_fails_closed(self) -> None:
        self.idp.failing.add("userinfo")
        error = await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertEqual(error.status, 503)
        # Not cached: once the issuer is well again, the token works.
        self.idp.failing.clear()
        await admit(self.gate, fake_request(OPAQUE))

    async def test_token_never_logged(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        jwt = self.idp.issue()
        await admit(self.gate, fake_request(OPAQUE))
        await admit(self.gate, fake_request(jwt))
        await self.refused(fake_request("opaque-unknown"), Unauthorized)
        await self.refused(fake_request(self.idp.issue(exp=1)), Unauthorized)
        await self.idp.go_down()
        await self.refused(fake_request("opaque-other"), IdentityProviderUnavailable)
        self.assertTrue(events)
        for event in events:
            text = repr(event) + (formatEvent(event) or "")
            for secret in (OPAQUE, jwt, "opaque-unknown", "opaque-other"):
                self.assertNotIn(secret, text)


class BadAnswerTests(OIDCTestCase):
    """
    An issuer that answers, but nonsense, is treated like one that is down.
    """

    async def test_userinfo_not_json(self) -> None:
        self.idp.overrides["userinfo"] = (200, b"<html>login</html>")
        error = await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertEqual(error.status, 503)

    async def test_userinfo_not_an_object(self) -> None:
        self.idp.overrides["userinfo"] = (200, b"[1, 2]")
        await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)

    async def test_userinfo_too_large(self) -> None:
        self.idp.overrides["userinfo"] = (200, b'{"sub": "' + b"x" * (2 * 1024 * 1024) + b'"}')
        error = await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertIn("could not be reached", error.message)
        self.assertIn("larger than", self.gate.oidc.last_error)

    async def test_userinfo_redirect(self) -> None:
        self.idp.overrides["userinfo"] = (302, b"")
        await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)

    async def test_userinfo_429(self) -> None:
        self.idp.overrides["userinfo"] = (429, b"slow down")
        await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)

    async def test_garbage_jwks_keeps_keys(self) -> None:
        self.idp.overrides["jwks"] = (200, b'{"no": "keys"}')
        await self.gate.oidc.refresh_keys()
        self.assertEqual(len(self.gate.oidc.jwks), 2)
        self.assertEqual(self.gate.health()["oidc"]["status"], "degraded")
        await admit(self.gate, fake_request(self.idp.issue()))

    async def test_odd_keys_skipped(self) -> None:
        """
        Symmetric and malformed keys in the JWKS are ignored; the others work.
        """
        import json

        good = [k.as_dict(private=False) for k in self.idp.published]
        odd = [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}, {"kty": "RSA", "kid": "broken"}]
        self.idp.overrides["jwks"] = (200, json.dumps({"keys": odd + good}).encode())
        await self.gate.oidc.refresh_keys()
        self.assertEqual(sorted(self.gate.oidc.jwks.by_kid), ["ec-1", "rsa-1"])


class AuditTests(OIDCTestCase):
    async def test_decisions_name_the_checker(self) -> None:
        await admit(self.gate, fake_request(self.idp.issue()))
        await self.refused(fake_request(self.idp.issue(exp=1)), Unauthorized)
        await self.idp.go_down()
        await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)

        def value(outcome: str, reason: str) -> Any:
            return self.registry.get_sample_value(
                "sealgw_auth_decisions_total",
                {"checker": "oidc", "outcome": outcome, "reason": reason},
            )

        self.assertEqual(value("allowed", "ok"), 1.0)
        self.assertEqual(value("denied", "expired"), 1.0)
        self.assertEqual(value("denied", "idp_unavailable"), 1.0)


class UserinfoModeTests(OIDCTestCase):
    mode = "userinfo"

    async def test_jwt_sent_to_userinfo(self) -> None:
        jwt = self.idp.issue()
        self.idp.opaque[jwt] = {"sub": "via-userinfo", "groups": ["g"]}
        admission = await admit(self.gate, fake_request(jwt))
        self.assertEqual(admission.identity.name, "via-userinfo")
        self.assertEqual(self.idp.requests["jwks"], 0)


class JWTModeTests(OIDCTestCase):
    mode = "jwt"

    async def test_opaque_refused(self) -> None:
        await self.refused(fake_request(OPAQUE), Unauthorized)
        self.assertEqual(self.idp.requests["userinfo"], 0)


class IssuerDownTests(OIDCTestCase):
    async def test_cached_keys_keep_working(self) -> None:
        await self.idp.go_down()
        for key in (self.idp.rsa, self.idp.ec):
            admission = await admit(self.gate, fake_request(self.idp.issue(key)))
            self.assertEqual(admission.identity.name, "alice@example.com")

    async def test_userinfo_identities_get_503(self) -> None:
        await self.idp.go_down()
        error = await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertEqual(error.status, 503)
        self.assertEqual(error.reason, "idp_unavailable")
        self.assertEqual(error.headers, {"Retry-After": "1"})

    async def test_nobody_let_in(self) -> None:
        """
        With the issuer down, tokens that need it are refused with 503 and
        bad tokens still with 401: no path lets anyone in.
        """
        await self.idp.go_down()
        stranger = RSAKey.generate_key(2048, parameters={"kid": "new-key"})
        await self.refused(fake_request(self.idp.issue(stranger)), IdentityProviderUnavailable)
        await self.refused(fake_request("opaque-unknown"), IdentityProviderUnavailable)
        await self.refused(fake_request(self.idp.forge_none()), Unauthorized)
        await self.refused(fake_request(self.idp.issue(exp=1)), Unauthorized)
        self.assertEqual(self.gate.health()["oidc"]["status"], "degraded")

    async def test_keys_kept_after_failed_refresh(self) -> None:
        await self.idp.go_down()
        await self.gate.oidc.refresh_keys()
        self.assertEqual(len(self.gate.oidc.jwks), 2)
        await admit(self.gate, fake_request(self.idp.issue()))

    async def test_back_up(self) -> None:
        await self.idp.go_down()
        await self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.idp.come_up()
        await admit(self.gate, fake_request(OPAQUE))
        self.assertEqual(self.gate.health()["oidc"]["status"], "ok")


class DiscoveryTests(OIDCTestCase):
    wait_for_discovery = False

    async def test_503_until_discovered(self) -> None:
        """
        Discovery does not hold up start-up; until it succeeds every OIDC
        token gets 503, and the LoopingCall keeps trying.
        """
        await self.idp.go_down()
        self.start()
        self.assertTrue(self.gate.running)
        for token in (self.idp.issue(), OPAQUE):
            error = await self.refused(fake_request(token), IdentityProviderUnavailable)
            self.assertEqual(error.status, 503)
            self.assertIn("Retry-After", error.headers)
        self.assertEqual(self.gate.health()["oidc"]["status"], "down")
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(self.idp.requests["discovery"], 0)
        self.idp.come_up()
        await self.gate.oidc.when_discovered()
        await admit(self.gate, fake_request(self.idp.issue()))
        self.assertEqual(self.gate.health()["oidc"]["status"], "ok")

    async def test_wrong_issuer_in_discovery(self) -> None:
        self.gate = self.build(issuer=self.idp.issuer + "/tenant-1")
        self.start()
        await until(lambda: self.gate.oidc.last_error is not None)
        self.assertIn("discovery", self.gate.oidc.last_error)
        await self.refused(fake_request(self.idp.issue()), IdentityProviderUnavailable)

    async def test_stop_while_discovering(self) -> None:
        """
        Stopping the gate while discovery waits on a silent issuer cancels
        it, leaving nothing behind in the reactor.
        """
        # Discovery against a port that accepts and never answers.
        from twisted.internet.protocol import Factory, Protocol

        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        self.gate = build_gate(
            Config(
                source="test.yaml",
                listeners=(),
                auth=AuthConfig(
                    oidc=self.oidc_config(
                        issuer=f"http://127.0.0.1:{silent.getHost().port}", timeout=30.0
                    )
                ),
            ),
            reactor,
            CollectorRegistry(),
        )
        self.gate.startService()
        await deferLater(reactor, 0.1, lambda: None)
        await self.gate.stopService()
