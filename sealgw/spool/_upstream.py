"""
A durable spool in front of an upstream: a push is answered 2xx once it
is on disk (fsynced), and a forwarder (L{sealgw.spool._forward}) delivers
it upstream afterwards, in order, through outages, restarts and crashes,
at least once.  See C{docs/spool.rst}.

The reactor thread keeps the spool's state in one owner, L{SpoolLog};
every read, write, fsync and delete runs in the gateway's worker threads
through L{SpoolDirectory}.
"""

from __future__ import annotations

import os
import random as _random
from collections.abc import Callable
from typing import Any, Optional, Union

import attr
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sealgw.config import RetryConfig
from sealgw.config._spool import SpoolConfig
from sealgw.relay._file import ThreadRunner
from sealgw.relay._health import rfc3339
from sealgw.relay._interfaces import Delivery, IUpstream, Push, UpstreamUnavailable
from sealgw.relay._retry import RandomSource
from sealgw.spool._dead import DeadLetters
from sealgw.spool._disk import (
    Fsync,
    Recovered,
    SegmentScan,
    SpoolDirectory,
    describe,
    human_size,
    worker_directory,
)
from sealgw.spool._format import Damage
from sealgw.spool._forward import Forwarder
from sealgw.spool._log import Segment, SpoolLog
from sealgw.spool._metrics import SpoolCounts, SpoolMetrics
from sealgw.spool._takeover import Takeover
from sealgw.spool._writer import GroupWriter

#: A push's size in the spool beyond its body (its JSON header and the
#: record's), counted before it is written.
ESTIMATED_OVERHEAD = 1024

#: How often spools of workers that no longer run are looked for, and
#: records older than C{max_age} dropped (C{drop_oldest}).
HOUSEKEEPING_INTERVAL = 30.0

#: How soon after a delivery where it got to is saved.
CURSOR_DELAY = 1.0

MAX_SEGMENT = 64 * 1024 * 1024

#: A folder's lock held by someone else at start-up is asked for again
#: this often, this many times (a worker taking it over for a moment, or
#: the previous process of a restarted worker still exiting).
LOCK_RETRY = 0.5
LOCK_ATTEMPTS = 20

#: How often a stopping spool looks whether it is drained.
DRAIN_CHECK = 0.05


@implementer(IUpstream)
class SpoolUpstream:
    """
    An L{IUpstream} whose C{deliver} appends to a spool on disk, and whose
    forwarder drains the spool into C{inner} (an L{HTTPUpstream}, with its
    retries).

    Call L{start} once the worker threads run (L{UpstreamsService} does):
    it takes the folder's lock, recovers what an earlier run left, and
    starts forwarding.  Pushes given earlier wait.

    @param worker: this gateway worker's index or name (see
        L{worker_directory}).
    @param retry: the upstream's retry settings: the forwarder's own
        backoff, once C{inner} has given up on a record, follows them.
    @param fsync: the blocking fsync (tests count them).
    @param segment_size: where a segment is closed and a new one begun;
        by default a sixteenth of C{max_size}, at most 64 MiB.
    """

    _log = Logger()

    def __init__(
        self,
        inner: IUpstream,
        config: SpoolConfig,
        reactor: Any,
        *,
        retry: RetryConfig = RetryConfig(),
        run_in_thread: Optional[ThreadRunner] = None,
        worker: Union[int, str, None] = None,
        metrics: Optional[SpoolMetrics] = None,
        random: RandomSource = _random.random,
        fsync: Fsync = os.fsync,
        segment_size: Optional[int] = None,
    ) -> None:
        self.name = inner.name
        self.inner = inner
        self.config = config
        self._reactor = reactor
        self._retry = retry
        if run_in_thread is None:
            def run_in_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
        self._run_in_thread: ThreadRunner = run_in_thread
        self.directory = SpoolDirectory(
            os.path.join(config.directory, worker_directory(worker)), fsync
        )
        self.dead_letters = DeadLetters(self.directory.path, config.dead_letters_max_size, fsync)
        self._segment_size = segment_size or min(MAX_SEGMENT, max(1, config.max_size // 16))
        self.counts = SpoolCounts()
        self.log = SpoolLog(
            read=lambda *args: self._thread(self.directory.read, *args),
            delete=self._delete,
            moved=self._cursor_moved,
            damaged=self._report,
            unreadable=self._unreadable,
            clock=reactor,
            read_records=max(64, 4 * config.concurrency),
            read_retry=max(1.0, retry.max_backoff),
        )
        self.writer = GroupWriter(
            self.name,
            config,
            self.log,
            self.directory,
            self._thread,
            reactor,
            segment_size=self._segment_size,
            counts=self.counts,
            unavailable=self._unavailable,
        )
        self.forwarder = Forwarder(
            self.name,
            inner,
            self.log,
            self.dead_letters,
            self._thread,
            reactor,
            concurrency=config.concurrency,
            counts=self.counts,
            retry=retry,
            random=random,
        )
        self.takeover = Takeover(
            self.name,
            self.directory,
            self.log,
            self._thread,
            reactor,
            grace=config.takeover_after,
            found=self._found,
        )
        if metrics is not None:
            metrics.add(self)

        # Lifecycle.
        self._starting: Optional[Deferred[None]] = None
        self._ready = False
        self._closing = False
        self._closed: Optional[Deferred[None]] = None
        self._failed: Optional[str] = None
        self._locked = False
        self._housekeeping: Optional[LoopingCall] = None
        self._adopting: Optional[Deferred[None]] = None
        self._ops: set[Deferred[Any]] = set()
        self._cursor_timer: Any = None
        self._saving_cursor = False

        self._full_estimate: Optional[int] = None

    def __repr__(self) -> str:
        return f"<SpoolUpstream {self.name!r} {self.directory.path!r}>"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Take the spool folder, recover it, forward what it holds, and look
        for spools of workers that no longer run.  Fires once pushes can be
        written; never fails (a spool that cannot be opened answers 503 and
        says why in C{/health} and the log).
        """
        if self._starting is None:
            self._starting = Deferred.fromCoroutine(self._start())
        return self._starting

    async def _start(self) -> None:
        try:
            recovered = await self._open()
        except CancelledError:
            raise
        except Exception as e:
            self._failed = f"cannot open {self.directory.path}: {describe(e)}"
            self._log.critical("spool {upstream}: {why}", upstream=self.name, why=self._failed)
            self.writer.refuse_all(self._unavailable(f"spool unavailable: {self._failed}"))
            return
        if self._closing:
            return
        for scan in recovered.segments:
            self._found(scan, "left by the previous run")
        self.log.recovered([s for s in recovered.segments if s.salt is not None], recovered.next_seq)
        self._ready = True
        self.writer.ready = True
        records, size = self.log.totals()
        self._log.info(
            "spool {upstream}: {directory}: {records} record(s) ({size}) waiting from before",
            upstream=self.name, directory=self.directory.path, records=records,
            size=human_size(size),
        )
        self.writer.schedule()
        self.forwarder.start()
        self._housekeeping = LoopingCall(self._housekeep)
        self._housekeeping.clock = self._reactor
        self._housekeeping.start(HOUSEKEEPING_INTERVAL, now=True)

    async def _open(self) -> Recovered:
        for _ in range(LOCK_ATTEMPTS):
            if await self._thread(self.directory.lock, False):
                break
            await deferLater(self._reactor, LOCK_RETRY, lambda: None)
        else:
            raise OSError(
                f"{self.directory.path} is in use by another process "
                "(another gateway with the same spool directory?)"
            )
        self._locked = True
        return await self._thread(self.directory.recover)

    def close(self) -> Deferred[None]:
        """
        Write what was accepted, stop forwarding (records in flight stay in
        the spool for the next start), save the cursor and release the
        folder; then close the inner upstream.
        """
        if self._closed is None:
            self._closed = Deferred.fromCoroutine(self._close())
        return self._closed

    async def _close(self) -> None:
        self._closing = True
        self.writer.closing = True
        # The gateway stops its worker threads right after asking the
        # upstreams to close (work already handed to them is finished
        # first); what closing still has to do goes to the reactor's own
        # pool, which stops only with the reactor.
        pool = getattr(self._reactor, "getThreadPool", None)
        if pool is not None:
            reactor = self._reactor

            def run_in_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(reactor, pool(), f, *args)

            self._run_in_thread = run_in_thread
        if self._housekeeping is not None and self._housekeeping.running:
            self._housekeeping.stop()
        if self._ready:
            await self.writer.flush()
            await self._drain()
        else:
            self.writer.refuse_all(self._unavailable("the gateway is stopping"))
        self.forwarder.stop()
        self.writer.stop()
        if self._cursor_timer is not None and self._cursor_timer.active():
            self._cursor_timer.cancel()
        if self._adopting is not None:
            self._adopting.cancel()
        while self._ops:
            await DeferredList(list(self._ops), consumeErrors=True)
        if self._locked:
            try:
                await self._thread(self.directory.write_cursor, self.log.cursor())
            except Exception as e:
                self._log.warn(
                    "spool {upstream}: cursor not saved: {why}", upstream=self.name,
                    why=describe(e),
                )
            await self._thread(self.directory.unlock)
            self._locked = False
        await self.inner.close()

    async def _drain(self) -> None:
        """
        Go on delivering for up to C{drain_grace}, until the spool is empty
        or the upstream turns a delivery away (then waiting is no use);
        what is left stays on disk for the next start.
        """
        deadline = self._reactor.seconds() + self.config.drain_grace
        if self.config.drain_grace <= 0 or not self.log.totals()[0]:
            return
        records, size = self.log.totals()
        self._log.info(
            "spool {upstream}: stopping: delivering the {records} record(s) ({size}) waiting, "
            "for up to {grace:.0f}s",
            upstream=self.name, records=records, size=human_size(size),
            grace=self.config.drain_grace,
        )
        while self._reactor.seconds() < deadline:
            if not self.log.totals()[0] or self.forwarder.waiting or not self.forwarder.running:
                break
            await deferLater(self._reactor, DRAIN_CHECK, lambda: None)
        records, size = self.log.totals()
        if records:
            self._log.info(
                "spool {upstream}: {records} record(s) ({size}) left for the next start",
                upstream=self.name, records=records, size=human_size(size),
            )

    def _thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        C{f(*args)} in a worker thread.  Cancelling the result does not stop
        the work; L{close} waits for it all the same.
        """
        operation = self._run_in_thread(f, *args)
        self._ops.add(operation)
        waiter: Deferred[Any] = Deferred()

        def settle(result: Any) -> None:
            self._ops.discard(operation)
            if not waiter.called:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)

        operation.addBoth(settle)
        return waiter

    # -- taking pushes in ------------------------------------------------------

    def deliver(self, push: Push) -> Deferred[Delivery]:
        """
        Append C{push} to the spool; fires once it is fsynced (its group's
        fsync, under C{fsync: batch}).  Fails with L{UpstreamUnavailable}
        (503) when the spool is full, cannot be written, or the gateway is
        stopping.  Cancelling only stops waiting: the write goes on.
        """
        if self._closing:
            return fail(self._unavailable("the gateway is stopping"))
        if self._failed is not None:
            return fail(self._unavailable(f"spool unavailable: {self._failed}"))
        now = self._reactor.seconds()
        if not push.received_at:
            push = attr.evolve(push, received_at=now)
        estimate = len(push.body) + ESTIMATED_OVERHEAD
        refusal = self.writer.memory_for(estimate) or self._room_for(estimate, now)
        if refusal is not None:
            self.counts.refused += 1
            return fail(refusal)
        return self.writer.add(push, estimate)

    def _used(self) -> int:
        return self.log.disk_bytes() + self.writer.waiting_bytes

    def _over(self, estimate: int, now: float) -> Optional[str]:
        """
        Why a push of about C{estimate} bytes would not fit now, if so.
        """
        used = self._used()
        if used + estimate > self.config.max_size:
            return (
                f"spool is full ({human_size(used)} of {human_size(self.config.max_size)} "
                "waiting for the upstream)"
            )
        if self.config.when_full == "refuse":
            # Counted from when this spool took a record on: records found
            # at start-up or taken over have had no chance to go yet.
            oldest = self.log.oldest_at(held=True)
            if oldest is not None and now - oldest > self.config.max_age:
                return (
                    f"spool is full (its oldest record is {now - oldest:.0f}s old, "
                    f"max_age is {self.config.max_age:.0f}s)"
                )
        return None

    def _room_for(self, estimate: int, now: float) -> Optional[UpstreamUnavailable]:
        why = self._over(estimate, now)
        if why is not None:
            self.log.release_spent_active()
            if self.config.when_full == "drop_oldest":
                self._drop_oldest(estimate)
            why = self._over(estimate, now)
        if why is None:
            if self._full_estimate is not None:
                self._full_estimate = None
                self._log.info("spool {upstream}: has room again", upstream=self.name)
            return None
        if self._full_estimate is None:
            self._log.warn(
                "spool {upstream}: {why}; answering 503 until it drains",
                upstream=self.name, why=why,
            )
        self._full_estimate = estimate
        return self._unavailable(why)

    def _unavailable(self, why: str) -> UpstreamUnavailable:
        """
        The 503 of every push the spool cannot take, whatever the reason
        (full, cannot write, cannot be opened, the gateway stopping), with
        C{Retry-After}: the upstream's C{max_backoff}, at least a second.

        That is the pace at which the forwarder itself tries the upstream
        again, so a full spool has had its chance to drain by then; and for
        the other reasons a client coming back sooner would most likely
        meet the same answer.  One figure, documented, rather than an
        estimate from the drain rate, which is zero while the upstream is
        down (the usual reason a spool fills).
        """
        return UpstreamUnavailable(503, why, retry_after=max(1.0, self._retry.max_backoff))

    # -- segments found on disk, and damage ----------------------------------------

    def _found(self, scan: SegmentScan, whence: str) -> None:
        """
        Report what a scan of a segment found wrong.
        """
        for damage in scan.damage:
            self._report(scan.seq, damage)
        if scan.salt is None:
            self.counts.torn += 1
            self._log.warn(
                "spool {upstream}: segment {seq} {whence} is unreadable ({why}); renamed "
                "aside to {path}, it held nothing that was answered",
                upstream=self.name, seq=scan.seq, whence=whence, why=scan.problem,
                path=self.directory.damaged_path(scan.seq),
            )

    def _unreadable(self, seq: int, error: Optional[BaseException]) -> None:
        self._log.error(
            "spool {upstream}: cannot read segment {seq}: {why}; trying again",
            upstream=self.name, seq=seq, why=describe(error),
        )

    def _delete(self, segment: Segment) -> None:
        self._thread(self.directory.delete, segment.seq).addErrback(
            self._delete_failed, segment.seq
        )

    def _delete_failed(self, failure: Failure, seq: int) -> None:
        self._log.error(
            "spool {upstream}: cannot delete segment {seq}: {why}",
            upstream=self.name, seq=seq, why=describe(failure.value),
        )

    def _report(self, seq: int, damage: Damage) -> None:
        self.counts.torn += 1
        self._log.warn(
            "spool {upstream}: segment {seq}: {why} at offset {offset} ({size} bytes): "
            "skipped, never forwarded",
            upstream=self.name, seq=seq, why=damage.why, offset=damage.offset,
            size=damage.end - damage.offset,
        )

    # -- a full spool ----------------------------------------------------------------

    def _drop_oldest(self, estimate: int) -> None:
        while self._used() + estimate > self.config.max_size:
            if not self._drop("the spool is full"):
                return

    def _drop_expired(self, now: float) -> None:
        while True:
            victim = self.log.droppable()
            if victim is None or victim.last_at is None:
                return
            if now - victim.last_at <= self.config.max_age:
                return
            self._drop(f"older than max_age ({self.config.max_age:.0f}s)")

    def _drop(self, why: str) -> bool:
        dropped = self.log.drop_oldest()
        if dropped is None:
            return False
        segment, records, size, out = dropped
        self.forwarder.cancel(out)
        self.counts.dropped += records
        self._log.warn(
            "spool {upstream}: {why}: dropped {records} record(s) ({size}) received "
            "from {first} to {last}",
            upstream=self.name, why=why, records=records, size=human_size(size),
            first=_when(segment.first_at), last=_when(segment.last_at),
        )
        self._delete(segment)
        return True

    # -- the cursor --------------------------------------------------------------------

    def _cursor_moved(self) -> None:
        if self._cursor_timer is None and self.forwarder.running and self._locked:
            self._cursor_timer = self._reactor.callLater(CURSOR_DELAY, self._save_cursor)

    def _save_cursor(self) -> None:
        self._cursor_timer = None
        if self._saving_cursor:
            self._cursor_moved()
            return
        self._saving_cursor = True
        saving = self._thread(self.directory.write_cursor, self.log.cursor())

        def saved(result: Any) -> None:
            self._saving_cursor = False
            if isinstance(result, Failure):
                self._log.warn(
                    "spool {upstream}: cursor not saved: {why}",
                    upstream=self.name, why=describe(result.value),
                )

        saving.addBoth(saved)

    # -- spools of workers that no longer run, and old records -------------------------

    def _housekeep(self) -> None:
        try:
            if self.config.when_full == "drop_oldest":
                self._drop_expired(self._reactor.seconds())
            if self._adopting is None:
                self._adopting = Deferred.fromCoroutine(self._adopt_orphans())
                self._adopting.addErrback(self._adoption_failed)
                self._adopting.addBoth(self._adopted)
        except Exception:
            self._log.failure("spool {upstream}: housekeeping failed", upstream=self.name)

    def _adoption_failed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self._log.warn(
                "spool {upstream}: looking for spools of stopped workers failed: {why}",
                upstream=self.name, why=describe(failure.value),
            )

    def _adopted(self, _: Any) -> None:
        self._adopting = None

    async def _adopt_orphans(self) -> None:
        await self.takeover.look(lambda: self.forwarder.running)

    # -- what it looks like ------------------------------------------------------------

    def disk_bytes(self) -> int:
        """
        The size of the spool's segment files (what C{max_size} bounds).
        """
        return self.log.disk_bytes()

    def gauges(self) -> dict[str, float]:
        records, size = self.log.totals()
        oldest = self.log.oldest_at()
        return {
            "records": float(records),
            "bytes": float(size),
            "disk_bytes": float(self.log.disk_bytes()),
            "oldest_age_seconds": (
                0.0 if oldest is None else max(0.0, self._reactor.seconds() - oldest)
            ),
        }

    def state(self) -> str:
        """
        C{failed}, C{stopped}, C{starting}, C{full}, C{retrying} (the
        upstream is unavailable and records wait), C{forwarding} or
        C{idle}.
        """
        if self._failed is not None:
            return "failed"
        if self._closing:
            return "stopped"
        if not self._ready:
            return "starting"
        if self._full_estimate is not None:
            if self._over(self._full_estimate, self._reactor.seconds()) is not None:
                return "full"
        if self.forwarder.waiting:
            return "retrying"
        if self.forwarder.busy or self.log.totals()[0]:
            return "forwarding"
        return "idle"

    def health(self) -> dict[str, Any]:
        """
        The inner upstream's health, and the spool's state: C{degraded}
        when the upstream is, or the spool is full, failed, or its last
        write failed.
        """
        inner_health = getattr(self.inner, "health", None)
        report: dict[str, Any] = dict(inner_health()) if callable(inner_health) else {}
        state = self.state()
        gauges = self.gauges()
        spool = {
            "state": state,
            "directory": self.directory.path,
            "records": int(gauges["records"]),
            "bytes": int(gauges["bytes"]),
            "disk_bytes": int(gauges["disk_bytes"]),
            "max_size": self.config.max_size,
            "oldest_record": _when(self.log.oldest_at()),
            "oldest_age_seconds": round(gauges["oldest_age_seconds"], 3),
            **attr.asdict(self.counts),
        }
        if self._failed is not None:
            spool["error"] = self._failed
        elif self.writer.error is not None:
            spool["error"] = f"last write failed: {self.writer.error}"
        degraded = (
            report.get("status", "ok") != "ok"
            or state in ("full", "failed")
            or self.writer.error is not None
        )
        report["status"] = "degraded" if degraded else "ok"
        report["spool"] = spool
        return report


def _when(seconds: Optional[float]) -> Optional[str]:
    return None if seconds is None else rfc3339(seconds)
