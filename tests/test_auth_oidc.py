"""
OpenID Connect against L{sealgw.testing.MemoryIdentityProvider} on a
L{Clock}: JWT verification (what is accepted and everything that is not,
EdDSA included), key refresh (on an unknown kid and on schedule) and
rotation (never a 401 for a rotated key; 503 with Retry-After while it
cannot be fetched; forged kids cost a bounded number of fetches), userinfo
with its cache (expiry, refusals, eviction), and failing closed when the
issuer is down.  Two tests cross a real socket: a smoke test over TLS with
a CA bundle, and a rotation over plain http.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from joserfc.jwk import OKPKey, RSAKey
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sealgw.auth import (
    Admission,
    AuthError,
    Forbidden,
    IdentityProviderUnavailable,
    RateLimited,
    Unauthorized,
    build_gate,
)
from sealgw.auth._jwt import JWKS, parse_jwks
from sealgw.auth._keys import (
    ISSUE_TIME_SLACK,
    MAX_REMEMBERED,
    UNKNOWN_KEY_TTL,
    SigningKeys,
    _tag,
)
from sealgw.auth._userinfo import NEGATIVE_TTL
from sealgw.config import AuthConfig, Config, ConfigError, OIDCConfig, RateLimitConfig
from sealgw.testing import MemoryHTTPClient, MemoryIdentityProvider, b64url, generate_keys
from tests.idp import AUDIENCE, FakeIdentityProvider, admit, fake_request
from tests.pki import Chain

OPAQUE = "opaque-access-token-3f9a1c"

#: Generating RSA keys is slow: one issuer key pair, and one key the issuer
#: never published, for the whole module.
KEYS = generate_keys()
STRANGER = RSAKey.generate_key(2048, parameters={"kid": "stranger"})

#: When the tests' clock starts: a realistic epoch time.
START = 1_700_000_000.0


class OIDCTestCase(SynchronousTestCase):
    """
    A gate asking an in-memory identity provider, on a clock.
    """

    mode = "auto"
    min_refresh = 0.0
    group_tenants: dict[str, tuple[str, ...]] = {}
    group_limits: dict[str, RateLimitConfig] = {}
    wait_for_discovery = True

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.idp = MemoryIdentityProvider(self.clock, keys=KEYS)
        self.idp.opaque[OPAQUE] = {
            "sub": "svc-7",
            "email": "robot@example.com",
            "groups": ["team-x"],
        }
        self.gate = self.build()
        if self.wait_for_discovery:
            self.start()
            self.successResultOf(self.gate.oidc.when_discovered())

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

    def build(self, client: Any = None, **overrides: Any) -> Any:
        self.registry = CollectorRegistry()
        self.client = client if client is not None else self.idp.client()
        config = Config(
            source="test.yaml",
            listeners=(),
            auth=AuthConfig(oidc=self.oidc_config(**overrides)),
        )
        return build_gate(config, self.clock, self.registry, idp_client=self.client)

    def admitted(self, request: Any, **kw: Any) -> Admission:
        admission: Admission = self.successResultOf(admit(self.gate, request, **kw))
        return admission

    def refused(self, request: Any, kind: type[AuthError], **kw: Any) -> Any:
        return self.failureResultOf(admit(self.gate, request, **kw), kind).value

    def tick(self, seconds: float) -> None:
        """
        Let C{seconds} pass, a maintenance interval at a time.
        """
        step = self.gate.oidc.retry_interval
        self.clock.pump([step] * int(seconds // step))


class JWTTests(OIDCTestCase):
    def test_rs256_accepted(self) -> None:
        admission = self.admitted(fake_request(self.idp.issue(self.idp.rsa)))
        self.assertEqual(admission.identity.name, "alice@example.com")
        self.assertEqual(admission.identity.checker, "oidc")
        self.assertEqual(admission.identity.tenants, frozenset(["team-a"]))
        self.assertEqual(admission.tenant, "team-a")

    def test_es256_accepted(self) -> None:
        token = self.idp.issue(self.idp.ec, groups=["team-a", "team-b"], email="bob@example.com")
        admission = self.admitted(fake_request(token, tenant="team-b"))
        self.assertEqual(admission.identity.name, "bob@example.com")
        self.assertEqual(admission.identity.tenants, frozenset(["team-a", "team-b"]))
        self.assertEqual(admission.tenant, "team-b")

    def test_name_falls_back_to_sub(self) -> None:
        admission = self.admitted(fake_request(self.idp.issue(email=None)))
        self.assertEqual(admission.identity.name, "user-1")

    def test_no_groups_default_tenant(self) -> None:
        admission = self.admitted(fake_request(self.idp.issue(groups=None)))
        self.assertEqual(admission.tenant, "anonymous")

    def test_audience_list(self) -> None:
        self.admitted(fake_request(self.idp.issue(aud=["someone-else", AUDIENCE])))

    def test_within_leeway(self) -> None:
        now = int(self.clock.seconds())
        self.admitted(fake_request(self.idp.issue(exp=now - 10)))
        self.admitted(fake_request(self.idp.issue(nbf=now + 10)))

    def test_expired(self) -> None:
        token = self.idp.issue(exp=int(self.clock.seconds()) - 120)
        error = self.refused(fake_request(token), Unauthorized)
        self.assertEqual((error.status, error.reason), (401, "expired"))
        self.assertTrue(
            error.headers["WWW-Authenticate"].startswith(
                'Bearer realm="sealgw", error="invalid_token"'
            )
        )

    def test_expires_while_held(self) -> None:
        """
        Expiry is judged by the gate's clock: the same token is accepted,
        then refused once C{exp} plus the leeway has passed.
        """
        token = self.idp.issue()
        self.admitted(fake_request(token))
        self.clock.advance(300 + 30 + 1)
        error = self.refused(fake_request(token), Unauthorized)
        self.assertEqual(error.reason, "expired")

    def test_not_yet_valid(self) -> None:
        token = self.idp.issue(nbf=int(self.clock.seconds()) + 120)
        error = self.refused(fake_request(token), Unauthorized)
        self.assertEqual(error.reason, "not_yet_valid")

    def test_no_expiry(self) -> None:
        error = self.refused(fake_request(self.idp.issue(exp=None)), Unauthorized)
        self.assertIn("exp", error.message)

    def test_wrong_issuer(self) -> None:
        token = self.idp.issue(iss="https://evil.example.com")
        error = self.refused(fake_request(token), Unauthorized)
        self.assertEqual(error.reason, "invalid_token")
        self.assertIn("issuer", error.message)

    def test_wrong_audience(self) -> None:
        error = self.refused(fake_request(self.idp.issue(aud="other-app")), Unauthorized)
        self.assertIn("aud", error.message)

    def test_unknown_kid_after_refresh(self) -> None:
        """
        A token signed by a key the issuer does not publish makes the gate
        fetch the JWKS again, then refuses it.
        """
        before = self.idp.requests["jwks"]
        error = self.refused(fake_request(self.idp.issue(STRANGER, iat=minute_ago(self.idp))), Unauthorized)
        self.assertEqual(self.idp.requests["jwks"], before + 1)
        self.assertIn("signing key is unknown", error.message)

    def test_stolen_kid(self) -> None:
        """
        A foreign key claiming a published kid fails on the signature.
        """
        impostor = RSAKey.import_key(STRANGER.as_dict(private=True) | {"kid": self.idp.rsa.kid})
        error = self.refused(fake_request(self.idp.issue(impostor)), Unauthorized)
        self.assertIn("signature", error.message)

    def test_alg_none(self) -> None:
        before = self.idp.requests["jwks"]
        error = self.refused(fake_request(self.idp.forge_none()), Unauthorized)
        self.assertIn("algorithm", error.message)
        self.assertEqual(self.idp.requests["jwks"], before)
        self.assertEqual(self.idp.requests["userinfo"], 0)

    def test_hs256_with_public_key(self) -> None:
        token = self.idp.forge_hs256_with_public_key()
        error = self.refused(fake_request(token), Unauthorized)
        self.assertIn("algorithm", error.message)

    def test_altered_signature(self) -> None:
        token = self.idp.issue()
        header, payload, signature = token.split(".")
        # Change one byte of the signature (not just the base64 padding bits
        # of the last character).
        raw = bytearray(signature.encode())
        raw[10] = ord("A") if raw[10] != ord("A") else ord("B")
        forged = f"{header}.{payload}.{raw.decode()}"
        error = self.refused(fake_request(forged), Unauthorized)
        self.assertEqual(error.reason, "invalid_token")
        self.assertIn("signature", error.message)

    def test_altered_payload(self) -> None:
        """
        Claims changed after signing (a tenant grab) do not verify.
        """
        header, _, signature = self.idp.issue().split(".")
        payload = b64url(json.dumps(self.idp.claims(groups=["team-admin"])).encode())
        error = self.refused(fake_request(f"{header}.{payload}.{signature}"), Unauthorized)
        self.assertIn("signature", error.message)

    def test_key_rotation(self) -> None:
        new_key = self.idp.rotate()
        before = self.idp.requests["jwks"]
        admission = self.admitted(fake_request(self.idp.issue(new_key)))
        self.assertEqual(admission.identity.name, "alice@example.com")
        self.assertEqual(self.idp.requests["jwks"], before + 1)

    def test_forbidden_tenant(self) -> None:
        error = self.refused(fake_request(self.idp.issue(), tenant="team-z"), Forbidden)
        self.assertEqual(error.status, 403)

    def test_health(self) -> None:
        self.clock.advance(2)
        health = self.gate.health()["oidc"]
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["keys"], 2)
        self.assertEqual(health["jwks_age_seconds"], 2)

    def test_issuer_asked_with_json_accept(self) -> None:
        """
        Discovery and JWKS are GETs asking for JSON, with no credentials.
        """
        for request in self.client.requests:
            self.assertEqual(request.method, "GET")
            self.assertEqual(request.header("Accept"), "application/json")
            self.assertIsNone(request.header("Authorization"))
        self.assertEqual(
            [r.url for r in self.client.requests],
            [self.idp.issuer + "/.well-known/openid-configuration", self.idp.issuer + "/jwks"],
        )


def base64url_json(token: str) -> bytes:
    """
    The JOSE header of C{token}, decoded.
    """
    segment = token.split(".")[0]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def forged(kid: str) -> RSAKey:
    """
    The stranger's key under another key id: a token signed with it names
    a key the issuer never published.
    """
    return RSAKey.import_key(STRANGER.as_dict(private=True) | {"kid": kid})


def minute_ago(idp: MemoryIdentityProvider) -> int:
    """
    An issue time a minute back: a token the last fetch of the JWKS can
    settle (a fetch settles a missing key only for tokens issued before it
    started, see L{sealgw.auth._keys.SigningKeys}).
    """
    return int(idp.clock.seconds()) - 60


def forged_token(idp: MemoryIdentityProvider, kid: str) -> str:
    """
    A token naming C{kid} with good claims and a made-up signature: cheap
    to make by the thousand, as a flood of forgeries would be.
    """
    header = b64url(json.dumps({"alg": "RS256", "kid": kid}).encode())
    payload = b64url(json.dumps(idp.claims(iat=minute_ago(idp))).encode())
    return f"{header}.{payload}.{b64url(bytes(256))}"


class RotationTests(OIDCTestCase):
    """
    Key rotation never costs a good token a 401: a token naming a key the
    gateway does not hold is settled on a fetch started after it was first
    asked for, and until one can be had the answer is 503 with
    C{Retry-After}.  Fetches for unknown keys come from a bucket (three,
    one more every 10 seconds), so forged key ids cannot hammer the issuer.
    """

    min_refresh = 10.0

    def pending(self, token: str) -> IdentityProviderUnavailable:
        error: IdentityProviderUnavailable = self.refused(
            fake_request(token), IdentityProviderUnavailable
        )
        self.assertEqual((error.status, error.reason), (503, "signing_key_pending"))
        return error

    def test_rotation_right_after_a_fetch(self) -> None:
        """
        The reported bug: a fetch a moment ago (here: a forged kid's) does
        not stop the fetch a rotated key needs.
        """
        self.refused(fake_request(self.idp.issue(forged("forged-1"), iat=minute_ago(self.idp))), Unauthorized)
        self.clock.advance(1)
        new_key = self.idp.rotate()
        admission = self.admitted(fake_request(self.idp.issue(new_key)))
        self.assertEqual(admission.identity.name, "alice@example.com")
        self.assertEqual(self.idp.requests["jwks"], 3)

    def test_guessed_next_kid(self) -> None:
        """
        A client that guesses the id of the issuer's next key (the test
        issuer numbers them) and asks for it just before the issuer
        publishes it gets its 401, but the key is remembered as missing
        only for tokens issued before that fetch began: the good tokens
        signed with it once published are admitted, never refused.
        """
        self.refused(fake_request(forged_token(self.idp, "rsa-2")), Unauthorized)
        fetches = self.idp.requests["jwks"]
        self.clock.advance(1)
        new_key = self.idp.rotate()
        self.assertEqual(new_key.kid, "rsa-2")
        admission = self.admitted(fake_request(self.idp.issue(new_key)))
        self.assertEqual(admission.identity.name, "alice@example.com")
        self.assertEqual(self.idp.requests["jwks"], fetches + 1)

    def test_fresh_token_with_unknown_key(self) -> None:
        """
        A token issued just now naming a key a fresh fetch lacks may be
        signed with a key published a moment after that fetch began: 503
        until a fetch started L{ISSUE_TIME_SLACK} after its issue time can
        tell, then 401.
        """
        token = self.idp.issue(forged("forged-9"))
        self.assertEqual(self.pending(token).headers, {"Retry-After": "2"})
        self.clock.advance(ISSUE_TIME_SLACK)
        error = self.refused(fake_request(token), Unauthorized)
        self.assertIn("signing key is unknown", error.message)

    def test_distinct_unknown_kids_each_settled(self) -> None:
        """
        A fetch for one unknown kid does not stop a fetch for another.
        """
        for n in range(3):
            error = self.refused(fake_request(self.idp.issue(forged(f"forged-{n}"), iat=minute_ago(self.idp))), Unauthorized)
            self.assertIn("signing key is unknown", error.message)
        self.assertEqual(self.idp.requests["jwks"], 1 + 3)

    def test_repeated_unknown_kid_costs_nothing(self) -> None:
        """
        A kid a fresh fetch did not hold is refused outright for
        L{UNKNOWN_KEY_TTL}, then checked again with one fetch.
        """
        token = self.idp.issue(forged("forged-1"), iat=minute_ago(self.idp))
        for _ in range(50):
            self.refused(fake_request(token), Unauthorized)
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.clock.advance(UNKNOWN_KEY_TTL - 1)
        self.refused(fake_request(token), Unauthorized)
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.clock.advance(1)
        self.refused(fake_request(token), Unauthorized)
        self.assertEqual(self.idp.requests["jwks"], 3)

    def test_rotation_while_fetches_used_up(self) -> None:
        """
        With the bucket empty, a rotated key's token gets 503 with the
        seconds until the next fetch, which then happens by itself; the
        client's retry is admitted.
        """
        for n in range(3):
            self.refused(fake_request(self.idp.issue(forged(f"forged-{n}"), iat=minute_ago(self.idp))), Unauthorized)
        new_key = self.idp.rotate()
        token = self.idp.issue(new_key)
        error = self.pending(token)
        self.assertEqual(error.headers, {"Retry-After": "10"})
        self.assertEqual(self.idp.requests["jwks"], 4)
        # Asking again meanwhile neither fetches nor moves the time.
        self.clock.advance(4)
        self.assertEqual(self.pending(token).headers, {"Retry-After": "6"})
        self.clock.advance(6)
        self.assertEqual(self.idp.requests["jwks"], 5)
        self.admitted(fake_request(token))
        self.assertEqual(self.idp.requests["jwks"], 5)

    def test_forged_flood_bounded_and_rotation_picked_up(self) -> None:
        """
        A client sending ten tokens a second, each naming a new forged kid,
        makes at most one fetch per 10 seconds after the first three, is
        never let in, and does not keep a rotated key out: its client,
        retrying as told, is admitted within 10 seconds and never sees 401.
        """
        before = self.idp.requests["jwks"]
        answers: list[int] = []
        token = None
        rotated_at = admitted_at = None
        retry_at = 0.0
        forgeries = 0
        for tick in range(1200):
            now = self.clock.seconds()
            forgeries += 1
            outcome = admit(self.gate, fake_request(forged_token(self.idp, f"f-{forgeries}")))
            failure = self.failureResultOf(outcome, Unauthorized, IdentityProviderUnavailable)
            self.assertIn(failure.value.status, (401, 503))
            if tick == 300:
                token = self.idp.issue(self.idp.rotate())
                rotated_at = now
            if token is not None and admitted_at is None and now >= retry_at:
                outcome = admit(self.gate, fake_request(token))
                if outcome.called and not isinstance(outcome.result, Failure):
                    self.successResultOf(outcome)
                    admitted_at = now
                else:
                    error = self.failureResultOf(outcome, AuthError).value
                    answers.append(error.status)
                    retry_at = now + int(error.headers["Retry-After"])
            self.clock.advance(0.1)
        elapsed = self.clock.seconds() - START
        self.assertLessEqual(self.idp.requests["jwks"] - before, 3 + elapsed / 10 + 1)
        assert rotated_at is not None and admitted_at is not None
        self.assertLessEqual(admitted_at - rotated_at, 10.5)
        self.assertNotIn(401, answers)
        self.assertTrue(answers)


class KeyFetchTests(OIDCTestCase):
    """
    How fetches for unknown keys are shared and when they settle anything;
    what a client sees while the issuer cannot give its keys.
    """

    min_refresh = 10.0

    def test_fetch_on_its_way_settles_nothing(self) -> None:
        """
        A fetch started before the issuer rotated its keys does not hold
        the new key; a token with it is not refused on that fetch, but
        waits for one started after it was asked for.
        """
        self.idp.jwks_hold = hold = Deferred()
        forgery = admit(self.gate, fake_request(forged_token(self.idp, "forged-1")))
        self.assertEqual(self.idp.requests["jwks"], 2)
        token = self.idp.issue(self.idp.rotate())
        waiting = admit(self.gate, fake_request(token))
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.idp.jwks_hold = None
        hold.callback(None)
        self.failureResultOf(forgery, Unauthorized)
        self.assertEqual(self.successResultOf(waiting).identity.name, "alice@example.com")
        self.assertEqual(self.idp.requests["jwks"], 3)

    def test_concurrent_tokens_share_one_fetch(self) -> None:
        self.idp.jwks_hold = hold = Deferred()
        token = self.idp.issue(self.idp.rotate())
        waiting = [admit(self.gate, fake_request(token)) for _ in range(5)]
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.idp.jwks_hold = None
        hold.callback(None)
        admissions = self.successResultOf(gatherResults(waiting))
        self.assertEqual(len(admissions), 5)
        self.assertEqual(self.idp.requests["jwks"], 2)

    def test_client_gone_does_not_cancel_the_fetch(self) -> None:
        self.idp.jwks_hold = hold = Deferred()
        token = self.idp.issue(self.idp.rotate())
        first = admit(self.gate, fake_request(token))
        second = admit(self.gate, fake_request(token))
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.idp.jwks_hold = None
        hold.callback(None)
        self.successResultOf(second)
        self.assertFalse(self.client.requests[-1].cancelled)

    def test_issuer_down(self) -> None:
        """
        A rotated key's token while the issuer is down: 503 with
        C{Retry-After}, never 401; admitted once the issuer is back.
        """
        token = self.idp.issue(self.idp.rotate())
        self.idp.down = True
        retry_after = []
        for _ in range(5):
            error = self.refused(fake_request(token), IdentityProviderUnavailable)
            self.assertEqual((error.status, error.reason), (503, "idp_unavailable"))
            retry_after.append(error.headers["Retry-After"])
        # Three fetches from the bucket, each failing; then it is empty,
        # and the next fetch is due in 10 seconds.
        self.assertEqual(retry_after, ["5", "5", "10", "10", "10"])
        self.assertEqual(len(self.client.requests), 2 + 3)
        self.idp.down = False
        self.clock.advance(10)
        # The fetch armed for then has happened.
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.admitted(fake_request(token))
        # Tokens that are bad for other reasons stay 401 all along.
        self.idp.down = True
        self.refused(fake_request(self.idp.issue(exp=1)), Unauthorized)

    def test_issuer_answers_garbage(self) -> None:
        token = self.idp.issue(self.idp.rotate())
        for status, body in [(200, b"<html>"), (200, b'{"no": "keys"}'), (404, b"gone")]:
            self.idp.overrides["jwks"] = (status, body)
            error = self.refused(fake_request(token), IdentityProviderUnavailable)
            self.assertEqual(error.status, 503)
            self.assertIn("Retry-After", error.headers)
            self.clock.advance(10)
        del self.idp.overrides["jwks"]
        self.admitted(fake_request(token))

    def test_issuer_slow(self) -> None:
        """
        No JWKS within C{timeout}: 503, the fetch cancelled.
        """
        self.gate = self.build(timeout=2.0, jwks_min_refresh_interval=10.0)
        self.start()
        self.successResultOf(self.gate.oidc.when_discovered())
        token = self.idp.issue(self.idp.rotate())
        self.idp.jwks_hold = Deferred()
        waiting = admit(self.gate, fake_request(token))
        self.clock.advance(1.999)
        self.assertNoResult(waiting)
        self.clock.advance(0.001)
        error = self.failureResultOf(waiting, IdentityProviderUnavailable).value
        self.assertEqual(error.headers, {"Retry-After": "5"})
        self.assertTrue(self.client.requests[-1].cancelled)

    def test_bucket_refills_one_per_interval(self) -> None:
        for n in range(3):
            self.refused(fake_request(forged_token(self.idp, f"forged-{n}")), Unauthorized)
        error = self.refused(fake_request(forged_token(self.idp, "forged-3")), AuthError)
        self.assertEqual((error.status, error.headers), (503, {"Retry-After": "10"}))
        self.clock.advance(10)
        self.assertEqual(self.idp.requests["jwks"], 1 + 3 + 1)
        # The armed fetch settled forged-3; forged-4 waits for the next one.
        self.refused(fake_request(forged_token(self.idp, "forged-3")), Unauthorized)
        error = self.refused(fake_request(forged_token(self.idp, "forged-4")), AuthError)
        self.assertEqual((error.status, error.headers), (503, {"Retry-After": "10"}))

    def test_stop_cancels_the_armed_fetch(self) -> None:
        for n in range(4):
            self.failureResultOf(
                admit(self.gate, fake_request(forged_token(self.idp, f"forged-{n}"))), AuthError
            )
        self.assertTrue(self.clock.getDelayedCalls())
        self.successResultOf(self.gate.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_known_kid_unsuitable_for_alg(self) -> None:
        """
        A token naming a published key of another type is refused without
        a fetch: a new set would not change that.
        """
        token = self.idp.issue(self.idp.rsa, header={"kid": self.idp.ec.kid})
        error = self.refused(fake_request(token), Unauthorized)
        self.assertIn("does not suit", error.message)
        self.assertEqual(self.idp.requests["jwks"], 1)

    def test_no_kid(self) -> None:
        """
        A token naming no key is verified with the one key that suits its
        algorithm; with several, it is refused.
        """
        self.admitted(fake_request(self.idp.issue(header={"kid": None})))
        self.idp.published.append(RSAKey.generate_key(2048, parameters={"kid": "rsa-extra"}))
        self.gate.oidc.refresh_keys()
        error = self.refused(fake_request(self.idp.issue(header={"kid": None})), Unauthorized)
        self.assertIn("several", error.message)


class SigningKeysTests(SynchronousTestCase):
    """
    L{SigningKeys} on its own, over a fetch function the test scripts.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.sets: list[Any] = []
        self.keys = SigningKeys(self.fetch, self.clock, interval=10.0, burst=2, retry_after=5.0)

    async def fetch(self) -> JWKS:
        answer = self.sets.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return parse_jwks({"keys": [k.as_dict(private=False) for k in answer]}, 0.0)

    def key_for(self, kid: str) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.keys.key_for(kid, "RS256"))

    def test_bug_in_fetching_is_503(self) -> None:
        """
        Something that is not the issuer's fault going wrong while fetching
        is logged, and the token gets 503, not 500.
        """
        self.sets.append(RuntimeError("a bug"))
        error = self.failureResultOf(self.key_for("rsa-1"), IdentityProviderUnavailable).value
        self.assertEqual(error.status, 503)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.sets.append([KEYS[0]])
        self.assertIs(self.successResultOf(self.key_for("rsa-1")), self.keys.jwks.by_kid["rsa-1"])

    def test_remembered_at_least_one_refill(self) -> None:
        """
        With a refill slower than L{UNKNOWN_KEY_TTL}, a missing kid is
        remembered for one refill, so a client repeating it keeps its 401
        instead of draining the bucket into 503s.
        """
        self.keys = SigningKeys(self.fetch, self.clock, interval=300.0, burst=1, retry_after=5.0)
        self.sets.append([KEYS[0]])
        self.failureResultOf(self.key_for("forged-0"), Unauthorized)
        self.clock.advance(299)
        self.failureResultOf(self.key_for("forged-0"), Unauthorized)
        self.assertEqual(self.keys.last_fetch, 0.0)

    def test_remembered_kids_bounded(self) -> None:
        """
        At most L{MAX_REMEMBERED} missing kids are kept, the oldest going
        first; a kid forgotten costs one fetch more, never a wrong answer.
        """
        self.keys = SigningKeys(self.fetch, self.clock, interval=0.0, burst=1, retry_after=5.0)
        self.sets.append([KEYS[0]])
        self.failureResultOf(self.key_for("forged-0"), Unauthorized)
        for n in range(1, MAX_REMEMBERED + 1):
            self.keys._remember(_tag(f"forged-{n}", "RS256"), self.clock.seconds())
        self.assertEqual(len(self.keys._missing), MAX_REMEMBERED)
        self.sets.append([KEYS[0]])
        self.failureResultOf(self.key_for("forged-0"), Unauthorized)
        self.assertEqual(self.sets, [])


class EdDSATests(OIDCTestCase):
    """
    Ed25519 keys (C{kty: OKP}) and EdDSA tokens, when the operator accepts
    the algorithm.
    """

    def setUp(self) -> None:
        super().setUp()
        # sealgw.auth._jwt silences joserfc's warning that RFC 9864 renamed
        # EdDSA; trial shows every warning all the same.
        self.addCleanup(self.flushWarnings)
        self.ed = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1", "alg": "EdDSA"})
        self.idp.published.append(self.ed)
        self.gate = self.build(algorithms=("RS256", "EdDSA"))
        self.start()
        self.successResultOf(self.gate.oidc.when_discovered())

    def test_eddsa_accepted(self) -> None:
        token = self.idp.issue(self.ed)
        self.assertEqual(json.loads(base64url_json(token))["alg"], "EdDSA")
        admission = self.admitted(fake_request(token, tenant="team-a"))
        self.assertEqual(admission.identity.name, "alice@example.com")

    def test_eddsa_bad_signature(self) -> None:
        other = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})
        error = self.refused(fake_request(self.idp.issue(other)), Unauthorized)
        self.assertIn("signature", error.message)

    def test_eddsa_not_accepted_unless_listed(self) -> None:
        self.gate = self.build()
        self.start()
        self.successResultOf(self.gate.oidc.when_discovered())
        error = self.refused(fake_request(self.idp.issue(self.ed)), Unauthorized)
        self.assertIn("algorithm is not accepted", error.message)

    def test_other_okp_curves_refused(self) -> None:
        """
        Only Ed25519 signs EdDSA tokens here: an Ed448 key is not used, and
        an X25519 key (for key agreement) never signs.
        """
        ed448 = OKPKey.generate_key("Ed448", parameters={"kid": "ed448"})
        x25519 = OKPKey.generate_key("X25519", parameters={"kid": "x25519"})
        self.idp.published += [ed448, x25519]
        self.successResultOf(self.gate.oidc.refresh_keys())
        self.assertIn("x25519", self.gate.oidc.jwks.by_kid)
        error = self.refused(fake_request(self.idp.issue(ed448)), Unauthorized)
        self.assertIn("does not suit", error.message)
        forged_x = forged_token(self.idp, "x25519").replace(
            b64url(json.dumps({"alg": "RS256", "kid": "x25519"}).encode()),
            b64url(json.dumps({"alg": "EdDSA", "kid": "x25519"}).encode()),
        )
        error = self.refused(fake_request(forged_x), Unauthorized)
        self.assertIn("does not suit", error.message)

    def test_rotation_to_eddsa(self) -> None:
        before = self.idp.requests["jwks"]
        new = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-2"})
        self.idp.published = [new]
        self.admitted(fake_request(self.idp.issue(new)))
        self.assertEqual(self.idp.requests["jwks"], before + 1)


class ScheduledRefreshTests(OIDCTestCase):
    """
    The keys are fetched every C{jwks_refresh_interval} (an hour), so a
    key the issuer withdrew stops being accepted even when no token ever
    names an unknown kid.
    """

    min_refresh = 30.0

    def test_withdrawn_key_refused_after_refresh(self) -> None:
        old = self.idp.rsa
        self.idp.rotate()
        self.tick(3595)
        # Not refreshed yet: the withdrawn key still verifies.
        self.assertEqual(self.idp.requests["jwks"], 1)
        self.admitted(fake_request(self.idp.issue(old)))
        self.tick(5)
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.assertEqual(sorted(self.gate.oidc.jwks.by_kid), ["ec-1", "rsa-2"])
        error = self.refused(
            fake_request(self.idp.issue(old, iat=minute_ago(self.idp))), Unauthorized
        )
        self.assertIn("signing key is unknown", error.message)
        self.admitted(fake_request(self.idp.issue()))

    def test_failed_refresh_keeps_keys_and_retries(self) -> None:
        """
        An issuer down at refresh time leaves the keys in force; the loop
        tries again after C{jwks_min_refresh_interval}.
        """
        self.idp.down = True
        self.tick(3600)
        self.assertEqual(len(self.gate.oidc.jwks), 2)
        self.assertEqual(self.gate.health()["oidc"]["status"], "degraded")
        self.admitted(fake_request(self.idp.issue()))
        self.idp.down = False
        self.tick(25)
        self.assertEqual(self.idp.requests["jwks"], 1)
        self.tick(5)
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.assertEqual(self.gate.health()["oidc"]["status"], "ok")

    def test_maintenance_survives_errors(self) -> None:
        """
        The loop does not stop when a refresh fails: it is still running,
        and still refreshing, hours later.
        """
        self.idp.failing.add("jwks")
        self.tick(3600 * 3)
        self.assertTrue(self.gate.oidc._loop.running)
        self.idp.failing.clear()
        self.tick(30)
        self.assertEqual(self.gate.health()["oidc"]["status"], "ok")


class GroupTests(OIDCTestCase):
    group_tenants = {"team-a": ("metrics-a", "logs-a"), "admins": ("ops",)}
    group_limits = {
        "admins": RateLimitConfig(max_concurrent=1),
        "team-a": RateLimitConfig(requests_per_second=100),
    }

    def test_group_tenants_mapping(self) -> None:
        token = self.idp.issue(groups=["team-a", "unmapped"])
        admission = self.admitted(fake_request(token, tenant="logs-a"))
        self.assertEqual(admission.identity.tenants, frozenset(["metrics-a", "logs-a"]))
        self.assertEqual(admission.tenant, "logs-a")
        self.refused(fake_request(token, tenant="team-a"), Forbidden)

    def test_group_limits_first_listed_wins(self) -> None:
        token = self.idp.issue(groups=["team-a", "admins"])
        admission = self.admitted(fake_request(token, tenant="ops"))
        self.assertEqual(admission.identity.limits, RateLimitConfig(max_concurrent=1))
        self.refused(fake_request(token, tenant="ops"), RateLimited)
        admission.release()
        self.admitted(fake_request(token, tenant="ops"))


class UserinfoTests(OIDCTestCase):
    def test_opaque_token(self) -> None:
        admission = self.admitted(fake_request(OPAQUE))
        self.assertEqual(admission.identity.name, "robot@example.com")
        self.assertEqual(admission.tenant, "team-x")
        self.assertEqual(self.idp.requests["userinfo"], 1)
        [asked] = [r for r in self.client.requests if r.url.endswith("/userinfo")]
        self.assertEqual(asked.header("Authorization"), f"Bearer {OPAQUE}")

    def test_cached_within_ttl(self) -> None:
        self.admitted(fake_request(OPAQUE))
        self.clock.advance(299)
        self.admitted(fake_request(OPAQUE))
        self.assertEqual(self.idp.requests["userinfo"], 1)

    def test_asked_again_after_ttl(self) -> None:
        """
        An answer is reused for C{cache_ttl}, then the issuer is asked
        again, and its new answer counts.
        """
        self.admitted(fake_request(OPAQUE))
        self.clock.advance(300)
        self.idp.opaque[OPAQUE] = {"sub": "svc-7", "email": "renamed@example.com"}
        admission = self.admitted(fake_request(OPAQUE))
        self.assertEqual(self.idp.requests["userinfo"], 2)
        self.assertEqual(admission.identity.name, "renamed@example.com")

    def test_revoked_token_refused_after_ttl(self) -> None:
        self.admitted(fake_request(OPAQUE))
        del self.idp.opaque[OPAQUE]
        self.clock.advance(300)
        self.refused(fake_request(OPAQUE), Unauthorized)

    def test_cache_key_is_not_the_token(self) -> None:
        self.admitted(fake_request(OPAQUE))
        cache = self.gate.userinfo
        self.assertEqual(cache.keys(), [hashlib.sha256(OPAQUE.encode()).digest()])
        self.assertNotIn(OPAQUE, repr(vars(cache)))
        self.assertNotIn(OPAQUE.encode(), cache.keys())

    def test_concurrent_requests_share_one_call(self) -> None:
        hold: Deferred[None] = Deferred()
        self.idp.userinfo_hold = hold
        waiting = [admit(self.gate, fake_request(OPAQUE)) for _ in range(5)]
        self.assertEqual(self.idp.requests["userinfo"], 1)
        self.idp.userinfo_hold = None
        hold.callback(None)
        admissions = self.successResultOf(gatherResults(waiting))
        self.assertEqual({a.identity.name for a in admissions}, {"robot@example.com"})
        self.assertEqual(self.idp.requests["userinfo"], 1)

    def test_refused_token(self) -> None:
        error = self.refused(fake_request("opaque-unknown"), Unauthorized)
        self.assertEqual(error.reason, "invalid_token")
        # The refusal is remembered for a while too.
        self.refused(fake_request("opaque-unknown"), Unauthorized)
        self.assertEqual(self.idp.requests["userinfo"], 1)

    def test_refusal_remembered_for_negative_ttl(self) -> None:
        """
        A refusal is kept for L{NEGATIVE_TTL} (shorter than C{cache_ttl}):
        a token the issuer learns meanwhile works once that has passed.
        """
        self.refused(fake_request("opaque-new"), Unauthorized)
        self.idp.opaque["opaque-new"] = {"sub": "late", "groups": ["team-x"]}
        self.clock.advance(NEGATIVE_TTL - 1)
        self.refused(fake_request("opaque-new"), Unauthorized)
        self.assertEqual(self.idp.requests["userinfo"], 1)
        self.clock.advance(1)
        self.assertEqual(self.admitted(fake_request("opaque-new")).identity.name, "late")
        self.assertEqual(self.idp.requests["userinfo"], 2)

    def test_refusal_never_outlives_cache_ttl(self) -> None:
        self.gate = self.build(cache_ttl=10.0)
        self.start()
        self.refused(fake_request("opaque-new"), Unauthorized)
        self.idp.opaque["opaque-new"] = {"sub": "late"}
        self.clock.advance(10)
        self.admitted(fake_request("opaque-new"))

    def test_least_recently_used_evicted(self) -> None:
        """
        Past C{max_entries} the answer used least recently goes first.
        """
        cache = self.gate.userinfo
        cache.max_entries = 2
        for token in ("tok-a", "tok-b", "tok-c"):
            self.idp.opaque[token] = {"sub": token}
        self.admitted(fake_request("tok-a"))
        self.admitted(fake_request("tok-b"))
        self.admitted(fake_request("tok-a"))
        self.admitted(fake_request("tok-c"))
        digest = {t: hashlib.sha256(t.encode()).digest() for t in ("tok-a", "tok-b", "tok-c")}
        self.assertEqual(cache.keys(), [digest["tok-a"], digest["tok-c"]])
        self.assertEqual(self.idp.requests["userinfo"], 3)
        self.admitted(fake_request("tok-a"))
        self.assertEqual(self.idp.requests["userinfo"], 3)
        self.admitted(fake_request("tok-b"))
        self.assertEqual(self.idp.requests["userinfo"], 4)

    def test_timeout_fails_closed(self) -> None:
        """
        No answer within C{timeout}: 503, and the request to the issuer
        is cancelled, not left open.
        """
        self.gate = self.build(timeout=0.3)
        self.start()
        self.successResultOf(self.gate.oidc.when_discovered())
        self.idp.userinfo_hold = Deferred()
        waiting = admit(self.gate, fake_request(OPAQUE))
        self.clock.advance(0.299)
        self.assertNoResult(waiting)
        self.clock.advance(0.001)
        error = self.failureResultOf(waiting, IdentityProviderUnavailable).value
        self.assertEqual(error.status, 503)
        self.assertIn("Retry-After", error.headers)
        self.assertTrue(self.client.requests[-1].cancelled)
        self.assertIn("no answer within 0.3s", self.gate.oidc.last_error)

    def test_issuer_error_fails_closed(self) -> None:
        self.idp.failing.add("userinfo")
        error = self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertEqual(error.status, 503)
        # Not cached: once the issuer is well again, the token works.
        self.idp.failing.clear()
        self.admitted(fake_request(OPAQUE))

    def test_token_never_logged(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        jwt = self.idp.issue()
        self.admitted(fake_request(OPAQUE))
        self.admitted(fake_request(jwt))
        self.refused(fake_request("opaque-unknown"), Unauthorized)
        self.refused(fake_request(self.idp.issue(exp=1)), Unauthorized)
        self.idp.down = True
        self.refused(fake_request("opaque-other"), IdentityProviderUnavailable)
        self.assertTrue(events)
        for event in events:
            text = repr(event) + (formatEvent(event) or "")
            for secret in (OPAQUE, jwt, "opaque-unknown", "opaque-other"):
                self.assertNotIn(secret, text)


class BadAnswerTests(OIDCTestCase):
    """
    An issuer that answers, but nonsense, is treated like one that is down.
    """

    def test_userinfo_not_json(self) -> None:
        self.idp.overrides["userinfo"] = (200, b"<html>login</html>")
        error = self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertEqual(error.status, 503)

    def test_userinfo_not_an_object(self) -> None:
        self.idp.overrides["userinfo"] = (200, b"[1, 2]")
        self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)

    def test_userinfo_too_large(self) -> None:
        self.idp.overrides["userinfo"] = (200, b'{"sub": "' + b"x" * (2 * 1024 * 1024) + b'"}')
        error = self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertIn("could not be reached", error.message)
        self.assertIn("larger than", self.gate.oidc.last_error)

    def test_userinfo_redirect(self) -> None:
        self.idp.overrides["userinfo"] = (302, b"")
        self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)

    def test_userinfo_429(self) -> None:
        self.idp.overrides["userinfo"] = (429, b"slow down")
        self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)

    def test_garbage_jwks_keeps_keys(self) -> None:
        self.idp.overrides["jwks"] = (200, b'{"no": "keys"}')
        self.successResultOf(self.gate.oidc.refresh_keys())
        self.assertEqual(len(self.gate.oidc.jwks), 2)
        self.assertEqual(self.gate.health()["oidc"]["status"], "degraded")
        self.admitted(fake_request(self.idp.issue()))

    def test_odd_keys_skipped(self) -> None:
        """
        Symmetric and malformed keys in the JWKS are ignored; the others work.
        """
        good = [k.as_dict(private=False) for k in self.idp.published]
        odd = [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken"},
            {"kty": "EC", "kid": "ec-curve", "crv": "Ed25519", "x": "AAAA", "y": "AAAA"},
            {"kty": "OKP", "kid": "okp-curve", "crv": "P-256", "x": "AAAA"},
            {"kty": "OKP", "kid": "okp-short", "crv": "Ed25519", "x": "AAAA"},
        ]
        self.idp.overrides["jwks"] = (200, json.dumps({"keys": odd + good}).encode())
        self.successResultOf(self.gate.oidc.refresh_keys())
        self.assertEqual(sorted(self.gate.oidc.jwks.by_kid), ["ec-1", "rsa-1"])


class AuditTests(OIDCTestCase):
    def test_decisions_name_the_checker(self) -> None:
        self.admitted(fake_request(self.idp.issue()))
        self.refused(fake_request(self.idp.issue(exp=1)), Unauthorized)
        self.idp.down = True
        self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)

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

    def test_jwt_sent_to_userinfo(self) -> None:
        jwt = self.idp.issue()
        self.idp.opaque[jwt] = {"sub": "via-userinfo", "groups": ["g"]}
        admission = self.admitted(fake_request(jwt))
        self.assertEqual(admission.identity.name, "via-userinfo")
        self.assertEqual(self.idp.requests["jwks"], 0)


class JWTModeTests(OIDCTestCase):
    mode = "jwt"

    def test_opaque_refused(self) -> None:
        self.refused(fake_request(OPAQUE), Unauthorized)
        self.assertEqual(self.idp.requests["userinfo"], 0)


class IssuerDownTests(OIDCTestCase):
    def test_cached_keys_keep_working(self) -> None:
        self.idp.down = True
        for key in (self.idp.rsa, self.idp.ec):
            admission = self.admitted(fake_request(self.idp.issue(key)))
            self.assertEqual(admission.identity.name, "alice@example.com")

    def test_userinfo_identities_get_503(self) -> None:
        self.idp.down = True
        error = self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.assertEqual(error.status, 503)
        self.assertEqual(error.reason, "idp_unavailable")
        self.assertEqual(error.headers, {"Retry-After": "5"})

    def test_nobody_let_in(self) -> None:
        """
        With the issuer down, tokens that need it are refused with 503 and
        bad tokens still with 401: no path lets anyone in.
        """
        self.idp.down = True
        self.refused(fake_request(self.idp.issue(STRANGER, iat=minute_ago(self.idp))), IdentityProviderUnavailable)
        self.refused(fake_request("opaque-unknown"), IdentityProviderUnavailable)
        self.refused(fake_request(self.idp.forge_none()), Unauthorized)
        self.refused(fake_request(self.idp.issue(exp=1)), Unauthorized)
        self.assertEqual(self.gate.health()["oidc"]["status"], "degraded")

    def test_keys_kept_after_failed_refresh(self) -> None:
        self.idp.down = True
        self.successResultOf(self.gate.oidc.refresh_keys())
        self.assertEqual(len(self.gate.oidc.jwks), 2)
        self.admitted(fake_request(self.idp.issue()))

    def test_back_up(self) -> None:
        self.idp.down = True
        self.refused(fake_request(OPAQUE), IdentityProviderUnavailable)
        self.idp.down = False
        self.admitted(fake_request(OPAQUE))
        self.assertEqual(self.gate.health()["oidc"]["status"], "ok")


class DiscoveryTests(OIDCTestCase):
    wait_for_discovery = False

    def test_503_until_discovered(self) -> None:
        """
        Discovery does not hold up start-up; until it succeeds every OIDC
        token gets 503, and the LoopingCall keeps trying.
        """
        self.idp.down = True
        self.start()
        self.assertTrue(self.gate.running)
        discovered = self.gate.oidc.when_discovered()
        for token in (self.idp.issue(), OPAQUE):
            error = self.refused(fake_request(token), IdentityProviderUnavailable)
            self.assertEqual(error.status, 503)
            self.assertIn("Retry-After", error.headers)
        self.assertEqual(self.gate.health()["oidc"]["status"], "down")
        self.tick(60)
        self.assertNoResult(discovered)
        # Tried at start, then every retry_interval.
        self.assertEqual(len(self.client.requests), 1 + 60 // 5)
        self.assertEqual(self.idp.requests["discovery"], 0)
        self.idp.down = False
        self.tick(5)
        self.successResultOf(discovered)
        self.admitted(fake_request(self.idp.issue()))
        self.assertEqual(self.gate.health()["oidc"]["status"], "ok")

    def test_wrong_issuer_in_discovery(self) -> None:
        document = {"issuer": "https://other.example.com", "jwks_uri": self.idp.issuer + "/jwks"}
        self.idp.overrides["discovery"] = (200, json.dumps(document).encode())
        self.start()
        self.assertIn("discovery", self.gate.oidc.last_error)
        self.assertIn("another issuer", self.gate.oidc.last_error)
        self.refused(fake_request(self.idp.issue()), IdentityProviderUnavailable)

    def test_stop_while_discovering(self) -> None:
        """
        Stopping the gate while discovery waits on a silent issuer cancels
        the request, leaving no timer behind.
        """
        silent = MemoryHTTPClient(lambda request: Deferred())
        self.gate = self.build(client=silent, timeout=30.0)
        self.gate.startService()
        [request] = silent.requests
        self.assertFalse(request.cancelled)
        self.successResultOf(self.gate.stopService())
        self.assertTrue(request.cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # A client given to the gate is its giver's to close.
        self.assertFalse(silent.closed)


class CAFileTests(SynchronousTestCase):
    def test_unreadable(self) -> None:
        config = Config(
            source="test.yaml",
            listeners=(),
            auth=AuthConfig(oidc=OIDCConfig(issuer="https://idp", ca_file="/nonexistent.pem")),
        )
        with self.assertRaises(ConfigError) as raised:
            build_gate(config, Clock())
        self.assertEqual(
            raised.exception.problems,
            ["auth.oidc.ca_file: cannot load /nonexistent.pem: No such file or directory"],
        )

    def test_not_a_certificate(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        config = Config(
            source="test.yaml",
            listeners=(),
            auth=AuthConfig(oidc=OIDCConfig(issuer="https://idp", ca_file=path)),
        )
        with self.assertRaises(ConfigError) as raised:
            build_gate(config, Clock())
        self.assertEqual(
            raised.exception.problems, [f"auth.oidc.ca_file: {path}: no PEM certificate found"]
        )


class RealSocketSmokeTests(TestCase):
    """
    The whole path over a real socket and a real TLS handshake: discovery,
    JWKS and userinfo from an https issuer whose certificate comes from an
    intermediate CA, trusted through a C{ca_file} bundle holding the
    intermediate and the root.
    """

    # A handshake that fails leaves discovery retrying: fail fast instead.
    timeout = 15

    async def test_https_issuer_with_ca_bundle(self) -> None:
        chain = Chain()
        idp = FakeIdentityProvider(tls=chain.server_pem())
        idp.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(idp.stop()))
        idp.opaque[OPAQUE] = {"sub": "svc-7", "email": "robot@example.com"}
        bundle = self.mktemp()
        with open(bundle, "wb") as f:
            f.write(chain.bundle())
        gate = build_gate(
            Config(
                source="test.yaml",
                listeners=(),
                auth=AuthConfig(
                    oidc=OIDCConfig(
                        issuer=idp.issuer, audience=(AUDIENCE,), timeout=5.0, ca_file=bundle
                    )
                ),
            ),
            reactor,
            CollectorRegistry(),
        )
        gate.startService()
        self.addCleanup(gate.stopService)
        await gate.oidc.when_discovered()
        admission = await admit(gate, fake_request(idp.issue()))
        self.assertEqual(admission.identity.name, "alice@example.com")
        admission = await admit(gate, fake_request(OPAQUE))
        self.assertEqual(admission.identity.name, "robot@example.com")
        self.assertEqual(
            (idp.requests["discovery"], idp.requests["jwks"], idp.requests["userinfo"]), (1, 1, 1)
        )


class RealSocketRotationTests(TestCase):
    """
    Key rotation over a real socket: the issuer (plain http on 127.0.0.1)
    publishes new keys moments after the gateway fetched its JWKS for a
    forged token, and tokens signed with them are admitted at once.
    """

    timeout = 15

    async def test_rotated_jwks_over_http(self) -> None:
        idp = FakeIdentityProvider()
        idp.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(idp.stop()))
        gate = build_gate(
            Config(
                source="test.yaml",
                listeners=(),
                auth=AuthConfig(
                    oidc=OIDCConfig(
                        issuer=idp.issuer,
                        audience=(AUDIENCE,),
                        timeout=5.0,
                        algorithms=("RS256", "ES256", "EdDSA"),
                    )
                ),
            ),
            reactor,
            CollectorRegistry(),
        )
        gate.startService()
        self.addCleanup(gate.stopService)
        await gate.oidc.when_discovered()
        old = idp.issue(iat=minute_ago(idp))
        await admit(gate, fake_request(old))
        # A forged kid makes the gateway fetch the keys...
        with self.assertRaises(Unauthorized):
            await admit(gate, fake_request(forged_token(idp, "forged-1")))
        # ...and a moment later the issuer rotates to new RSA and Ed25519 keys.
        ed = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1", "use": "sig"})
        rsa = idp.rotate()
        idp.published.append(ed)
        for key in (rsa, ed):
            admission = await admit(gate, fake_request(idp.issue(key)))
            self.assertEqual(admission.identity.name, "alice@example.com")
        self.assertEqual((idp.requests["discovery"], idp.requests["jwks"]), (1, 3))
        # The withdrawn key is refused once a fresh set shows it is gone.
        with self.assertRaises(Unauthorized) as raised:
            await admit(gate, fake_request(old))
        self.assertIn("signing key is unknown", raised.exception.message)
        self.flushWarnings()
