"""
L{MetricsPusher}: a C{prometheus_client} registry pushed to sealgw every
so often, as Prometheus remote write or as seal-proxy's push.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Optional, TextIO

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sealgw.client import _families
from sealgw.client._http import (
    USER_AGENT,
    Answer,
    TreqLike,
    connection_pool,
    http_client,
    post,
)
from sealgw.client._outbox import REFUSAL_BACKOFF, Outbox, Payload, PushCounters
from sealgw.client._report import DeliveryReport, ReactorWatch, Subject, reactor_running
from sealgw.client._retry import Backoff
from sealgw.client._threads import call_in_reactor, in_reactor_thread, wait_in_reactor


class PushFormat(enum.Enum):
    """
    How metrics are sent, and to which path of the gateway.
    """

    #: Prometheus remote write 1.0 to C{/api/v1/push}.
    REMOTE_WRITE = "remote-write"
    #: seal-proxy's push to C{/publish/metrics}, for gateways that only
    #: speak that.  The gateway adds C{node_name} and C{client_ip}; sealgw
    #: keeps every metric type, seal-proxy itself only counters and gauges.
    SEAL = "seal"


_PATHS = {PushFormat.REMOTE_WRITE: "/api/v1/push", PushFormat.SEAL: "/publish/metrics"}
_ITEMS = {PushFormat.REMOTE_WRITE: "series", PushFormat.SEAL: "metric famil(ies)"}


class MetricsPusher(Service):
    """
    Pushes C{registry} every C{interval} seconds, and once more when it
    stops.

    A push that fails in a way worth retrying (no connection, a timeout, a
    5xx, a 429) is sent again after a backoff, or after the gateway's
    C{Retry-After}; a newer snapshot taken meanwhile replaces it, so only
    the latest is ever held.  A push the gateway refuses for good (any
    other 4xx: a wrong token, a tenant the token may not use) is dropped,
    and pushing pauses (C{refusal_backoff}; no snapshot is taken
    meanwhile) before the next tick tries again.  Failures and refusals
    are told once on standard error, and so is their end.  Nothing stops
    the loop; L{counters} says how it goes.

    Start it from any thread with L{start}; a Twisted application can also
    make it a child of its service.  (Started while nothing runs the
    reactor for 5 s, it says so on standard error.)  It stops with the
    reactor (a last push first), with L{stopService} (reactor thread) or
    with L{close} (any other thread).

    @ivar counters: what became of the pushes; their C{items} are series
        (remote write) or metric families (seal).
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        registry: Collector = REGISTRY,
        interval: float = 15.0,
        labels: Optional[Mapping[str, str]] = None,
        tenant: Optional[str] = None,
        format: PushFormat | str = PushFormat.REMOTE_WRITE,
        path: Optional[str] = None,
        timeout: float = 10.0,
        stop_timeout: float = 5.0,
        backoff: Backoff = Backoff(),
        refusal_backoff: Backoff = REFUSAL_BACKOFF,
        report_to: Optional[TextIO] = None,
        before_push: Optional[Callable[[], object]] = None,
        reactor: Any = None,
        http: Optional[TreqLike] = None,
    ) -> None:
        """
        @param url: the gateway, C{https://gateway.example.com} (with any
            path prefix it is served under).
        @param token: sent as C{Authorization: Bearer}.
        @param labels: added to every series, winning over the metric's own
            (C{job}, C{instance}, ...).
        @param tenant: sent as C{X-Scope-OrgID}: needed only for a token
            that may use several tenants.
        @param path: the gateway's path for C{format}, if not the usual.
        @param timeout: the longest one push may take, answer included.
        @param stop_timeout: the longest the last push at stop may take.
        @param backoff: the waits before retrying a failed push.
        @param refusal_backoff: the pauses after a refused push.
        @param report_to: where trouble with the pushes is told, one line
            at a time; standard error by default.
        @param before_push: called on the reactor thread before each
            snapshot (to refresh values that are computed, not counted).
        @param reactor: the reactor (a C{Clock} in tests); the global one
            by default.
        @param http: a treq-like client; by default one over a connection
            pool of the pusher's own, closed when it stops.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        self.format = PushFormat(format)
        self.url = url.rstrip("/") + (path if path is not None else _PATHS[self.format])
        self.registry = registry
        self.interval = interval
        self.labels = dict(labels or {})
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self._before_push = before_push
        self._headers = _headers(self.format, token, tenant)
        self._pool = None
        if http is None:
            self._pool = connection_pool(reactor)
            http = http_client(reactor, self._pool)
        self._http = http
        self.counters = PushCounters()
        subject = Subject("a metrics push", "metrics pushes", _ITEMS[self.format], "metrics")
        self._report = DeliveryReport(subject, self.url, report_to, token)
        self._watch = ReactorWatch(reactor, self._report)
        self._outbox = Outbox(
            self._send, reactor, backoff, self.counters, self.log, self._report, refusal_backoff
        )
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._stopping: Optional[Deferred[None]] = None
        self._trigger: Any = None

    # -- starting and stopping --------------------------------------------------

    def start(self) -> None:
        """
        Start pushing, from any thread; the first push is made at once
        (once the reactor runs).
        """
        self._watch.arm()
        call_in_reactor(self._reactor, self.startService)

    def startService(self) -> None:
        if self.running:
            return
        self._watch.arm()
        super().startService()
        self._stopping = None
        self._loop.start(self.interval, now=True)
        # Push once more when the reactor stops (crochet stops it when the
        # application's main thread exits), whoever started the pusher.
        self._trigger = self._reactor.addSystemEventTrigger(
            "before", "shutdown", self._reactor_stopping
        )

    def _reactor_stopping(self) -> Deferred[None]:
        self._trigger = None  # it is firing: not to be removed
        return self.stopService()

    def stopService(self) -> Deferred[None]:
        """
        Stop the loop, wait for a push in flight, and push the latest
        snapshot once, within C{stop_timeout}.  Never fails; calling it
        again returns the same Deferred.
        """
        return self.stop(final_push=True)

    def stop(self, final_push: bool = True) -> Deferred[None]:
        """
        L{stopService}, with or without the last push.
        """
        if self._stopping is not None:
            return self._stopping
        if not self.running:
            return succeed(None)
        super().stopService()
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        if self._loop.running:
            self._loop.stop()
        d = Deferred.fromCoroutine(self._last_push(final_push))
        d.addTimeout(self.stop_timeout, self._reactor)
        d.addErrback(self._stop_failed)
        d.addBoth(self._close_pool)
        self._stopping = d
        return d

    def close(self, timeout: Optional[float] = None) -> bool:
        """
        From a thread that is not the reactor's: L{stopService}, waiting
        for it at most C{timeout} seconds (C{stop_timeout} and a second by
        default).  From the reactor thread it starts the stop and returns.

        @return: whether the stop finished in time.
        """
        if in_reactor_thread():
            self.stopService()
            return True
        if not reactor_running(self._reactor):
            if self._watch.armed and not self.running and self._stopping is None:
                # Started, but never on a reactor: none ever ran it.
                self._report.never_ran()
            return False
        wait = self.stop_timeout + 1.0 if timeout is None else timeout
        return wait_in_reactor(self._reactor, self.stopService, wait)

    async def _last_push(self, final_push: bool) -> None:
        await self._outbox.settled()
        left = self._outbox.cancel_retry()
        payload = self._snapshot() if final_push else None
        if payload is None:
            payload = left
        elif left is not None:
            self.counters.superseded += 1
        if payload is not None:
            await self._outbox.send_once(payload)

    def _stop_failed(self, failure: Any) -> None:
        self._outbox.abort()
        self.counters.errors += 1
        self.counters.last_error = f"stopping: {failure.getErrorMessage()}"
        self.log.warn(
            "sealgw client: the last metrics push to {url} did not finish: {error}",
            url=self.url,
            error=failure.getErrorMessage(),
        )

    def _close_pool(self, result: object) -> Deferred[Any] | object:
        if self._pool is not None:
            return self._pool.closeCachedConnections().addBoth(lambda _: None)
        return result

    # -- the loop ------------------------------------------------------------

    def wait_delivered(self, count: int) -> Deferred[None]:
        """
        Fires once C{count} pushes in all have been delivered (for tests,
        and for programs that push a known number of times).
        """
        return self._outbox.delivered(count)

    def _tick(self) -> None:
        # A LoopingCall whose function raises stops for good: nothing
        # gets out of here.
        if self._outbox.paused:
            return  # refused: no snapshot until the pause is over
        try:
            payload = self._snapshot()
            if payload is not None:
                self._outbox.offer(payload)
        except Exception:
            self.counters.errors += 1
            self.log.failure("sealgw client: metrics push loop")

    def _snapshot(self) -> Optional[Payload]:
        """
        The registry as a payload now, or L{None} when it cannot be taken
        (logged and counted).
        """
        try:
            if self._before_push is not None:
                self._before_push()
            return self.payload()
        except Exception as e:
            self.counters.errors += 1
            self.counters.last_error = f"collecting metrics: {e}"
            self.log.failure("sealgw client: collecting metrics for {url}", url=self.url)
            return None

    def payload(self) -> Payload:
        """
        The body of a push of the registry as it is now.
        """
        messages = _families.families(self.registry)
        if self.format is PushFormat.SEAL:
            return Payload(_families.seal_body(messages, self.labels), len(messages))
        now_ms = int(self._reactor.seconds() * 1000)
        request = _families.write_request(
            messages, self.labels, now_ms, _families.metadata_of(messages)
        )
        return Payload(_families.remote_write_body(request), len(request.timeseries))

    def _send(self, payload: Payload) -> Deferred[Answer]:
        return Deferred.fromCoroutine(
            post(self._http, self._reactor, self.url, payload.body, self._headers, self.timeout)
        )


def _headers(form: PushFormat, token: Optional[str], tenant: Optional[str]) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Content-Encoding": "snappy"}
    if form is PushFormat.REMOTE_WRITE:
        headers["Content-Type"] = "application/x-protobuf"
        headers["X-Prometheus-Remote-Write-Version"] = "0.1.0"
    else:
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if tenant is not None:
        headers["X-Scope-OrgID"] = tenant
    return headers
