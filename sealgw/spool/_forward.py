"""
The spool's forwarder: takes records from the log in order, delivers them
upstream a few at a time with the relay's retries and its own backoff
after those, and moves refused ones to the dead letters.  What is read,
what is done and what is deleted is the log's to decide
(L{sealgw.spool._log.SpoolLog}); the forwarder only tells it.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Any, Optional

import attr
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from sealgw.config import RetryConfig
from sealgw.relay._health import rfc3339
from sealgw.relay._interfaces import IUpstream, UpstreamRejected, UpstreamUnavailable
from sealgw.relay._retry import RandomSource, backoff
from sealgw.signals.push import Push
from sealgw.spool._dead import DeadLetters, dead_letter_line
from sealgw.spool._disk import describe, human_size
from sealgw.spool._log import Spooled, SpoolLog
from sealgw.spool._metrics import SpoolCounts

#: Runs a blocking callable in a worker thread (see L{SpoolUpstream._thread}).
Thread = Callable[..., "Deferred[Any]"]


def _write_dead_letter(
    dead_letters: DeadLetters,
    upstream: str,
    payload: Optional[bytes],
    push: Optional[Push],
    status: Optional[int],
    reason: str,
    at: str,
) -> int:
    if payload is None:
        assert push is not None
        payload = push.to_bytes()
    return dead_letters.append(dead_letter_line(upstream, payload, push, status, reason, at))


class Forwarder:
    """
    Drains one spool's log into C{inner}, C{concurrency} records at a
    time, in the order they were written; while a record waits to be tried
    again, no later one is started.
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        inner: IUpstream,
        log: SpoolLog,
        dead_letters: DeadLetters,
        thread: Thread,
        reactor: Any,
        *,
        concurrency: int,
        counts: SpoolCounts,
        retry: RetryConfig = RetryConfig(),
        random: RandomSource = _random.random,
    ) -> None:
        self.name = name
        self.inner = inner
        self.spool_log = log
        self.dead_letters = dead_letters
        self._thread = thread
        self._reactor = reactor
        self._concurrency = concurrency
        self._counts = counts
        self._retry = retry
        self._random = random
        self.running = False
        self._inflight: dict[Spooled, Deferred[None]] = {}
        self.waiting = 0
        self._pumping = False
        self._again = False
        log.listen(self.pump)

    def start(self) -> None:
        self.running = True
        self.spool_log.start()

    def stop(self) -> None:
        """
        Stop forwarding; records in flight stay in the spool.
        """
        self.running = False
        self.spool_log.stop()
        for forwarding in list(self._inflight.values()):
            forwarding.cancel()

    @property
    def busy(self) -> bool:
        return bool(self._inflight or self.waiting)

    def pump(self) -> None:
        """
        Start deliveries while there is room; called after every change
        of the log, and of the forwarder's own state.  A call made while
        pumping makes the running one look again instead of recursing.
        """
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            while self.running:
                self._again = False
                # One at a time: a delivery that fails at once stops the
                # next one from starting.
                while not self.waiting and len(self._inflight) < self._concurrency:
                    batch = self.spool_log.next_batch(1, ahead=self._concurrency)
                    if not batch:
                        break
                    self._dispatch(batch[0])
                else:
                    # No room: still let the log read ahead.
                    self.spool_log.next_batch(0, ahead=self._concurrency)
                if not self._again:
                    break
        finally:
            self._pumping = False

    def cancel(self, records: list[Spooled]) -> None:
        """
        Stop delivering C{records} (their segment was dropped).
        """
        for record in records:
            forwarding = self._inflight.get(record)
            if forwarding is not None:
                forwarding.cancel()

    # -- delivering --------------------------------------------------------------

    def _dispatch(self, record: Spooled) -> None:
        forwarding = Deferred.fromCoroutine(self._forward(record))
        self._inflight[record] = forwarding
        forwarding.addErrback(self._forward_stopped)
        forwarding.addBoth(self._forwarded, record)

    def _forward_stopped(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self._log.failure("spool {upstream}: forwarding failed", failure, upstream=self.name)

    def _forwarded(self, _: Any, record: Spooled) -> None:
        self._inflight.pop(record, None)
        self.pump()

    async def _forward(self, record: Spooled) -> None:
        push = record.push
        if push is None:
            await self._dead_letter(record, None, f"not a readable push: {record.problem}")
            self.spool_log.acknowledged(record)
            return
        rounds = 0
        while True:
            try:
                # The relay's retry deadline counts from the hand-over.
                await self.inner.deliver(attr.evolve(push, received_at=self._reactor.seconds()))
            except UpstreamRejected as e:
                await self._dead_letter(record, e.status, e.reason)
                break
            except UpstreamUnavailable as e:
                error: UpstreamUnavailable = e
            except CancelledError:
                raise
            except Exception as e:
                self._log.failure("spool {upstream}: delivery failed", upstream=self.name)
                error = UpstreamUnavailable(502, describe(e))
            else:
                self._counts.forwarded += 1
                break
            delay = error.retry_after
            if delay is None:
                delay = backoff(self._retry, rounds, self._random)
            rounds += 1
            self._counts.retried += 1
            if not self.waiting:
                records, size = self.spool_log.totals()
                self._log.warn(
                    "spool {upstream}: upstream unavailable ({error}); holding {records} "
                    "record(s) ({size}), trying again in {delay:.1f}s",
                    upstream=self.name, error=error, records=records, size=human_size(size),
                    delay=delay,
                )
            self.waiting += 1
            try:
                await deferLater(self._reactor, delay, lambda: None)
            finally:
                self.waiting -= 1
        self.spool_log.acknowledged(record)

    async def _dead_letter(self, record: Spooled, status: Optional[int], reason: str) -> None:
        push = record.push
        while True:
            try:
                dropped = await self._thread(
                    _write_dead_letter,
                    self.dead_letters,
                    self.name,
                    record.payload,
                    push,
                    status,
                    reason,
                    rfc3339(self._reactor.seconds()),
                )
                break
            except CancelledError:
                raise
            except Exception as e:
                self._log.error(
                    "spool {upstream}: cannot write a dead letter: {why}; trying again",
                    upstream=self.name, why=describe(e),
                )
                await deferLater(self._reactor, max(1.0, self._retry.max_backoff), lambda: None)
        self._counts.dead_lettered += 1
        if dropped:
            self._counts.dead_letters_dropped += dropped
            self._log.warn(
                "spool {upstream}: dead letters past dead_letters_max_size ({size}): "
                "dropped the {count} oldest",
                upstream=self.name, size=human_size(self.dead_letters.max_size), count=dropped,
            )
        self._log.warn(
            "spool {upstream}: {signal} for {tenant} refused ({status}: {reason}); "
            "moved to {path}",
            upstream=self.name,
            signal=push.signal if push is not None else "a record",
            tenant=push.tenant if push is not None else "nobody",
            status=status if status is not None else "unreadable",
            reason=reason,
            path=self.dead_letters.current,
        )
