"""
The delivery loop shared by the metrics pusher and the Loki handler: one
payload in flight at a time, retried with backoff until the gateway takes
or refuses it, and at most one newer payload waiting behind it.

Holding the newest payload and no other is what bounds memory through an
outage: a metrics snapshot supersedes the one before it, and the Loki
handler offers a batch only when the outbox is idle, leaving its records
in its own bounded queue meanwhile.

A refusal (a 4xx other than 429: a wrong token, a tenant the token may
not use) is not retried, but it is no reason to send the next payload at
once either: the next one would be refused the same way.  After a
refusal the outbox pauses, longer after each refusal in a row, and the
next payload it is offered afterwards is the probe that finds out whether
the gateway takes payloads again (a token file fixed on the gateway's
side).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import attr
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sealgw.client import _selflog
from sealgw.client._http import Answer, Verdict
from sealgw.client._report import DeliveryReport
from sealgw.client._retry import Backoff

#: The pause after a refusal: 5 s (2.5 to 5 with jitter) after the first,
#: doubling after each refusal in a row up to 5 minutes.
REFUSAL_BACKOFF = Backoff(initial=5.0, maximum=300.0)


@attr.define
class PushCounters:
    """
    What became of the payloads, for the application to read or export.

    @ivar delivered: payloads the gateway took (2xx).
    @ivar failed: attempts that will be made again (connection errors,
        timeouts, 5xx, 429).
    @ivar rejected: payloads the gateway refused for good (other 4xx) and
        that were dropped; each refusal pauses sending.
    @ivar superseded: payloads replaced by a newer one before they could
        be delivered.
    @ivar items_delivered: series or log lines in the delivered payloads.
    @ivar items_rejected: series or log lines in the refused payloads.
    @ivar errors: unexpected exceptions in the loop (building a payload,
        a bug), logged and survived.
    @ivar last_error: the most recent failure or refusal, for a health
        page; L{None} after a delivery.
    """

    delivered: int = 0
    failed: int = 0
    rejected: int = 0
    superseded: int = 0
    items_delivered: int = 0
    items_rejected: int = 0
    errors: int = 0
    last_error: Optional[str] = None


@attr.frozen
class Payload:
    """
    A body ready to send and how many items it carries (series or log
    lines), for the counters and the log.
    """

    body: bytes
    items: int


#: Sends a payload once; never fails but for cancellation.
Send = Callable[[Payload], Deferred[Answer]]


class Outbox:
    """
    Delivers the payloads it is offered, newest first, on the reactor
    thread.  Not thread-safe: only call it from the reactor (reading
    L{refused} from another thread is fine).

    Attempts are not logged one by one (L{counters} count them): what the
    user is told is up to the L{DeliveryReport}, once when trouble starts
    and once when it ends.  Only a bug in sending is logged.

    @ivar refused: whether the gateway has refused a payload since the
        last one it took (sending is paused, or the probe after the pause
        is out or being retried).
    """

    def __init__(
        self,
        send: Send,
        clock: IReactorTime,
        backoff: Backoff,
        counters: PushCounters,
        log: Logger,
        report: DeliveryReport,
        refusal_backoff: Backoff = REFUSAL_BACKOFF,
    ) -> None:
        self._send = send
        self._clock = clock
        self._backoff = backoff
        self._refusal_backoff = refusal_backoff
        self.counters = counters
        self._log = log
        self.report = report
        self._current: Optional[Payload] = None
        self._next: Optional[Payload] = None
        self._in_flight: Optional[Deferred[Answer]] = None
        self._timer: Optional[IDelayedCall] = None
        self._paused = False
        self.refused = False
        self._failures_in_row = 0
        self._refusals_in_row = 0
        self._waiting: list[tuple[int, Deferred[None]]] = []
        self._settled: list[Deferred[None]] = []
        #: Called when the outbox empties after an answer, so that a sender
        #: holding more can offer it at once rather than at its next tick.
        self.on_idle: Optional[Callable[[], None]] = None

    @property
    def idle(self) -> bool:
        """
        Whether nothing is being sent or waiting to be retried, and
        sending is not paused after a refusal.
        """
        return self._current is None and not self._paused

    @property
    def paused(self) -> bool:
        """
        Whether sending is paused after a refusal.
        """
        return self._paused

    def offer(self, payload: Payload) -> None:
        """
        Send C{payload} as soon as the payload ahead of it is settled (or
        the pause after a refusal is over); a payload waiting for its
        retry, or for the pause to end, is replaced by it (and so is one
        offered before it that has not left yet).
        """
        if self._current is None and not self._paused:
            self._current = payload
            self._attempt()
        elif self._current is None:
            self._current = payload
        elif self._in_flight is not None:
            if self._next is not None:
                self._supersede(self._next)
            self._next = payload
        else:
            self._supersede(self._current)
            self._current = payload

    def delivered(self, count: int) -> Deferred[None]:
        """
        Fires once C{count} payloads in all have been delivered.
        """
        d: Deferred[None] = Deferred()
        if self.counters.delivered >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d

    def settled(self) -> Deferred[None]:
        """
        Fires when nothing is in flight: at once when idle or waiting for
        a retry, else when the answer comes.
        """
        if self._in_flight is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._settled.append(d)
        return d

    def cancel_retry(self) -> Optional[Payload]:
        """
        Stop waiting to retry (or for a pause to end) and hand back the
        payload that was waiting (with nothing in flight, nothing waits
        behind it); the outbox is left empty.  Used at shutdown, which
        makes its own last attempt.
        """
        if self._in_flight is not None:
            raise RuntimeError("cancel_retry with a payload in flight; wait for settled()")
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._paused = False
        current, self._current = self._current, None
        return current

    def abort(self) -> None:
        """
        Cancel whatever is in flight or waiting; used when a shutdown's
        time is up.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._in_flight is not None:
            self._in_flight.cancel()

    async def send_once(self, payload: Payload) -> Answer:
        """
        One attempt at C{payload}, outside the retry loop (the last push
        at shutdown), counted like any other.
        """
        with _selflog.shipping():
            sending = self._send(payload)
        answer = await sending
        with _selflog.shipping():
            self._count(payload, answer)
            if answer.verdict is Verdict.SENT:
                self.report.sent()
            elif answer.verdict is Verdict.REJECTED:
                self.report.refused(answer, payload.items, None)
        return answer

    # -- the loop ------------------------------------------------------------

    def _attempt(self) -> None:
        with _selflog.shipping():
            self._timer = None
            assert self._current is not None
            payload = self._current
            d = self._in_flight = self._send(payload)
            d.addCallbacks(
                lambda answer: self._answered(payload, answer),
                lambda failure: self._crashed(payload, failure),
            )

    def _answered(self, payload: Payload, answer: Answer) -> None:
        with _selflog.shipping():
            self._in_flight = None
            try:
                self._count(payload, answer)
                if answer.verdict is Verdict.RETRY:
                    self._failures_in_row += 1
                    delay = self._backoff.delay(self._failures_in_row, answer.retry_after)
                    self.report.failed(answer, delay)
                    self._retry_later(delay)
                    return
                self._failures_in_row = 0
                if answer.verdict is Verdict.REJECTED:
                    self._refusals_in_row += 1
                    pause = self._refusal_backoff.delay(self._refusals_in_row)
                    self.report.refused(answer, payload.items, pause)
                    self._pause(pause)
                    return
                self._refusals_in_row = 0
                self.refused = False
                self.report.sent()
                self._advance()
            finally:
                self._wake()
            if self._current is None and not self._paused and self.on_idle is not None:
                self.on_idle()

    def _pause(self, pause: float) -> None:
        """
        Hold what comes next for C{pause} seconds; the newest payload
        waiting then goes as the probe.
        """
        self.refused = self._paused = True
        self._current, self._next = self._next, None
        self._timer = self._clock.callLater(pause, self._resume)

    def _resume(self) -> None:
        self._timer = None
        self._paused = False
        if self._current is not None:
            self._attempt()
        # Otherwise the sender offers the probe at its next tick.

    def _crashed(self, payload: Payload, failure: Failure) -> None:
        with _selflog.shipping():
            self._crashed_now(payload, failure)

    def _crashed_now(self, payload: Payload, failure: Failure) -> None:
        self._in_flight = None
        try:
            if failure.check(CancelledError):
                # Shutdown's time ran out; it decides what is lost.
                self._current = self._next = None
                return
            # A bug in sending: keep the loop alive, as if the attempt failed.
            self.counters.errors += 1
            self.counters.last_error = failure.getErrorMessage()
            self._failures_in_row += 1
            self._log.failure(
                "sealgw client: sending {what} to {url} raised",
                failure=failure,
                what=self.report.subject.one,
                url=self.report.url,
            )
            self._retry_later(self._backoff.delay(self._failures_in_row))
        finally:
            self._wake()

    def _retry_later(self, delay: float) -> None:
        if self._next is not None:
            # Something newer is waiting: it is what the retry sends.
            assert self._current is not None
            self._supersede(self._current)
            self._current, self._next = self._next, None
        self._timer = self._clock.callLater(delay, self._attempt)

    def _advance(self) -> None:
        self._current, self._next = self._next, None
        if self._current is not None:
            self._attempt()

    def _count(self, payload: Payload, answer: Answer) -> None:
        counters = self.counters
        if answer.verdict is Verdict.SENT:
            counters.delivered += 1
            counters.items_delivered += payload.items
            counters.last_error = None
        elif answer.verdict is Verdict.RETRY:
            counters.failed += 1
            counters.last_error = answer.reason
        else:
            counters.rejected += 1
            counters.items_rejected += payload.items
            counters.last_error = answer.reason

    def _supersede(self, payload: Payload) -> None:
        self.counters.superseded += 1

    def _wake(self) -> None:
        ready = [d for n, d in self._waiting if self.counters.delivered >= n]
        self._waiting = [(n, d) for n, d in self._waiting if self.counters.delivered < n]
        settled: list[Deferred[None]] = []
        if self._in_flight is None:
            settled, self._settled = self._settled, []
        for d in ready + settled:
            if not d.called:  # a waiter may have been cancelled
                d.callback(None)
