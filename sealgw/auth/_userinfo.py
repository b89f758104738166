"""
Opaque tokens: asked of the issuer's userinfo endpoint, the answers kept
for a while under the token's SHA-256 (never the token itself).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import attr
from twisted.internet.defer import Deferred, fail, succeed

from sealgw.auth._identity import IdentityProviderUnavailable, Unauthorized
from sealgw.auth._issuer import IdPUnreachable
from sealgw.auth._shared import Coalescer

# Refusals are remembered for a shorter time than acceptances: long enough
# to spare the issuer a client retrying a bad token in a loop.
NEGATIVE_TTL = 60.0


@attr.frozen
class _Answer:
    claims: Optional[dict[str, Any]]
    expires: float


class UserinfoCache:
    """
    Userinfo answers by token digest, with one lookup in flight per token.

    Only the issuer's definite answers are cached: claims (for
    C{cache_ttl}) and refusals (for at most L{NEGATIVE_TTL}).  An issuer
    that cannot be reached is never cached, so it is asked again next time,
    and the request is refused with 503 meanwhile.
    """

    max_entries = 10_000

    def __init__(self, provider: Any, clock: Any) -> None:
        self.provider = provider
        self.ttl = provider.config.cache_ttl
        self._clock = clock
        self._answers: OrderedDict[bytes, _Answer] = OrderedDict()
        self._lookups: Coalescer[bytes, dict[str, Any]] = Coalescer()

    def keys(self) -> list[bytes]:
        return list(self._answers)

    def lookup(self, credentials: Any) -> Deferred[dict[str, Any]]:
        """
        The claims the issuer gives for C{credentials.token}.

        @raise Unauthorized: the issuer refused the token.
        @raise IdentityProviderUnavailable: the issuer could not be asked.
        """
        key: bytes = credentials.digest
        now = self._clock.seconds()
        answer = self._answers.get(key)
        if answer is not None:
            if answer.expires > now:
                self._answers.move_to_end(key)
                if answer.claims is None:
                    return fail(Unauthorized("the identity provider does not accept the token"))
                return succeed(answer.claims)
            del self._answers[key]
        token: str = credentials.token
        return self._lookups.run(key, lambda: Deferred.fromCoroutine(self._ask(key, token)))

    async def _ask(self, key: bytes, token: str) -> dict[str, Any]:
        metadata = self.provider.metadata
        if metadata is None:
            raise IdentityProviderUnavailable(
                "the identity provider has not been reached yet", self.provider.retry_interval
            )
        if metadata.userinfo_endpoint is None:
            raise Unauthorized("the token is not a JWT and the issuer has no userinfo endpoint")
        try:
            status, claims = await self.provider.get_json(
                metadata.userinfo_endpoint, bearer=token
            )
        except IdPUnreachable as e:
            self.provider.note_failure("userinfo", e)
            raise IdentityProviderUnavailable(
                "the identity provider could not be reached", self.provider.retry_interval
            ) from None
        now = self._clock.seconds()
        if 200 <= status < 300:
            if not isinstance(claims, dict):
                self.provider.note_failure("userinfo", ValueError("the answer is not an object"))
                raise IdentityProviderUnavailable(
                    "the identity provider gave an unusable answer", self.provider.retry_interval
                )
            self.provider.note_success()
            self._store(key, _Answer(claims, now + self.ttl))
            return claims
        self.provider.note_success()
        self._store(key, _Answer(None, now + min(self.ttl, NEGATIVE_TTL)))
        raise Unauthorized("the identity provider does not accept the token")

    def _store(self, key: bytes, answer: _Answer) -> None:
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def stop(self) -> None:
        self._lookups.cancel_all()
