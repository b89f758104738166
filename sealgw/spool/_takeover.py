"""
Taking over the spool folders that no running worker owns: those of
workers gone for good (a gateway scaled down to fewer workers, or moved
to another machine) and C{replay-*} folders written by C{sealgw spool
replay-dead-letters}.

A folder whose lock is free is not yet gone: its worker may only be
restarting (the supervisor waits up to 30 s between restarts of a worker
that keeps failing, and a starting gateway's workers do not all open
their spools at the same moment).  So a
worker's folder is taken over only once it has been seen free, and never
held, for C{grace}; a C{replay-*} folder, which no worker ever owns, at
once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from sealgw.spool._disk import SegmentScan, SpoolDirectory, describe
from sealgw.spool._log import SpoolLog

#: Runs a blocking callable in a worker thread.
Thread = Callable[..., "Deferred[Any]"]

#: Prefix of the folders C{replay-dead-letters} writes.
REPLAY_PREFIX = "replay-"


class Takeover:
    """
    Looks for folders beside C{directory} to take over (L{look}), and moves
    their segments into C{log}'s in sequence order through the log's
    reservations: numbered after everything written before the takeover
    began and before anything written after it, and delivered in that
    order.

    @param found: called with each segment moved in, and where from.
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        directory: SpoolDirectory,
        log: SpoolLog,
        thread: Thread,
        clock: Any,
        *,
        grace: float,
        found: Callable[[SegmentScan, str], None],
    ) -> None:
        self.name = name
        self.directory = directory
        self.spool_log = log
        self._thread = thread
        self._clock = clock
        self._grace = grace
        self._found = found
        #: Folders seen free, and since when (without being seen held).
        self.free_since: dict[str, float] = {}

    async def look(self, going_on: Callable[[], bool]) -> None:
        """
        One look at the folders beside this spool's; takes over those due.
        Stops early once C{going_on()} is false (the spool is closing).
        """
        now = self._clock.seconds()
        siblings = await self._thread(self.directory.siblings)
        names = {orphan.name for orphan in siblings}
        for name in list(self.free_since):
            if name not in names:
                del self.free_since[name]
        for orphan in siblings:
            if not going_on():
                return
            if not orphan.name.startswith(REPLAY_PREFIX):
                if await self._thread(orphan.in_use):
                    self.free_since.pop(orphan.name, None)
                    continue
                since = self.free_since.setdefault(orphan.name, now)
                if now - since < self._grace:
                    continue
            if not await self._thread(orphan.lock, False):
                self.free_since.pop(orphan.name, None)
                continue
            try:
                await self._take(orphan)
            finally:
                self.free_since.pop(orphan.name, None)
                await self._thread(orphan.unlock)
                try:
                    await self._thread(orphan.remove_if_spent)
                except OSError:
                    pass

    async def _take(self, orphan: SpoolDirectory) -> None:
        """
        Move C{orphan}'s segments (whose lock we hold) into this spool.
        """
        count = len(await self._thread(orphan.segments))
        if not count:
            return
        reservation = self.spool_log.reserve(count)
        try:
            scans = await self._thread(self.directory.adopt, orphan, reservation.first)
        except CancelledError:
            # Stopping; what was moved in is found when the spool next
            # starts.
            self.spool_log.release(reservation)
            raise
        except BaseException as e:
            # Segments moved in before the failure are found, in their
            # place, when this spool next starts; the reader goes on.
            self.spool_log.release(reservation)
            self._log.error(
                "spool {upstream}: taking over {orphan} failed: {why}",
                upstream=self.name, orphan=orphan.path, why=describe(e),
            )
            raise
        for scan in scans:
            self._found(scan, f"taken over from {orphan.name}")
        self.spool_log.take_over(reservation, scans)
        records = sum(s.records for s in scans if s.salt is not None)
        self._log.info(
            "spool {upstream}: took over {records} record(s) in {count} segment(s) "
            "from {orphan}, which no running worker owns",
            upstream=self.name, records=records, count=len(scans), orphan=orphan.path,
        )
