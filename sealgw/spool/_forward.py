"""
The spool's forwarder: reads records back in order (or takes them straight
from the write that stored them), delivers them upstream a few at a time
with the relay's retries and its own backoff after those, moves refused
ones to the dead letters, and deletes segments once they are delivered.
"""

from __future__ import annotations

import os
import random as _random
from collections import deque
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
from sealgw.spool._disk import (
    DEAD_LETTERS,
    ReadRecord,
    SpoolDirectory,
    dead_letter_line,
    describe,
    human_size,
)
from sealgw.spool._format import Damage
from sealgw.spool._log import Segment, Segments, Spooled
from sealgw.spool._metrics import SpoolCounts

#: What the forwarder reads from disk at a time, and holds read ahead.
READ_BYTES = 8 * 1024 * 1024
READ_AHEAD_BYTES = 16 * 1024 * 1024

#: Runs a blocking callable in a worker thread (see L{SpoolUpstream._thread}).
Thread = Callable[..., "Deferred[Any]"]


def _write_dead_letter(
    directory: SpoolDirectory,
    upstream: str,
    payload: Optional[bytes],
    push: Optional[Push],
    status: Optional[int],
    reason: str,
    at: str,
) -> None:
    if payload is None:
        assert push is not None
        payload = push.to_bytes()
    directory.dead_letter(dead_letter_line(upstream, payload, push, status, reason, at))


class Forwarder:
    """
    Drains one spool into C{inner}, C{concurrency} records at a time, in
    the order they were written; while a record waits to be tried again,
    no later one is started.

    @param moved: called when the delivered watermark (the cursor) moves.
    @param report: called with damage found while reading.
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        inner: IUpstream,
        segments: Segments,
        directory: SpoolDirectory,
        thread: Thread,
        reactor: Any,
        *,
        concurrency: int,
        counts: SpoolCounts,
        moved: Callable[[], None],
        report: Callable[[int, Damage], None],
        retry: RetryConfig = RetryConfig(),
        random: RandomSource = _random.random,
    ) -> None:
        self.name = name
        self.inner = inner
        self.segments = segments
        self.directory = directory
        self._thread = thread
        self._reactor = reactor
        self._concurrency = concurrency
        self._read_records = max(64, 4 * concurrency)
        self._counts = counts
        self._moved = moved
        self._report = report
        self._retry = retry
        self._random = random
        self.running = False
        self._reading = False
        self._buffer: deque[Spooled] = deque()
        self._buffered_bytes = 0
        # Every record read and not yet done, in order: the first one's
        # offset is the delivered watermark.
        self._pending: deque[Spooled] = deque()
        self._inflight: dict[Spooled, Deferred[None]] = {}
        self.waiting = 0
        self._read_retry: Any = None

    def start(self) -> None:
        self.running = True
        self.pump()

    def stop(self) -> None:
        """
        Stop forwarding; records in flight stay in the spool.
        """
        self.running = False
        if self._read_retry is not None and self._read_retry.active():
            self._read_retry.cancel()
        self._read_retry = None
        for forwarding in list(self._inflight.values()):
            forwarding.cancel()

    @property
    def busy(self) -> bool:
        return bool(self._inflight or self.waiting)

    def oldest_at(self) -> Optional[float]:
        """
        The C{received_at} of the oldest record not yet delivered (or a
        time no later than it).
        """
        if self._pending:
            return self._pending[0].received_at
        return self.segments.unread_since()

    # -- reading ---------------------------------------------------------------

    def written(self, segment: Segment, pushes: list[Push], spans: list[tuple[int, int]]) -> None:
        """
        A group was written to C{segment}: when the forwarder was waiting
        for exactly these records, take them as they are instead of reading
        them back.
        """
        segments = self.segments
        if (
            segments.read_segment is not segment
            or self._reading
            or segments.read_offset != spans[0][0]
            or len(self._buffer) + len(pushes) > 2 * self._read_records
            or self._buffered_bytes + sum(len(p.body) for p in pushes) > READ_AHEAD_BYTES
        ):
            return
        for push, (offset, end) in zip(pushes, spans, strict=True):
            self._take(Spooled(segment, offset, end, None, push, None, push.received_at))
        segments.read_offset = spans[-1][1]
        segment.last_read_at = pushes[-1].received_at

    def _take(self, record: Spooled) -> None:
        self._buffer.append(record)
        self._buffered_bytes += record.body_size
        self._pending.append(record)

    def pump(self) -> None:
        if not self.running:
            return
        while self._buffer and len(self._inflight) < self._concurrency and not self.waiting:
            record = self._buffer.popleft()
            self._buffered_bytes -= record.body_size
            self._dispatch(record)
        if not self._reading and len(self._buffer) < self._concurrency:
            self._read_more()

    def _read_more(self) -> None:
        segment = self.segments.advance()
        if segment is None or self.segments.read_offset >= segment.size:
            self.collect()
            return
        self._reading = True
        reading = self._thread(
            self.directory.read,
            segment.seq,
            segment.salt,
            self.segments.read_offset,
            segment.size,
            self._read_records,
            READ_BYTES,
        )
        reading.addCallbacks(
            self._read_done, self._read_failed, callbackArgs=(segment,), errbackArgs=(segment,)
        )

    def _read_done(
        self, result: tuple[list[ReadRecord], list[Damage], int], segment: Segment
    ) -> None:
        self._reading = False
        if segment is not self.segments.read_segment or not self.running:
            # Dropped while it was being read, or stopping.
            self.pump()
            return
        records, damage, offset = result
        for found in damage:
            if found.offset not in segment.reported:
                segment.reported.add(found.offset)
                self._report(segment.seq, found)
        for read in records:
            at = read.push.received_at if read.push is not None else self._reactor.seconds()
            self._take(
                Spooled(segment, read.offset, read.end, read.payload, read.push, read.problem, at)
            )
            segment.last_read_at = at
        self.segments.read_offset = offset
        self.pump()

    def _read_failed(self, failure: Failure, segment: Segment) -> None:
        self._reading = False
        if segment is not self.segments.read_segment:
            # Dropped (and deleted) while it was being read.
            self.pump()
            return
        self._log.error(
            "spool {upstream}: cannot read segment {seq}: {why}; trying again",
            upstream=self.name, seq=segment.seq, why=describe(failure.value),
        )
        if self.running and self._read_retry is None:
            self._read_retry = self._reactor.callLater(
                max(1.0, self._retry.max_backoff), self._read_again
            )

    def _read_again(self) -> None:
        self._read_retry = None
        self.pump()

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
            self._complete(record)
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
                records, size = self.segments.totals()
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
        self._complete(record)

    async def _dead_letter(self, record: Spooled, status: Optional[int], reason: str) -> None:
        push = record.push
        while True:
            try:
                await self._thread(
                    _write_dead_letter,
                    self.directory,
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
        self._log.warn(
            "spool {upstream}: {signal} for {tenant} refused ({status}: {reason}); "
            "moved to {path}",
            upstream=self.name,
            signal=push.signal if push is not None else "a record",
            tenant=push.tenant if push is not None else "nobody",
            status=status if status is not None else "unreadable",
            reason=reason,
            path=os.path.join(self.directory.path, DEAD_LETTERS),
        )

    def _complete(self, record: Spooled) -> None:
        if record.done:
            return
        record.done = True
        record.segment.records -= 1
        record.segment.bytes -= record.end - record.offset
        self.move_watermark()
        self.collect()

    def move_watermark(self) -> None:
        moved = False
        while self._pending and self._pending[0].done:
            record = self._pending.popleft()
            record.segment.start = record.end
            moved = True
        if moved:
            self._moved()

    # -- deleting ----------------------------------------------------------------

    def collect(self) -> None:
        """
        Delete the oldest segments once everything in them is done.
        """
        segments = self.segments
        while len(segments):
            segment = segments.segments[0]
            if not segments.fully_read(segment):
                return
            if self._pending and self._pending[0].segment.seq <= segment.seq:
                return
            segments.advance()
            segments.forget(segment)
            self.delete(segment)
            self._moved()

    def delete(self, segment: Segment) -> None:
        self._thread(self.directory.delete, segment.seq).addErrback(
            self._delete_failed, segment.seq
        )

    def _delete_failed(self, failure: Failure, seq: int) -> None:
        self._log.error(
            "spool {upstream}: cannot delete segment {seq}: {why}",
            upstream=self.name, seq=seq, why=describe(failure.value),
        )

    def purge(self, segment: Segment) -> None:
        """
        Forget every record of C{segment} (dropped): those read ahead, and
        those in flight, whose delivery is cancelled.
        """
        kept: deque[Spooled] = deque()
        for record in self._buffer:
            if record.segment is segment:
                record.done = True
                self._buffered_bytes -= record.body_size
            else:
                kept.append(record)
        self._buffer = kept
        for record, forwarding in list(self._inflight.items()):
            if record.segment is segment:
                record.done = True
                forwarding.cancel()
        self.move_watermark()
