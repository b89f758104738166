"""
Entra ID tokens in the worker processes of a gateway with C{workers: N}:
the main process runs one refresher per upstream (so Entra ID sees one
token request per refresh for the whole daemon, not one per worker) and
hands every token it gets to every worker; a worker presents the token it
was handed last, and reports the refresher's state as the main process
described it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import attr
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from sealgw.config import HTTPUpstreamConfig, UpstreamConfig
from sealgw.credentials._interfaces import ICredentials
from sealgw.credentials.azure._refresher import (
    EXPIRY_MARGIN,
    INITIAL_BACKOFF,
    STARTUP_DEADLINE,
    AzureADCredentials,
    NoToken,
    clock_duration,
    rfc3339,
    without_token_counter,
)
from sealgw.credentials.azure._service import OutboundCredentials
from sealgw.credentials.azure._token import Token, TokenError, TokenUnavailable

#: A worker waits this much longer than the main process's own start-up
#: deadline before it gives up on a first token: when the main process
#: cannot get one, its own line (and its decision) comes first.
RELAY_MARGIN = 5.0


@attr.frozen(repr=False)
class RelayedState:
    """
    One upstream's refresher as the main process describes it to the
    workers.  Its C{repr} never shows the token.

    @ivar token: the token the main process holds, if any (perhaps
        expired: the worker judges validity on its own clock).
    @ivar next_attempt: when the main process next asks for a token
        early (a retry or a renewal), if it does.
    @ivar start_failed: the main process's start-up ended without a
        first token (a refusal, or its deadline).
    """

    source: str
    token: Optional[Token]
    last_refresh: Optional[float]
    last_error: Optional[str]
    consecutive_failures: int
    refreshes: int
    failures: int
    next_attempt: Optional[float]
    start_failed: bool

    def __repr__(self) -> str:
        return f"<RelayedState {self.source} {self.token!r}>"


def describe_for_workers(credentials: Mapping[str, AzureADCredentials]) -> dict[str, Any]:
    """
    Every upstream's refresher as the main process sends it to the
    workers: JSON-able, by upstream name, the token included (the pipe is
    private to the main process and that worker).
    """
    return {
        name: {
            "source": c.source.kind,
            "token": c.token.value if c.token is not None else None,
            "expires_at": c.token.expires_at if c.token is not None else None,
            "last_refresh": c.last_refresh,
            "last_error": c.last_error,
            "consecutive_failures": c.failures,
            "refreshes": c.tokens_had,
            "failures": c.attempts_failed,
            "next_attempt": c.next_attempt(),
            "start_failed": c.start_error is not None,
        }
        for name, c in credentials.items()
    }


def _number(entry: Mapping[str, Any], key: str) -> Optional[float]:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} is not a number")
    return float(value)


def _count(entry: Mapping[str, Any], key: str) -> int:
    value = entry.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} is not a count")
    return value


def read_state(entry: Any) -> RelayedState:
    """
    One upstream's entry of L{describe_for_workers}, checked.

    @raise ValueError: for an entry that is not one; its text never holds
        the token.
    """
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    value = entry.get("token")
    expires_at = _number(entry, "expires_at")
    token: Optional[Token] = None
    if value is not None:
        if not isinstance(value, str) or not value or expires_at is None:
            raise ValueError("the token or its expiry is not usable")
        token = Token(value, expires_at)
    last_error = entry.get("last_error")
    source = entry.get("source")
    if not isinstance(source, str) or not (last_error is None or isinstance(last_error, str)):
        raise ValueError("source or last_error is not text")
    return RelayedState(
        source=source,
        token=token,
        last_refresh=_number(entry, "last_refresh"),
        last_error=last_error,
        consecutive_failures=_count(entry, "consecutive_failures"),
        refreshes=_count(entry, "refreshes"),
        failures=_count(entry, "failures"),
        next_attempt=_number(entry, "next_attempt"),
        start_failed=entry.get("start_failed") is True,
    )


@implementer(ICredentials)
class RelayedCredentials(Service):
    """
    One upstream's token in a worker: the one the main process handed over
    last, presented while it is valid; without one a request fails at
    once with L{NoToken} (C{Retry-After}: the main process's next attempt),
    since there is no token request here to wait for.

    @ivar started: fires once start-up is decided, as
        L{AzureADCredentials.started} does: with L{None} when a first valid
        token arrives, or with a L{TokenError} when none came within
        L{STARTUP_DEADLINE} + L{RELAY_MARGIN} seconds, or (for an upstream
        that allows C{start_degraded}) when the main process's own
        start-up ended without one.
    """

    def __init__(
        self,
        upstream: str,
        clock: IReactorTime,
        without_token: Counter,
        *,
        start_degraded: bool = False,
        deadline: float = STARTUP_DEADLINE + RELAY_MARGIN,
    ) -> None:
        self.upstream = upstream
        self.start_degraded = start_degraded
        self.deadline = deadline
        self.state: Optional[RelayedState] = None
        self.started: Deferred[Optional[TokenError]] = Deferred()
        self._clock = clock
        self._without_token = without_token
        without_token.labels(upstream=upstream)
        self._timer: Optional[IDelayedCall] = None

    def __repr__(self) -> str:
        return f"<RelayedCredentials {self.upstream!r}>"

    @property
    def token(self) -> Optional[Token]:
        return self.state.token if self.state is not None else None

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if not self.started.called:
            self._timer = self._clock.callLater(self.deadline, self._too_late)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._disarm()
        return succeed(None)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _too_late(self) -> None:
        self._timer = None
        error = self.state.last_error if self.state is not None else None
        why = f"; its last error: {error}" if error else ""
        self._decide(TokenUnavailable(
            f"no valid token from the main process within {self.deadline:g}s{why}"
        ))

    def _decide(self, error: Optional[TokenError]) -> None:
        if not self.started.called:
            self._disarm()
            self.started.callback(error)

    # -- the main process's word -----------------------------------------------

    def update(self, state: RelayedState) -> None:
        """
        Take the main process's latest word on this upstream's token.
        """
        self.state = state
        if self.valid():
            self._decide(None)
        elif state.start_failed and self.start_degraded:
            self._decide(TokenUnavailable(
                f"the main process has none: {state.last_error or 'no token'}"
            ))

    # -- the credentials hook --------------------------------------------------

    def valid(self, now: Optional[float] = None) -> bool:
        """
        Whether the token held may be presented now.
        """
        now = self._clock.seconds() if now is None else now
        token = self.token
        return token is not None and now < token.expires_at - EXPIRY_MARGIN

    def authorization(self) -> Deferred[Optional[bytes]]:
        token = self.token
        if token is not None and self.valid():
            return succeed(b"Bearer " + token.value.encode("ascii"))
        self._without_token.labels(upstream=self.upstream).inc()
        now = self._clock.seconds()
        due = self.state.next_attempt if self.state is not None else None
        wait = due - now if due is not None else INITIAL_BACKOFF
        return fail(NoToken(f"upstream {self.upstream}: no valid token", max(1.0, wait)))

    def cannot_start(self, error: TokenError) -> str:
        """
        The one line that says this worker cannot start; never a secret.
        """
        return f"cannot get an Entra ID token for upstream {self.upstream!r}: {error}"

    # -- health ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """
        As L{AzureADCredentials.health}, from the main process's word
        (validity on this worker's clock); never the token.
        """
        now = self._clock.seconds()
        valid = self.valid(now)
        state = self.state
        token = self.token
        if state is None:
            return {
                "status": "down",
                "source": None,
                "token_valid": False,
                "expires_at": None,
                "time_to_expiry": None,
                "last_refresh": None,
                "last_error": "no word from the main process yet",
                "consecutive_failures": 0,
            }
        return {
            "status": "down" if not valid else ("degraded" if state.last_error else "ok"),
            "source": state.source,
            "token_valid": valid,
            "expires_at": rfc3339(token.expires_at) if token is not None else None,
            "time_to_expiry": (
                clock_duration(token.expires_at - now) if token is not None else None
            ),
            "last_refresh": (
                rfc3339(state.last_refresh) if state.last_refresh is not None else None
            ),
            "last_error": state.last_error,
            "consecutive_failures": state.consecutive_failures,
        }

    def sidecar_fields(self, healthy: bool) -> dict[str, Any]:
        """
        The Azure sidecar's own C{/health} fields, as a single gateway
        gives them.
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


class RelayedTokens(OutboundCredentials[RelayedCredentials]):
    """
    A worker's issued credentials, by upstream name, all fed by the main
    process's messages (L{update}); also the collector of the refreshers'
    series, which only the main process can count.
    """

    def update(self, described: dict[str, Any]) -> None:
        """
        Take a message of L{describe_for_workers}.  An entry that cannot be
        read is logged (never with its content) and leaves that upstream's
        state as it was.
        """
        for name, entry in described.items():
            credential = self.credentials.get(name)
            if credential is None:
                continue
            try:
                state = read_state(entry)
            except ValueError as e:
                self.log.error(
                    "upstream {upstream}: unreadable token state from the main process: "
                    "{problem}",
                    upstream=name,
                    problem=str(e),
                )
                continue
            credential.update(state)

    def collect(self) -> Iterator[Metric]:
        """
        The token series of the main process's refreshers, as its latest
        word says: one refresh is counted once, however many workers.
        """
        expiry = GaugeMetricFamily(
            "sealgw_outbound_token_expiry_timestamp_seconds",
            "When the upstream's current outbound token expires (Unix time).",
            labels=["upstream"],
        )
        refreshes = CounterMetricFamily(
            "sealgw_outbound_token_refreshes", "Outbound tokens obtained.", labels=["upstream"]
        )
        failures = CounterMetricFamily(
            "sealgw_outbound_token_refresh_failures",
            "Attempts at an outbound token that failed.",
            labels=["upstream"],
        )
        for name, credential in self.credentials.items():
            state = credential.state
            refreshes.add_metric([name], state.refreshes if state is not None else 0)
            failures.add_metric([name], state.failures if state is not None else 0)
            if state is not None and state.token is not None:
                expiry.add_metric([name], state.token.expires_at)
        yield from (expiry, refreshes, failures)


def build_relayed_credentials(
    upstreams: Mapping[str, UpstreamConfig],
    clock: IReactorTime,
    *,
    registry: Optional[CollectorRegistry] = None,
    on_fatal: Optional[Callable[[str], None]] = None,
) -> RelayedTokens:
    """
    A worker's credentials for every HTTP upstream with an C{azure_ad}
    section: no refresher and no token client of its own (the main
    process built and checked those).
    """
    configured = {
        name: upstream.azure_ad
        for name, upstream in upstreams.items()
        if isinstance(upstream, HTTPUpstreamConfig) and upstream.azure_ad is not None
    }
    built: dict[str, RelayedCredentials] = {}
    if configured:
        counter = without_token_counter(
            registry if registry is not None else CollectorRegistry()
        )
        for name, config in configured.items():
            built[name] = RelayedCredentials(
                name, clock, counter, start_degraded=config.start_degraded
            )
    return RelayedTokens(built, on_fatal)
