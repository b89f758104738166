"""
One upstream's Entra ID token, kept fresh: asked for at start, renewed by
a C{LoopingCall} every C{refresh_interval} and in any case by half its
lifetime, failures retried with backoff and jitter, and the last good
token presented until it expires.  The loop never stops on a failure.
"""

from __future__ import annotations

import datetime
import random as _random
from collections.abc import Callable
from typing import Any, Optional, Union

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sealgw._retry import equal_jitter
from sealgw.credentials._interfaces import ICredentials
from sealgw.credentials.azure._sources import TokenSource
from sealgw.credentials.azure._token import (
    MAX_ANSWER,
    Token,
    TokenError,
    TokenRefused,
    TokenUnavailable,
    parse_answer,
)
from sealgw.http import BodyReadFailed, IHTTPClient, describe

#: A token with less than this left is not presented: it could expire on
#: its way to the upstream.
EXPIRY_MARGIN = 10.0

#: Failed refreshes are retried after INITIAL_BACKOFF, doubling up to
#: MAX_BACKOFF (or the refresh interval, if shorter), half of each step
#: random.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0

#: The first token may take this long (retrying failures that may pass)
#: before start-up is given up; an authority that refuses the settings
#: ends it at once.
STARTUP_DEADLINE = 30.0

#: The soonest a renewal is scheduled after a token arrives.
MIN_RENEWAL = 1.0


class NoToken(Exception):
    """
    No valid token now: the request is not sent.

    @ivar retry_after: seconds until the next attempt at one.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokenMetrics:
    """
    Per upstream: when its token expires, tokens had, failed attempts, and
    requests not sent for want of a token.
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.expiry = Gauge(
            "sealgw_outbound_token_expiry_timestamp_seconds",
            "When the upstream's current outbound token expires (Unix time).",
            ["upstream"],
            registry=registry,
        )
        self.refreshes = Counter(
            "sealgw_outbound_token_refreshes_total",
            "Outbound tokens obtained.",
            ["upstream"],
            registry=registry,
        )
        self.failures = Counter(
            "sealgw_outbound_token_refresh_failures_total",
            "Attempts at an outbound token that failed.",
            ["upstream"],
            registry=registry,
        )
        self.without_token = without_token_counter(registry)

    def add(self, upstream: str) -> None:
        """
        Show the upstream's series from the start, at zero.
        """
        for counter in (self.refreshes, self.failures, self.without_token):
            counter.labels(upstream=upstream)


def without_token_counter(registry: CollectorRegistry) -> Counter:
    """
    Requests not sent for want of a token, by upstream: counted where the
    requests are made, in a worker too when its tokens come from the main
    process.
    """
    return Counter(
        "sealgw_outbound_requests_without_token_total",
        "Upstream requests not sent (answered 503) because no valid token was held.",
        ["upstream"],
        registry=registry,
    )


def rfc3339(seconds: float) -> str:
    """
    A time as the Azure sidecar writes it: UTC, whole seconds, C{Z}.
    """
    when = datetime.datetime.fromtimestamp(int(seconds), tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def clock_duration(seconds: float) -> str:
    """
    A duration as the Azure sidecar writes C{time_to_expiry}
    (C{H:MM:SS.ffffff}); never negative.
    """
    micros = max(0, round(seconds * 1_000_000))
    whole, fraction = divmod(micros, 1_000_000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}.{fraction:06d}"


def backoff(failures: int, cap: float, random: Callable[[], float]) -> float:
    """
    How long to wait after the C{failures}-th failure in a row:
    exponential with "equal jitter" (half the step always, half random).
    """
    return equal_jitter(INITIAL_BACKOFF, cap, failures - 1, random)


@implementer(ICredentials)
class AzureADCredentials(Service):
    """
    The token for one upstream, as the upstream's HTTP clients' credentials
    hook: a valid token is presented at once; without one a request waits
    for the token request in flight (every request waiting shares it) and
    fails with L{NoToken} (C{Retry-After}: the next attempt) when there is
    none to wait for or it fails.

    @ivar started: fires once start-up is decided: with L{None} when the
        first token came, or with the L{TokenError} that ends start-up (a
        refusal, or failures for L{STARTUP_DEADLINE} seconds).
    """

    log = Logger()

    def __init__(
        self,
        upstream: str,
        source: TokenSource,
        client: IHTTPClient,
        clock: IReactorTime,
        *,
        refresh_interval: float = 1800.0,
        start_degraded: bool = False,
        metrics: Optional[TokenMetrics] = None,
        random: Callable[[], float] = _random.random,
        owns_client: bool = False,
    ) -> None:
        """
        @param client: where token requests go; closed on stop when
            C{owns_client}.
        @param random: the jitter source, C{[0, 1)}.
        """
        self.upstream = upstream
        self.source = source
        self.client = client
        self.refresh_interval = refresh_interval
        self.start_degraded = start_degraded
        self.metrics = metrics if metrics is not None else TokenMetrics()
        self.metrics.add(upstream)
        self.token: Optional[Token] = None
        self.last_refresh: Optional[float] = None
        self.last_error: Optional[str] = None
        self.failures = 0
        #: Tokens had and attempts failed since the start, for the
        #: workers' view of this refresher (they cannot read its metrics).
        self.tokens_had = 0
        self.attempts_failed = 0
        self.started: Deferred[Optional[TokenError]] = Deferred()
        self.start_error: Optional[TokenError] = None
        self._clock = clock
        self._random = random
        self._owns_client = owns_client
        self._started_at = 0.0
        self._fetch: Optional[Deferred[Token]] = None
        self._waiters: list[Deferred[None]] = []
        self._timer: Optional[IDelayedCall] = None
        self._observers: list[Callable[[], None]] = []
        self._loop = LoopingCall(self._kick)
        self._loop.clock = clock

    def __repr__(self) -> str:
        return f"<AzureADCredentials {self.upstream!r} {self.source.kind}>"

    def observe(self, changed: Callable[[], None]) -> None:
        """
        Call C{changed} after every token request is answered (a token
        had, or a failure), once the state it reads is settled: how the
        main process of a gateway with workers hands each new token on.
        """
        self._observers.append(changed)

    def next_attempt(self) -> Optional[float]:
        """
        When the next token request is due early (a renewal before the
        loop's next tick, or a retry after a failure), if one is.
        """
        timer = self._timer
        return float(timer.getTime()) if timer is not None and timer.active() else None

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._started_at = self._clock.seconds()
        self._loop.start(self.refresh_interval, now=True).addErrback(
            lambda f: self.log.failure("upstream {upstream}: token loop ended", f,
                                       upstream=self.upstream)
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        self._disarm()
        if self._fetch is not None:
            self._fetch.cancel()
        if self._owns_client:
            return self.client.close()
        return succeed(None)

    # -- the credentials hook --------------------------------------------------

    def valid(self, now: Optional[float] = None) -> bool:
        """
        Whether the token held may be presented now.
        """
        now = self._clock.seconds() if now is None else now
        return self.token is not None and now < self.token.expires_at - EXPIRY_MARGIN

    def authorization(self) -> Deferred[Optional[bytes]]:
        if self.valid():
            return succeed(self._bearer())
        if self._fetch is None and (self._timer is not None or not self.running):
            # Failing at once, not asking again: a burst of requests must
            # not hammer an authority that just failed.
            return fail(self._refuse())
        d = self.refresh()

        def fetched(_: None) -> bytes:
            if self.valid():
                return self._bearer()
            raise self._refuse()

        return d.addCallback(fetched)

    def _bearer(self) -> bytes:
        assert self.token is not None
        return b"Bearer " + self.token.value.encode("ascii")

    def _refuse(self) -> NoToken:
        self.metrics.without_token.labels(upstream=self.upstream).inc()
        now = self._clock.seconds()
        wait = self._timer.getTime() - now if self._timer is not None else INITIAL_BACKOFF
        return NoToken(f"upstream {self.upstream}: no valid token", max(1.0, wait))

    # -- refreshing ----------------------------------------------------------

    def refresh(self) -> Deferred[None]:
        """
        Ask for a token now, or join the request already in flight.  Fires
        once it is answered, whatever the answer (see L{token},
        L{last_error}); cancelling it leaves the request to the others.
        """
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._fetch is None:
            self._fetch = Deferred.fromCoroutine(self._ask())
            self._fetch.addBoth(self._fetched)
        return waiter

    def _kick(self) -> None:
        # The loop's call and the timers': a LoopingCall whose call raises
        # stops for good, so nothing may escape.
        try:
            self.refresh()
        except Exception:
            self.log.failure("upstream {upstream}: starting a token refresh failed",
                             upstream=self.upstream)

    async def _ask(self) -> Token:
        request = self.source.token_request(self._clock.seconds())
        try:
            response = await self.client.request(
                request.method,
                request.url,
                query=request.query,
                headers=request.headers,
                body=request.body,
                content_type=request.content_type,
            )
            body = await response.read(MAX_ANSWER)
        except CancelledError:
            raise
        except BodyReadFailed as e:
            raise TokenUnavailable(f"the answer could not be read: {describe(e.cause)}") from None
        except Exception as e:
            raise TokenUnavailable(f"no answer: {describe(e)}") from None
        if body.truncated:
            raise TokenUnavailable(f"answered {response.status} with more than {MAX_ANSWER} bytes")
        return parse_answer(response.status, body.data, self._clock.seconds())

    def _fetched(self, result: Union[Token, Failure]) -> None:
        self._fetch = None
        error: Optional[TokenError] = None
        if isinstance(result, Token):
            self._succeeded(result)
        elif result.check(CancelledError):
            pass
        else:
            if isinstance(result.value, TokenError):
                error = result.value
            else:
                # Not a failure this module foresaw: its traceback is for the
                # log; the reason shown elsewhere is only its kind.
                self.log.failure("upstream {upstream}: token request failed", result,
                                 upstream=self.upstream)
                error = TokenUnavailable(f"unexpected {type(result.value).__name__}")
            self._failed(error)
        # Last, once the state is settled: whoever waits may run on at once
        # (and even stop this service).
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)
        if result_is_cancel(result):
            return
        if self._ends_start(error):
            self.start_error = error
            self.started.callback(error)
        for changed in list(self._observers):
            try:
                changed()
            except Exception:
                self.log.failure("upstream {upstream}: passing the token on failed",
                                 upstream=self.upstream)

    def _succeeded(self, token: Token) -> None:
        now = self._clock.seconds()
        renewed = self.token is not None
        self.token = token
        self.last_refresh = now
        self.last_error = None
        self.failures = 0
        self.tokens_had += 1
        self.metrics.refreshes.labels(upstream=self.upstream).inc()
        self.metrics.expiry.labels(upstream=self.upstream).set(token.expires_at)
        self.log.info(
            "upstream {upstream}: {what} Entra ID token ({source}), valid until {expires_at}",
            upstream=self.upstream,
            what="renewed the" if renewed else "got an",
            source=self.source.kind,
            expires_at=rfc3339(token.expires_at),
        )
        due = token.refresh_at if token.refresh_at is not None else (
            now + (token.expires_at - now) / 2
        )
        delay = max(MIN_RENEWAL, due - now)
        if delay < self._until_tick(now):
            self._arm(delay)
        else:
            self._disarm()

    def _failed(self, error: TokenError) -> None:
        now = self._clock.seconds()
        self.failures += 1
        self.last_error = str(error)
        self.attempts_failed += 1
        self.metrics.failures.labels(upstream=self.upstream).inc()
        delay = backoff(self.failures, min(MAX_BACKOFF, self.refresh_interval), self._random)
        self._arm(delay)
        if self._ends_start(error):
            # The failure that ends start-up: whoever waits on started
            # says so, in one line.
            return
        if self.valid(now):
            assert self.token is not None
            held = f"the token held is valid until {rfc3339(self.token.expires_at)}"
        else:
            held = "no valid token: its requests are answered 503"
        self.log.warn(
            "upstream {upstream}: no Entra ID token from {endpoint}: {error}; "
            "trying again in {delay:.1f}s ({failures} in a row); {held}",
            upstream=self.upstream,
            endpoint=self.source.endpoint,
            error=str(error),
            delay=delay,
            failures=self.failures,
            held=held,
        )

    def _until_tick(self, now: float) -> float:
        call = self._loop.call
        if self._loop.running and call is not None:
            return float(call.getTime() - now)
        return self.refresh_interval

    def _arm(self, delay: float) -> None:
        self._disarm()
        if self.running:
            self._timer = self._clock.callLater(delay, self._timer_fired)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timer_fired(self) -> None:
        self._timer = None
        self._kick()

    def _ends_start(self, error: Optional[TokenError]) -> bool:
        """
        Whether this outcome decides start-up (L{started}): a token, a
        refusal, or a failure once L{STARTUP_DEADLINE} has passed.
        """
        if self.started.called or not self.running:
            return False
        return error is None or isinstance(error, TokenRefused) or (
            self._clock.seconds() - self._started_at >= STARTUP_DEADLINE
        )

    def cannot_start(self, error: TokenError) -> str:
        """
        The one line that says start-up failed: which upstream, which
        credential, where, and why; never a secret.
        """
        return (
            f"cannot get an Entra ID token for upstream {self.upstream!r}: "
            f"{self.source.describe()} at {self.source.endpoint}: {error}"
        )

    # -- health ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """
        The token's state for C{/health}: never the token.  C{down} while
        no valid token is held, C{degraded} while the last attempt failed.
        """
        now = self._clock.seconds()
        valid = self.valid(now)
        token = self.token
        return {
            "status": "down" if not valid else ("degraded" if self.last_error else "ok"),
            "source": self.source.kind,
            "token_valid": valid,
            "expires_at": rfc3339(token.expires_at) if token is not None else None,
            "time_to_expiry": (
                clock_duration(token.expires_at - now) if token is not None else None
            ),
            "last_refresh": rfc3339(self.last_refresh) if self.last_refresh is not None else None,
            "last_error": self.last_error,
            "consecutive_failures": self.failures,
        }

    def sidecar_fields(self, healthy: bool) -> dict[str, Any]:
        """
        The Azure sidecar's own C{/health} fields, for probes and
        dashboards written for it.
        """
        now = self._clock.seconds()
        token = self.token
        return {
            "status": "healthy" if healthy else "unhealthy",
            "token_valid": self.valid(now),
            "expires_at": rfc3339(token.expires_at) if token is not None else None,
            "time_to_expiry": (
                clock_duration(token.expires_at - now) if token is not None else None
            ),
            "timestamp": rfc3339(now),
        }


def result_is_cancel(result: object) -> bool:
    return isinstance(result, Failure) and result.check(CancelledError) is not None
