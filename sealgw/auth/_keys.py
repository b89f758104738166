"""
The issuer's signing keys as the gateway holds them, and when to fetch them
again for a token naming a key it does not hold: soon enough that a key
rotation never costs a good token a 401, rarely enough that forged key ids
cannot make the gateway hammer the issuer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Any, Optional

import attr
from joserfc.jwk import Key
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sealgw.auth._identity import IdentityProviderUnavailable, Unauthorized
from sealgw.auth._issuer import IdPUnreachable
from sealgw.auth._jwt import JWKS
from sealgw.auth._shared import Coalescer
from sealgw.limits import TokenBucket

#: How long a key that a fresh fetch showed the issuer does not hold is
#: refused outright (401, nothing fetched), counted from when it was first
#: asked for; never less than one refill of the bucket.  Long enough that
#: a client repeating a token of another issuer costs one fetch a minute;
#: short enough that an issuer that signed with a key before publishing
#: it is not refused for long.
UNKNOWN_KEY_TTL = 60.0

#: How far before a fetch began a token must say it was issued for that
#: fetch to settle its key missing: C{iat} is in whole seconds, and the
#: issuer's clock may be a little behind ours.  Issuers publish a key
#: before they sign with it, so a token issued before a fetch began and
#: naming a key that fetch lacked is not the issuer's.
ISSUE_TIME_SLACK = 2.0

#: How many missing keys are remembered.  Past that the oldest are
#: forgotten, which costs at most another fetch, never a wrong answer.
MAX_REMEMBERED = 1024

#: Concurrent callers share one fetch of the JWKS.
_FETCH = "jwks"


@attr.frozen
class _Missing:
    """
    A key the gateway lacked when it was asked for.

    @ivar since: when it was first asked for.
    @ivar fetches: how many fetches had started by then; only a fetch
        started later can settle that the issuer does not hold it.  Counted,
        not timed, so that a fetch started on the same clock tick but
        earlier does not count.
    """

    since: float
    fetches: int


def _no_issue_time() -> Optional[float]:
    return None


class SigningKeys:
    """
    One issuer's signing keys and the rules for fetching them.

    A token naming a key not held leads to a fetch of the JWKS, and the
    decision is made on a fetch that I{started after} that key was first
    asked for, so that a fetch already on its way when the issuer rotated
    its keys settles nothing:

      - the key is in the fresh set: the token is verified with it;
      - it is not: the issuer really does not hold it; 401, and the key
        is remembered as missing for L{UNKNOWN_KEY_TTL}, so repeating it
        costs nothing;
      - no fresh fetch could be had (the issuer is down, slow, answers
        nonsense, or the fetch rate is used up): 503 with C{Retry-After},
        never 401, since the token may be signed with a key published a
        moment ago.

    Concurrent callers share one fetch.  Fetches for missing keys come from
    a token bucket holding C{burst} fetches, refilled by one every
    C{interval} seconds: a few unknown keys at once are each settled
    straight away, and a flood of forged key ids gets at most one fetch
    per interval.  Every fetch brings the whole JWKS, so whichever request
    sets it off, a rotated key is picked up by the first fetch after the
    issuer published it.  A request refused because the bucket is empty
    arms a fetch for when the bucket refills, and is told to come back
    then (C{Retry-After}); so a rotated key is in hand within one
    C{interval} however many forged tokens arrive, and its client's retry
    finds it.

    Scheduled refreshes (L{refresh}) and the fetch after discovery take
    nothing from the bucket: they have schedules of their own.

    A missing key is only settled (401) by a fetch that started at least
    C{skew} seconds after the token says it was issued (C{iat}, unverified:
    it can only choose the slower answer).  Otherwise a client that guessed
    the id of the issuer's next key and asked for it just before the
    issuer published it would have the key remembered as missing, and
    every good token signed with it refused until the memory lapsed.  A
    token issued after the last fetch began may be signed with a key
    published since: it gets a fetch (from the bucket) or a 503 with
    C{Retry-After}, never a 401, for at most C{skew} seconds.
    """

    log = Logger()

    def __init__(
        self,
        fetch: Callable[[], Coroutine[Any, Any, JWKS]],
        clock: IReactorTime,
        interval: float,
        burst: int,
        retry_after: float,
        skew: float = ISSUE_TIME_SLACK,
    ) -> None:
        """
        @param fetch: gets and parses the JWKS, noting the outcome for
            health and logs; raises L{IdPUnreachable} on any failure.
        @param interval: seconds to refill one fetch for missing keys;
            zero for no limit.
        @param burst: fetches for missing keys that may happen back to back.
        @param retry_after: what a 503 tells a client when the issuer
            could not be asked (at least).
        @param skew: a fetch settles a missing key only for tokens issued
            at least this long before it started (L{ISSUE_TIME_SLACK}).
        """
        self._fetch_jwks = fetch
        self._clock = clock
        self._retry_after = retry_after
        self._skew = skew
        # Remembered for at least one refill: a client repeating a bad
        # token then costs less than the bucket gives, and keeps its 401.
        self._unknown_ttl = max(UNKNOWN_KEY_TTL, interval)
        self._bucket: Optional[TokenBucket] = (
            TokenBucket(1.0 / interval, float(burst), clock.seconds()) if interval > 0 else None
        )
        self.jwks: Optional[JWKS] = None
        #: Whether the last fetch failed (the keys held are older).
        self.failing = False
        #: When the last fetch started.
        self.last_fetch: Optional[float] = None
        # Fetches are numbered in the order they start: how many have
        # started, and the number of the one that brought the keys held.
        self._started = 0
        self._fresh = 0
        # When the fetch that brought the keys held started.
        self._fresh_started = float("-inf")
        # Missing keys by tag, oldest first.
        self._missing: dict[bytes, _Missing] = {}
        self._fetches: Coalescer[str, bool] = Coalescer()
        # A caller refused for the bucket wants a fetch started after this
        # many had; the timer makes it once the bucket allows.
        self._wanted: Optional[int] = None
        self._timer: Optional[IDelayedCall] = None

    # -- fetching ------------------------------------------------------------

    def refresh(self) -> Deferred[bool]:
        """
        Fetch the JWKS now, or join the fetch on its way; untaxed.

        @return: a Deferred firing with whether the fetch succeeded.
        """
        return self._fetches.run(_FETCH, self._start_fetch)

    def _start_fetch(self) -> Deferred[bool]:
        self._started += 1
        self.last_fetch = started_at = self._clock.seconds()
        return Deferred.fromCoroutine(self._fetch(self._started, started_at))

    async def _fetch(self, number: int, started_at: float) -> bool:
        try:
            jwks = await self._fetch_jwks()
        except IdPUnreachable:
            self.failing = True
            return False
        except CancelledError:
            raise
        except Exception:
            # A bug, not the issuer: logged loudly, and the keys held stay
            # in force; a token needing new ones gets 503, never 500.
            self.log.failure("fetching the JWKS failed")
            self.failing = True
            return False
        self.jwks = jwks
        self.failing = False
        if number > self._fresh:
            self._fresh = number
            self._fresh_started = started_at
        return True

    def _fetch_wait(self, now: float) -> float:
        """
        Seconds until the bucket allows a fetch for a missing key.
        """
        if self._bucket is None:
            return 0.0
        return self._bucket.wait(1, now)

    def _fetch_later(self, wait: float) -> float:
        """
        Make sure a fetch happens once the bucket allows it, for a caller
        that could not have one now; return the seconds until then.
        """
        self._wanted = self._started
        if self._timer is None or not self._timer.active():
            self._timer = self._clock.callLater(wait, self._fetch_wanted)
        return max(0.0, self._timer.getTime() - self._clock.seconds())

    def _fetch_wanted(self) -> None:
        self._timer = None
        if self._wanted is None or self._started > self._wanted:
            # A fetch has started since it was wanted: it serves.
            self._wanted = None
            return
        wait = self._fetch_wait(self._clock.seconds())
        if wait > 0:
            self._timer = self._clock.callLater(wait, self._fetch_wanted)
            return
        self._take()
        self._wanted = None
        self.refresh().addErrback(self._fetch_lost)

    def _fetch_lost(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self.log.failure("fetching the JWKS failed", failure)

    def _take(self) -> None:
        if self._bucket is not None:
            self._bucket.take(1)

    def stop(self) -> None:
        """
        Cancel the fetch on its way and the one armed for later.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._fetches.cancel_all()

    # -- finding a token's key -------------------------------------------

    async def key_for(
        self,
        kid: Optional[str],
        alg: str,
        issued_at: Callable[[], Optional[float]] = _no_issue_time,
    ) -> Key:
        """
        The key that should have signed a token naming C{kid} and C{alg},
        fetching the keys again when a fresh set might hold it.

        @raise Unauthorized: the issuer does not hold such a key (as a
            fetch started after it was first asked for shows), the key
            named does not suit C{alg}, or the token names no key and
            several would do.
        @raise IdentityProviderUnavailable: the key is not held and no
            fresh fetch could be had yet: the issuer is out of reach, or
            the fetches for missing keys are used up for now, or the token
            is too recent for any fetch so far to settle it.

        @param issued_at: the token's C{iat}, unverified, if it has one;
            asked only when the key is not held.
        """
        key = self._held(kid, alg)
        if key is not None:
            return key
        tag = _tag(kid, alg)
        # The first fetch start that can settle this token's key missing:
        # one that began a clock skew after the token was issued (an issue
        # time in the future counts as now).
        iat = issued_at()
        settles_from = (
            float("-inf") if iat is None else min(iat, self._clock.seconds()) + self._skew
        )
        fetched = False
        # At most: join a fetch already on its way, then one started after
        # the key was asked for, which settles it.
        for _ in range(3):
            now = self._clock.seconds()
            missing = self._remember(tag, now)
            if self._fresh > missing.fetches and self._fresh_started >= settles_from:
                raise Unauthorized("the token's signing key is unknown")
            if self._fresh > missing.fetches and fetched and now < settles_from:
                # A fresh set lacks the key, but the token is younger than
                # the skew: the issuer may have published the key after
                # that fetch began, and no fetch now can tell.
                raise IdentityProviderUnavailable(
                    "the token's signing key is not among the identity provider's keys "
                    "fetched so far; they are fetched again shortly",
                    max(1.0, settles_from - now),
                    reason="signing_key_pending",
                )
            if _FETCH not in self._fetches:
                wait = self._fetch_wait(now)
                if wait > 0 and self.failing:
                    raise IdentityProviderUnavailable(
                        "the identity provider's signing keys could not be fetched",
                        max(self._retry_after, self._fetch_later(wait)),
                    )
                if wait > 0:
                    raise IdentityProviderUnavailable(
                        "the token's signing key is not among the identity provider's keys "
                        "fetched so far; they are fetched again shortly",
                        self._fetch_later(wait),
                        reason="signing_key_pending",
                    )
                self._take()
            if not await self.refresh():
                raise IdentityProviderUnavailable(
                    "the identity provider's signing keys could not be fetched",
                    max(self._retry_after, self._fetch_wait(self._clock.seconds())),
                )
            fetched = True
            key = self._held(kid, alg)
            if key is not None:
                return key
        raise IdentityProviderUnavailable(
            "the identity provider's signing keys could not be fetched", self._retry_after
        )

    def _held(self, kid: Optional[str], alg: str) -> Optional[Key]:
        return self.jwks.find(kid, alg) if self.jwks is not None else None

    def _remember(self, tag: bytes, now: float) -> _Missing:
        """
        When C{tag}'s key was first asked for, as far as the last
        L{UNKNOWN_KEY_TTL} (or one refill of the bucket) go.
        """
        missing = self._missing.get(tag)
        if missing is not None and now - missing.since < self._unknown_ttl:
            return missing
        if missing is not None:
            del self._missing[tag]
        missing = self._missing[tag] = _Missing(now, self._started)
        # Insertion order is age order: the first entries are the oldest.
        while len(self._missing) > MAX_REMEMBERED:
            del self._missing[next(iter(self._missing))]
        return missing


def _tag(kid: Optional[str], alg: str) -> bytes:
    """
    What a missing key is remembered by: the SHA-256 of its id (a forged
    one may be as long as a request head), or, for a token naming no key,
    its algorithm, which cannot be taken for a digest.
    """
    if kid is None:
        return alg.encode("ascii", "replace")
    return hashlib.sha256(kid.encode("utf-8", "surrogatepass")).digest()
