"""
Delivering pushes to an HTTP(S) upstream: retries that stop at the
client's deadline, on top of the one outbound client (L{sealgw.http}),
which owns the pool, TLS, timeouts, credentials and header policy.

What the client is answered decides whether data survives an outage (see
PROTOCOLS.md, section 2), so every way a request can end is mapped to
exactly one of: L{Delivery} (2xx), L{UpstreamRejected} (the data itself was
refused: the same 4xx) or L{UpstreamUnavailable} (try again later: 429,
502, 503, 504), by the gateway's one mapping (L{sealgw.http.status_verdict}).

Each attempt holds one of the upstream's push slots
(L{sealgw.http.UpstreamSlots}) while it is sent and answered, not while
it waits to be retried: one tenant's burst fills at most its share, and
the others' pushes still go at once.
"""

from __future__ import annotations

import random as _random
from typing import Any, Optional

import attr
from hyperlink import EncodedURL
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from sealgw.config import HTTPUpstreamConfig
from sealgw.credentials import ICredentials
from sealgw.http import (
    DEFAULT_RETRY_AFTER,
    UNSENT,
    Backends,
    Body,
    BodyReadFailed,
    HTTPClient,
    IHTTPClient,
    IHTTPResponse,
    SlotLimits,
    SlotRefused,
    UpstreamSlots,
    describe,
    join_url,
    sendable,
    slot_metrics,
)
from sealgw.relay._health import UpstreamHealth
from sealgw.relay._interfaces import (
    Delivery,
    IRelayMetrics,
    IUpstream,
    Push,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sealgw.relay._metrics import NoMetrics
from sealgw.relay._outcome import Outcome, failure_outcome, response_outcome
from sealgw.relay._retry import RandomSource, next_retry

#: Besides what the HTTP client's header policy already keeps out, a
#: push's C{extra_headers} (which may echo what a client sent) can never
#: set these.
_NOT_FROM_PUSH = frozenset(
    {"authorization", "proxy-authorization", "cookie", "user-agent"}
)


def push_slots(
    config: HTTPUpstreamConfig, reactor: Any, metrics: Optional[IRelayMetrics] = None
) -> UpstreamSlots:
    """
    The push slots C{config}'s C{in_flight} section describes; a push
    waits for one at most the upstream's C{response} timeout.
    """
    in_flight = config.in_flight
    limits = SlotLimits(
        in_flight=in_flight.pushes,
        tenant_share=in_flight.tenant_share,
        tenant_queue=in_flight.tenant_queue,
        queue=in_flight.queue,
        wait=config.timeouts.response,
    )
    registry = getattr(metrics, "registry", None)
    observer = (
        slot_metrics(registry).for_slots(config.name, "pushes", limits.in_flight)
        if registry is not None
        else None
    )
    return UpstreamSlots(config.name, "pushes", limits, reactor, observer)


def _final(error: UpstreamRejected | UpstreamUnavailable) -> UpstreamRejected | UpstreamUnavailable:
    """
    C{error} as the client gets it: every 429 and 503 with a
    C{Retry-After}.
    """
    if error.status in (429, 503) and error.retry_after is None:
        error.retry_after = DEFAULT_RETRY_AFTER
    return error


@implementer(IUpstream)
class HTTPUpstream:
    """
    An HTTP(S) upstream (Mimir, Loki, Tempo, Prometheus, an OpenTelemetry
    Collector, Azure Monitor).

    @param client: the upstream's HTTP client; by default one built from
        C{config} and owned (closed by L{close}).  A client passed in is
        its giver's to close.
    @param tenant_header: the header the push's tenant goes in; for the
        client built here only.
    @param credentials: replace the static ones the configuration names
        (how Azure AD tokens come in); for the client built here only.
    @param random: the jitter source, C{[0, 1)}.
    @param slots: the upstream's push slots; by default the ones
        C{config.in_flight} describes.
    """

    _log = Logger()

    def __init__(
        self,
        config: HTTPUpstreamConfig,
        reactor: Any,
        tenant_header: str = "X-Scope-OrgID",
        credentials: Optional[ICredentials] = None,
        metrics: Optional[IRelayMetrics] = None,
        client: Optional[IHTTPClient] = None,
        random: RandomSource = _random.random,
        slots: Optional[UpstreamSlots] = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self._reactor: IReactorTime = reactor
        self._metrics: IRelayMetrics = metrics if metrics is not None else NoMetrics()
        self._random = random
        self._health = UpstreamHealth(reactor)
        # Parsed once per path: parsing a URL on every push is measurable.
        self._urls: dict[str, EncodedURL] = {}
        self.slots = slots if slots is not None else push_slots(config, reactor, metrics)
        self._owned: Optional[IHTTPClient] = None
        if client is None:
            client = self._owned = HTTPClient.for_upstream(
                config, reactor, tenant_header=tenant_header, credentials=credentials,
                in_flight=self.slots.limits.in_flight, kind="pushes",
                registry=getattr(metrics, "registry", None),
            )
        self.client: IHTTPClient = client

    def __repr__(self) -> str:
        return f"<HTTPUpstream {self.name!r} {', '.join(self.config.urls)!r}>"

    def close(self) -> Deferred[None]:
        if self._owned is None:
            return succeed(None)
        return self._owned.close()

    def deliver(self, push: Push) -> Deferred[Delivery]:
        return self._health.watch(Deferred.fromCoroutine(self._deliver(push)))

    def health(self) -> dict[str, Any]:
        """
        How recent deliveries went, the push slots in use and each
        backend's state, for C{/health}.  A backend set aside makes the
        upstream I{degraded} (its other backends still take pushes).
        """
        report = {**self._health.report(), "pushes_in_flight": self.slots.report()}
        backends = getattr(self.client, "backends", None)
        if isinstance(backends, Backends):
            report["backends"] = backends.report()
            if not backends.healthy():
                report["status"] = "degraded"
        return report

    async def _deliver(self, push: Push) -> Delivery:
        started = push.received_at or self._reactor.seconds()
        url = self._urls.get(push.path)
        if url is None:
            # In the form treq sends, worked out once per path.
            url = self._urls[push.path] = sendable(join_url(self.config.url, push.path))
        headers = {
            name: value
            for name, value in push.extra_headers.items()
            if name.lower() not in _NOT_FROM_PUSH
        }
        attempts = 0
        while True:
            attempts += 1
            outcome = await self._attempt(url, headers, push)
            if outcome.delivery is not None:
                if attempts > 1:
                    self._log.info(
                        "{upstream}: delivered {signal} for {tenant} after {attempts} attempts",
                        upstream=self.name, signal=push.signal, tenant=push.tenant,
                        attempts=attempts,
                    )
                if attempts == 1:
                    return outcome.delivery
                return attr.evolve(outcome.delivery, attempts=attempts)
            error = outcome.error
            assert error is not None
            detail = f" ({outcome.detail})" if outcome.detail else ""
            if outcome.retry_reason is None:
                # A refusal of the data, or of a tenant over its share of
                # the upstream, is the client's business (it is told, and
                # the slots' metrics count it); anything else is the
                # operator's.
                log = self._log.info if outcome.clients else self._log.warn
                log(
                    "{upstream}: {signal} for {tenant} not delivered: {error}{detail}",
                    upstream=self.name, signal=push.signal, tenant=push.tenant, error=error,
                    detail=detail,
                )
                raise _final(error)
            decision = next_retry(
                self.config.retry,
                attempts,
                now=self._reactor.seconds(),
                started=started,
                random=self._random,
                retry_after=error.retry_after,
            )
            if decision.delay is None:
                error.reason = f"{error.reason} ({decision.why})"
                self._log.warn(
                    "{upstream}: {signal} for {tenant} not delivered: {error}{detail}",
                    upstream=self.name, signal=push.signal, tenant=push.tenant, error=error,
                    detail=detail,
                )
                raise _final(error)
            self._metrics.retried(self.name, outcome.retry_reason)
            self._log.info(
                "{upstream}: attempt {attempt} failed ({error}{detail}); retrying in {delay:.2f}s",
                upstream=self.name, attempt=attempts, error=error, delay=decision.delay,
                detail=detail,
            )
            await deferLater(self._reactor, decision.delay, lambda: None)

    async def _attempt(self, url: EncodedURL, headers: dict[str, str], push: Push) -> Outcome:
        try:
            slot = await self.slots.acquire(push.share)
        except SlotRefused as e:
            return failure_outcome(e)
        began = self._reactor.seconds()
        label = "error"
        try:
            outcome = await self._exchange(url, headers, push)
            label = outcome.label
            return outcome
        except CancelledError:
            label = "cancelled"
            raise
        finally:
            slot.release()
            if label != UNSENT:
                self._metrics.observe(self.name, label, self._reactor.seconds() - began)

    async def _exchange(self, url: EncodedURL, headers: dict[str, str], push: Push) -> Outcome:
        try:
            response: IHTTPResponse = await self.client.request(
                "POST",
                url,
                headers=headers,
                body=push.body,
                content_type=push.content_type,
                content_encoding=push.content_encoding,
                tenant=push.tenant,
            )
        except CancelledError:
            raise
        except Exception as e:
            return failure_outcome(e)

        status = response.status
        try:
            response_body = await response.read(self.config.max_response_body)
        except BodyReadFailed as e:
            # The status has arrived and decides the outcome; only the
            # text is lost.
            self._log.warn(
                "{upstream}: answered {status} but its body could not be read: {why}",
                upstream=self.name, status=status, why=describe(e.cause),
            )
            response_body = Body(e.partial, truncated=True)
        return response_outcome(
            status, response.headers, response_body, self._reactor.seconds()
        )
