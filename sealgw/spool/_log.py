"""
The one owner of a spool's state on the reactor thread: which segments
exist (always in sequence order), which one takes writes, where the reader
is, what it has read ahead, and how far delivery got (the watermark).

The writer, the forwarder and takeover change that state only through
L{SpoolLog}'s few verbs (appended, next batch, acknowledged, drop oldest,
reserve and take over); its rules are kept here and nowhere else:

    - the segments are listed in sequence order, and a segment number is
      never handed out twice;
    - the reader never skips older unread data: it does not move past a
      range of numbers reserved for a takeover until that takeover has
      added its segments (or given up);
    - every change ends in a call to the listener (the forwarder's pump),
      so that nothing waits for an event that already happened.

The I/O it decides on (reading a segment, deleting a spent one) is done
by callables it is given.  No blocking work here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Optional

import attr
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from sealgw.signals.push import Push
from sealgw.spool._disk import Cursor, ReadRecord, SegmentScan
from sealgw.spool._format import SEGMENT_HEADER_SIZE, Damage

#: What the reader asks from disk at a time, and the most it holds read
#: ahead of the deliveries.
READ_BYTES = 8 * 1024 * 1024
READ_AHEAD_BYTES = 16 * 1024 * 1024

#: Reads C{(seq, salt, offset, end, max_records, max_bytes)} in a worker
#: thread: the records, the damage met, and where to read on from.
Reader = Callable[..., "Deferred[tuple[list[ReadRecord], list[Damage], int]]"]


@attr.define(eq=False)
class Segment:
    """
    One segment file.

    @ivar size: bytes known written and fsynced: readers stop there.
    @ivar start: the first offset not known delivered (what the cursor
        saves).
    @ivar records: records in it not yet done (delivered, dead-lettered or
        dropped); C{bytes} their size.
    @ivar sealed: no more writes go to it.
    @ivar writing: group writes to it under way.
    @ivar last_read_at: the C{received_at} of the last record read from it.
    @ivar joined_at: when this spool took it on: found at start-up or taken
        over (0 for segments it wrote).
    @ivar reported: offsets of damage already logged.
    """

    seq: int
    salt: bytes
    size: int
    start: int = SEGMENT_HEADER_SIZE
    records: int = 0
    bytes: int = 0
    first_at: Optional[float] = None
    last_at: Optional[float] = None
    last_read_at: Optional[float] = None
    sealed: bool = False
    writing: int = 0
    joined_at: float = 0.0
    reported: set[int] = attr.field(factory=set)

    @classmethod
    def scanned(cls, scan: SegmentScan, joined_at: float = 0.0) -> Segment:
        """
        A segment found on disk: sealed, counted from its cursor on.
        """
        assert scan.salt is not None
        return cls(
            scan.seq,
            scan.salt,
            size=scan.size,
            start=scan.start,
            records=scan.records,
            bytes=scan.bytes,
            first_at=scan.first_at,
            last_at=scan.last_at,
            sealed=True,
            joined_at=joined_at,
            reported={d.offset for d in scan.damage},
        )


@attr.define(eq=False)
class Spooled:
    """
    A record on its way upstream: read back, or handed straight over by the
    write that stored it (then C{payload} is L{None}, and its push is
    serialised again if it is ever dead-lettered).
    """

    segment: Segment
    offset: int
    end: int
    payload: Optional[bytes]
    push: Optional[Push]
    problem: Optional[str]
    received_at: float
    done: bool = False

    @property
    def body_size(self) -> int:
        if self.push is not None:
            return len(self.push.body)
        return len(self.payload or b"")


@attr.frozen
class Reservation:
    """
    Segment numbers C{[first, first + count)} set aside for segments taken
    over from another folder: older than anything written from now on.
    """

    first: int
    count: int

    def __contains__(self, seq: object) -> bool:
        return isinstance(seq, int) and self.first <= seq < self.first + self.count


class SpoolLog:
    """
    A spool's segments, reader and watermark (see the module's rules).

    @param read: reads records in a worker thread (L{Reader}).
    @param delete: deletes a spent or dropped segment's file.
    @param moved: the watermark (what the cursor saves) moved.
    @param damaged: damage found while reading a segment, first time seen.
    @param unreadable: a segment could not be read (it is tried again).
    @param clock: for trying a failed read again after C{read_retry}.
    @param read_records: records asked for per read.
    """

    def __init__(
        self,
        *,
        read: Reader,
        delete: Callable[[Segment], None],
        moved: Callable[[], None],
        damaged: Callable[[int, Damage], None],
        unreadable: Callable[[int, Optional[BaseException]], None],
        clock: Any,
        read_records: int = 64,
        read_retry: float = 1.0,
        read_bytes: int = READ_BYTES,
        read_ahead_bytes: int = READ_AHEAD_BYTES,
    ) -> None:
        self._read = read
        self._delete = delete
        self._moved = moved
        self._damaged = damaged
        self._unreadable = unreadable
        self._clock = clock
        self._read_records = read_records
        self._read_retry = read_retry
        self._read_bytes = read_bytes
        self._read_ahead_bytes = read_ahead_bytes
        self._listeners: list[Callable[[], None]] = []

        self._segments: list[Segment] = []
        self._active: Optional[Segment] = None
        self.next_seq = 1
        self._reservations: list[Reservation] = []
        # The reader: the segment it is in and where it reads next; a
        # segment numbered past _read_seq is entered at its start.
        self._read_seq = 0
        self._read_offset = 0
        self._reading: Optional[tuple[Segment, int]] = None
        self._retry_timer: Any = None
        self._reading_on = False
        # Read ahead, not yet handed out.
        self._buffer: deque[Spooled] = deque()
        self._buffered_bytes = 0
        # Every record read and not yet done, in order: the first one's
        # offset is the delivered watermark.
        self._pending: deque[Spooled] = deque()

    # -- the listener ------------------------------------------------------------

    def listen(self, listener: Callable[[], None]) -> None:
        """
        Call C{listener} after every change (the forwarder's pump).
        """
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # -- looking -----------------------------------------------------------------

    def __iter__(self) -> Iterator[Segment]:
        return iter(list(self._segments))

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def active(self) -> Optional[Segment]:
        return self._active

    @property
    def reading(self) -> bool:
        return self._reading is not None

    @property
    def taking_over(self) -> bool:
        return bool(self._reservations)

    def totals(self) -> tuple[int, int]:
        """
        Records waiting, and their bytes.
        """
        return (
            sum(s.records for s in self._segments),
            sum(s.bytes for s in self._segments),
        )

    def disk_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def oldest_at(self, held: bool = False) -> Optional[float]:
        """
        The C{received_at} of the oldest record not yet done (or a time no
        later than it); when C{held}, no earlier than when this spool took
        it on (see L{Segment.joined_at}).
        """
        if self._pending:
            record = self._pending[0]
            return max(record.received_at, record.segment.joined_at if held else 0.0)
        for segment in self._segments:
            if segment.records <= 0:
                continue
            at = segment.first_at
            if segment.seq == self._read_seq and self._read_offset > segment.start:
                at = segment.last_read_at or segment.first_at
            if held and at is not None:
                at = max(at, segment.joined_at)
            return at
        return None

    def cursor(self) -> Cursor:
        return Cursor(
            next_seq=self.next_seq,
            starts={s.seq: s.start for s in self._segments if s.start > SEGMENT_HEADER_SIZE},
        )

    # -- segments found at start-up ------------------------------------------------

    def recovered(self, scans: list[SegmentScan], next_seq: int) -> None:
        """
        The segments a starting spool found in its folder (readable ones).
        """
        for scan in sorted(scans, key=lambda s: s.seq):
            if scan.seq >= self.next_seq:
                self.next_seq = scan.seq + 1
            self._insert(Segment.scanned(scan, self._clock.seconds()))
        self.next_seq = max(self.next_seq, next_seq)
        self._changed()

    def _insert(self, segment: Segment) -> None:
        if segment.seq < self._read_seq or (
            segment.seq == self._read_seq and self._read_seq != 0
        ):
            # Never: numbers below the reader are only handed out by a
            # reservation, which the reader does not pass.
            raise ValueError(
                f"segment {segment.seq} would go behind the reader (at {self._read_seq})"
            )
        index = len(self._segments)
        while index and self._segments[index - 1].seq > segment.seq:
            index -= 1
        self._segments.insert(index, segment)

    # -- writing -------------------------------------------------------------------

    def segment_for_write(self, salt: bytes, segment_size: int) -> tuple[Segment, bool]:
        """
        The segment the next group goes to, and whether it is new: the open
        one, or a new one once that reached C{segment_size}.
        """
        segment = self._active
        create = segment is None or segment.size >= segment_size
        if create:
            self._seal_active()
            segment = self._active = Segment(self.next_seq, salt, size=0)
            self.next_seq += 1
            self._insert(segment)
        assert segment is not None
        segment.writing += 1
        return segment, create

    def appended(
        self, segment: Segment, pushes: list[Push], spans: list[tuple[int, int]], size: int
    ) -> None:
        """
        A group was written to C{segment} and fsynced.  When the reader was
        waiting for exactly these records, it takes them as they are
        instead of reading them back.
        """
        segment.size = size
        segment.writing -= 1
        for push, (offset, end) in zip(pushes, spans, strict=True):
            segment.records += 1
            segment.bytes += end - offset
            if segment.first_at is None:
                segment.first_at = push.received_at
            segment.last_at = push.received_at
        if (
            self._reading is None
            and self._position() is segment
            and self._read_offset == spans[0][0]
            and len(self._buffer) + len(pushes) <= 2 * self._read_records
            and self._buffered_bytes + sum(len(p.body) for p in pushes) <= self._read_ahead_bytes
        ):
            for push, (offset, end) in zip(pushes, spans, strict=True):
                self._take(Spooled(segment, offset, end, None, push, None, push.received_at))
            self._read_offset = spans[-1][1]
            segment.last_read_at = pushes[-1].received_at
        self._changed()

    def write_failed(self, segment: Segment, created: bool) -> bool:
        """
        A group's write to C{segment} failed: what happened to the file is
        unknown, so nothing more goes there (readers stop at the size known
        fsynced).  C{True} when the segment was new and nothing in it was
        answered: it is forgotten, and the caller deletes its file.
        """
        segment.writing -= 1
        segment.sealed = True
        if segment is self._active:
            self._active = None
        forget = created and segment.size == 0
        if forget:
            self._forget(segment)
        self._changed()
        return forget

    def _seal_active(self) -> None:
        if self._active is not None:
            self._active.sealed = True
            self._active = None

    def release_spent_active(self) -> None:
        """
        Close the open segment when everything in it is done, so that it
        can be deleted (a full spool must be able to drain to empty).
        """
        active = self._active
        if active is not None and active.writing == 0 and active.records == 0:
            self._seal_active()
            self._collect()
            self._changed()

    # -- reading -------------------------------------------------------------------

    def _reserved_below(self, seq: int) -> bool:
        return any(r.first < seq for r in self._reservations)

    def _position(self) -> Optional[Segment]:
        """
        The segment the reader is in, moving it past segments read to
        their end; L{None} when there is nothing to read in order now.
        """
        for segment in self._segments:
            if segment.seq < self._read_seq:
                continue
            if segment.seq > self._read_seq:
                if self._reserved_below(segment.seq):
                    return None
                self._read_seq, self._read_offset = segment.seq, segment.start
            if self._read_offset < segment.size or not segment.sealed or segment.writing:
                return segment
        return None

    def _fully_read(self, segment: Segment) -> bool:
        """
        Whether no more of C{segment} is left to read, now or later.
        """
        if not segment.sealed or segment.writing:
            return False
        self._position()
        if segment.seq < self._read_seq:
            return True
        return segment.seq == self._read_seq and self._read_offset >= segment.size

    def next_batch(self, limit: int, ahead: int = 1) -> list[Spooled]:
        """
        Up to C{limit} records to deliver, in order; reads more from disk
        when fewer than C{ahead} are left read ahead.
        """
        batch: list[Spooled] = []
        while self._buffer and len(batch) < limit:
            record = self._buffer.popleft()
            self._buffered_bytes -= record.body_size
            batch.append(record)
        if len(self._buffer) < max(limit, ahead, 1) and self._reading_on:
            self._read_more()
        return batch

    def _read_more(self) -> None:
        if self._reading is not None or self._retry_timer is not None:
            return
        if self._buffered_bytes >= self._read_ahead_bytes:
            return
        segment = self._position()
        if segment is None or self._read_offset >= segment.size:
            self._collect()
            return
        offset = self._read_offset
        self._reading = (segment, offset)
        reading = self._read(
            segment.seq, segment.salt, offset, segment.size, self._read_records, self._read_bytes
        )
        reading.addCallbacks(
            self._read_done, self._read_failed, callbackArgs=(segment, offset),
            errbackArgs=(segment, offset),
        )

    def _read_done(
        self, result: tuple[list[ReadRecord], list[Damage], int], segment: Segment, offset: int
    ) -> None:
        self._reading = None
        if segment not in self._segments or (segment.seq, offset) != (
            self._read_seq, self._read_offset
        ):
            # Dropped while it was being read.
            self._changed()
            return
        records, damage, resume = result
        for found in damage:
            if found.offset not in segment.reported:
                segment.reported.add(found.offset)
                self._damaged(segment.seq, found)
        for read in records:
            at = read.push.received_at if read.push is not None else self._clock.seconds()
            self._take(
                Spooled(segment, read.offset, read.end, read.payload, read.push, read.problem, at)
            )
            segment.last_read_at = at
        self._read_offset = resume
        self._changed()

    def _read_failed(self, failure: Failure, segment: Segment, offset: int) -> None:
        self._reading = None
        if segment in self._segments:
            # Dropped (and deleted) while it was being read is no failure.
            self._unreadable(segment.seq, failure.value)
            if self._retry_timer is None:
                self._retry_timer = self._clock.callLater(self._read_retry, self._read_again)
        self._changed()

    def _read_again(self) -> None:
        self._retry_timer = None
        self._changed()

    def start(self) -> None:
        """
        Read from disk when records are asked for (the spool is open).
        """
        self._reading_on = True
        self._changed()

    def stop(self) -> None:
        """
        Read no more (the spool is closing).
        """
        self._reading_on = False
        if self._retry_timer is not None and self._retry_timer.active():
            self._retry_timer.cancel()
        self._retry_timer = None

    def _take(self, record: Spooled) -> None:
        self._buffer.append(record)
        self._buffered_bytes += record.body_size
        self._pending.append(record)

    # -- delivering ----------------------------------------------------------------

    def acknowledged(self, record: Spooled) -> None:
        """
        C{record} is done: delivered, or dead-lettered.
        """
        if record.done:
            return
        record.done = True
        record.segment.records -= 1
        record.segment.bytes -= record.end - record.offset
        self._move_watermark()
        self._collect()
        self._changed()

    def _move_watermark(self) -> None:
        moved = False
        while self._pending and self._pending[0].done:
            record = self._pending.popleft()
            record.segment.start = record.end
            moved = True
        if moved:
            self._moved()

    def _collect(self) -> None:
        """
        Delete the oldest segments once everything in them is done.
        """
        while self._segments:
            segment = self._segments[0]
            if not self._fully_read(segment):
                return
            if self._pending and self._pending[0].segment.seq <= segment.seq:
                return
            self._forget(segment)
            self._delete(segment)
            self._moved()

    def _forget(self, segment: Segment) -> None:
        self._segments.remove(segment)
        if self._active is segment:
            self._active = None

    # -- dropping ------------------------------------------------------------------

    def droppable(self) -> Optional[Segment]:
        """
        The oldest segment, unless a write to it is under way.
        """
        if not self._segments or self._segments[0].writing:
            return None
        return self._segments[0]

    def drop_oldest(self) -> Optional[tuple[Segment, int, int, list[Spooled]]]:
        """
        Forget the oldest segment undelivered (the spool is full, or its
        records too old): its records read ahead are taken back, and those
        out for delivery returned, for the caller to cancel.  The caller
        deletes the file.

        @return: the segment, its records and bytes not yet done, and its
            records out for delivery; L{None} when nothing can be dropped.
        """
        segment = self.droppable()
        if segment is None:
            return None
        if segment is self._active:
            # The next write begins a new one.
            self._seal_active()
        records, size = segment.records, segment.bytes
        segment.records = segment.bytes = 0
        self._forget(segment)
        kept: deque[Spooled] = deque()
        for record in self._buffer:
            if record.segment is segment:
                self._buffered_bytes -= record.body_size
                record.done = True
            else:
                kept.append(record)
        self._buffer = kept
        out = []
        for record in self._pending:
            if record.segment is segment and not record.done:
                record.done = True
                out.append(record)
        self._move_watermark()
        self._moved()
        self._collect()
        self._changed()
        return segment, records, size, out

    # -- taking over -----------------------------------------------------------------

    def reserve(self, count: int) -> Reservation:
        """
        Set aside C{count} segment numbers for segments taken over from
        elsewhere: they come after everything written so far and before
        anything written from now on, and the reader waits for them.
        """
        reservation = Reservation(self.next_seq, count)
        self.next_seq += count
        self._seal_active()
        self._reservations.append(reservation)
        return reservation

    def take_over(self, reservation: Reservation, scans: list[SegmentScan]) -> None:
        """
        Add the segments moved in under C{reservation} (those readable), in
        their place, and let the reader on.
        """
        for scan in scans:
            if scan.seq not in reservation:
                raise ValueError(f"segment {scan.seq} is not in {reservation}")
        self._reservations.remove(reservation)
        for scan in sorted(scans, key=lambda s: s.seq):
            if scan.salt is not None:
                self._insert(Segment.scanned(scan, self._clock.seconds()))
        self._changed()

    def release(self, reservation: Reservation) -> None:
        """
        A takeover that gave up: the reader goes on without it.
        """
        if reservation in self._reservations:
            self._reservations.remove(reservation)
        self._changed()
