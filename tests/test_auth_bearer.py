"""
The Bearer credential factory and the credentials it makes.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.cred.error import LoginFailed
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import BearerCredentialFactory, BearerToken, IBearerToken
from sealgw.auth._bearer import MAX_TOKEN_LENGTH, split_authorization

deterministic = settings(derandomize=True, deadline=None, max_examples=300)
REFUSALS = {
    "the Bearer token is empty",
    f"the Bearer token is longer than {MAX_TOKEN_LENGTH} bytes",
    "the Bearer token holds spaces, control or non-ASCII characters",
}


class FactoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.factory = BearerCredentialFactory()

    def test_scheme_and_challenge(self) -> None:
        self.assertEqual(self.factory.scheme, b"bearer")
        self.assertEqual(self.factory.getChallenge(None), {"realm": b"sealgw"})

    def test_decode(self) -> None:
        credentials = self.factory.decode(b"abc.DEF-123_~+/=", None)
        self.assertTrue(IBearerToken.providedBy(credentials))
        self.assertEqual(credentials.token, "abc.DEF-123_~+/=")
        self.assertEqual(credentials.digest, hashlib.sha256(b"abc.DEF-123_~+/=").digest())

    def test_seal_proxy_tokens(self) -> None:
        """
        Any visible ASCII is accepted: seal-proxy never restricted tokens to
        RFC 6750's alphabet.
        """
        self.assertEqual(self.factory.decode(b"a!b#c$d%e&f", None).token, "a!b#c$d%e&f")

    def test_refused(self) -> None:
        for value in (b"", b"a b", b"a\tb", b"caf\xc3\xa9", b"\x00", b"x" * (MAX_TOKEN_LENGTH + 1)):
            self.assertRaises(LoginFailed, self.factory.decode, value, None)

    @deterministic
    @given(st.binary(max_size=64))
    def test_any_bytes(self, value: bytes) -> None:
        """
        Whatever is sent becomes credentials or LoginFailed, nothing else,
        and the error never repeats the value.
        """
        try:
            credentials = self.factory.decode(value, None)
        except LoginFailed as e:
            # One of a few fixed sentences: it cannot repeat the value (a
            # substring check would trip on values such as "rer ").
            self.assertIn(str(e), REFUSALS)
        else:
            self.assertEqual(credentials.token.encode("ascii"), value)

    def test_split(self) -> None:
        self.assertEqual(split_authorization(b"Bearer  tok"), (b"bearer", b"tok"))
        self.assertEqual(split_authorization(b"BEARER tok"), (b"bearer", b"tok"))
        self.assertEqual(split_authorization(b"Bearer"), (b"bearer", b""))
        self.assertRaises(LoginFailed, split_authorization, b"  ")


class BearerTokenTests(SynchronousTestCase):
    def test_repr_hides_the_token(self) -> None:
        token = BearerToken("very-secret-token")
        fingerprint = hashlib.sha256(b"very-secret-token").hexdigest()[:8]
        self.assertEqual(token.fingerprint, fingerprint)
        for text in (repr(token), str(token), repr([token])):
            self.assertNotIn("very-secret-token", text)
            self.assertIn(fingerprint, text)
