"""
The spool's group commit: pushes wait in memory for their write, are
written and fsynced together (C{fsync: always}: whatever arrived during
the previous fsync; C{batch}: whatever arrived during C{fsync_interval}),
and are answered once their group is on disk.  The log is told of each
group before its pushes are answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import attr
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from sealgw.config._spool import SpoolConfig
from sealgw.relay._interfaces import Delivery, UpstreamUnavailable
from sealgw.signals.push import Push
from sealgw.spool._disk import SpoolDirectory, describe, human_size
from sealgw.spool._format import new_salt
from sealgw.spool._log import Segment, SpoolLog
from sealgw.spool._metrics import SpoolCounts

#: What a push's answer says once it is in the spool; the route answers
#: its own success status whatever this is.
SPOOLED = Delivery(status=202, body=b"", attempts=0)

#: Runs a blocking callable in a worker thread.
Thread = Callable[..., "Deferred[Any]"]


@attr.define(eq=False)
class _Waiting:
    """
    A push waiting for its group's write and fsync.
    """

    push: Push
    answer: Deferred[Delivery]
    estimate: int


class GroupWriter:
    """
    Writes the pushes given to L{add} in groups, each with one fsync.

    @param unavailable: the 503 for a reason (the spool's, with its
        C{Retry-After}).
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        config: SpoolConfig,
        log: SpoolLog,
        directory: SpoolDirectory,
        thread: Thread,
        clock: Any,
        *,
        segment_size: int,
        counts: SpoolCounts,
        unavailable: Callable[[str], UpstreamUnavailable],
    ) -> None:
        self.name = name
        self.config = config
        self.spool_log = log
        self.directory = directory
        self._thread = thread
        self._clock = clock
        self._segment_size = segment_size
        self._counts = counts
        self._unavailable = unavailable
        #: Pushes are written once this is set (the folder is open).
        self.ready = False
        #: Stopping: a C{batch} group does not wait for its interval.
        self.closing = False
        #: Why the last write failed, until one succeeds.
        self.error: Optional[str] = None
        self._queue: list[_Waiting] = []
        self._queued_bytes = 0
        self._queue_since = 0.0
        self._writing: Optional[list[_Waiting]] = None
        self._writing_bytes = 0
        self._timer: Any = None
        self._idle: list[Deferred[None]] = []

    @property
    def waiting_bytes(self) -> int:
        """
        The estimated bytes of the pushes waiting for, or in, a write.
        """
        return self._queued_bytes + self._writing_bytes

    def memory_for(self, estimate: int) -> Optional[UpstreamUnavailable]:
        """
        A 503 when the pushes waiting for their write would take more than
        C{max_memory} with one of about C{estimate} bytes: the disk is
        slower than the pushes coming in (or the spool is not open yet),
        and memory is not the place to wait.  A push alone in memory is
        always taken.
        """
        waiting = self.waiting_bytes
        if not waiting or waiting + estimate <= self.config.max_memory:
            return None
        return self._unavailable(
            f"spool is busy ({human_size(waiting)} of pushes already waiting to be written, "
            f"max_memory is {human_size(self.config.max_memory)})"
        )

    def add(self, push: Push, estimate: int) -> Deferred[Delivery]:
        """
        Queue C{push} for the next group; fires once it is fsynced.
        Cancelling only stops waiting: the write goes on.
        """
        answer: Deferred[Delivery] = Deferred(lambda d: None)
        if not self._queue:
            self._queue_since = self._clock.seconds()
        self._queue.append(_Waiting(push, answer, estimate))
        self._queued_bytes += estimate
        self.schedule()
        return answer

    def refuse_all(self, error: UpstreamUnavailable) -> None:
        """
        Answer every push still queued with C{error} (the spool could not
        be opened, or is stopping before it was).
        """
        queue, self._queue = self._queue, []
        self._queued_bytes = 0
        for waiting in queue:
            if not waiting.answer.called:
                waiting.answer.errback(error)

    async def flush(self) -> None:
        """
        Write everything queued, now, and wait for it.
        """
        while self._queue or self._writing is not None:
            idle: Deferred[None] = Deferred()
            self._idle.append(idle)
            if self._writing is None:
                self._write()
            await idle

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- writing -----------------------------------------------------------------

    def schedule(self) -> None:
        if not self.ready or self._writing is not None or not self._queue:
            return
        if self.config.fsync == "batch" and not self.closing:
            wait = self._queue_since + self.config.fsync_interval - self._clock.seconds()
            if wait > 0:
                if self._timer is None:
                    self._timer = self._clock.callLater(wait, self._due)
                return
        self._write()

    def _due(self) -> None:
        self._timer = None
        self.schedule()

    def _write(self) -> None:
        """
        Write and fsync everything queued as one group.
        """
        self.stop()
        group, self._queue = self._queue, []
        if not group:
            self._became_idle()
            return
        estimate = sum(w.estimate for w in group)
        self._queued_bytes -= estimate
        self._writing_bytes += estimate
        self._writing = group
        segment, create = self.spool_log.segment_for_write(new_salt(), self._segment_size)
        pushes = [w.push for w in group]
        written = self._thread(self.directory.append, segment.seq, segment.salt, pushes, create)
        written.addCallbacks(
            self._written,
            self._failed,
            callbackArgs=(segment, group, estimate),
            errbackArgs=(segment, group, estimate, create),
        )

    def _written(
        self,
        result: tuple[int, list[tuple[int, int]], float],
        segment: Segment,
        group: list[_Waiting],
        estimate: int,
    ) -> None:
        size, spans, seconds = result
        self._counts.writes += 1
        self._counts.write_seconds += seconds
        self.error = None
        # The log first: the segment's size must be known before the next
        # group is written (an answer may bring the next push at once).
        self.spool_log.appended(segment, [w.push for w in group], spans, size)
        self._finish(estimate)
        for waiting in group:
            if not waiting.answer.called:
                waiting.answer.callback(SPOOLED)

    def _failed(
        self,
        failure: Failure,
        segment: Segment,
        group: list[_Waiting],
        estimate: int,
        create: bool,
    ) -> None:
        # What happened to the file is unknown: nothing more goes there.
        # Readers stop at the size known fsynced; a restart sees any rest
        # as a torn record.
        if self.spool_log.write_failed(segment, create):
            self._thread(self.directory.delete, segment.seq).addErrback(lambda _: None)
        why = describe(failure.value)
        self.error = why
        if failure.check(OSError):
            self._log.error(
                "spool {upstream}: cannot write {path}: {why}",
                upstream=self.name, path=self.directory.segment_path(segment.seq), why=why,
            )
        else:
            self._log.failure("spool {upstream}: write failed", failure, upstream=self.name)
        self._finish(estimate)
        error = self._unavailable(f"spool: cannot write to disk: {why}")
        for waiting in group:
            if not waiting.answer.called:
                waiting.answer.errback(error)

    def _finish(self, estimate: int) -> None:
        self._writing_bytes -= estimate
        self._writing = None
        if self._queue:
            self.schedule()
        else:
            self._became_idle()

    def _became_idle(self) -> None:
        idle, self._idle = self._idle, []
        for waiter in idle:
            waiter.callback(None)
