"""
A spool's segments as the reactor thread knows them: which exist, which
one is open for writing, how much of each is written and delivered, and
where the forwarder reads next.  Plain bookkeeping: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import attr

from sealgw.signals.push import Push
from sealgw.spool._disk import Cursor, SegmentScan
from sealgw.spool._format import SEGMENT_HEADER_SIZE


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
    reported: set[int] = attr.field(factory=set)

    @classmethod
    def scanned(cls, scan: SegmentScan) -> Segment:
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


class Segments:
    """
    The segments oldest first; the last may be the open one.

    @ivar read_segment: where the forwarder reads next, at C{read_offset};
        L{None} once everything written has been read (the next segment
        added is read from its start).
    """

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.active: Optional[Segment] = None
        self.next_seq = 1
        self.read_segment: Optional[Segment] = None
        self.read_offset = 0

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def add(self, segment: Segment) -> None:
        self.segments.append(segment)
        if self.read_segment is None:
            self.read_segment = segment
            self.read_offset = segment.start

    def open(self, salt: bytes) -> Segment:
        """
        Seal the open segment and begin a new one (empty until its first
        write).
        """
        self.seal_active()
        segment = self.active = Segment(self.next_seq, salt, size=0)
        self.next_seq += 1
        self.add(segment)
        return segment

    def seal_active(self) -> None:
        if self.active is not None:
            self.active.sealed = True
            self.active = None

    def reserve(self, count: int) -> int:
        """
        The first of C{count} segment numbers for segments taken over from
        elsewhere; writes from now on go after them.
        """
        first = self.next_seq
        self.next_seq += count
        self.seal_active()
        return first

    def after(self, segment: Segment) -> Optional[Segment]:
        index = self.segments.index(segment) + 1
        return self.segments[index] if index < len(self.segments) else None

    def forget(self, segment: Segment) -> None:
        """
        Take C{segment} out of view (it is being deleted).
        """
        if self.read_segment is segment:
            following = self.after(segment)
            self.read_segment = following
            self.read_offset = following.start if following is not None else 0
        self.segments.remove(segment)
        if self.active is segment:
            self.active = None

    def fully_read(self, segment: Segment) -> bool:
        """
        Whether no more of C{segment} is left to read, now or later.
        """
        if not segment.sealed or segment.writing:
            return False
        reading = self.read_segment
        if reading is None or segment.seq < reading.seq:
            return True
        return segment is reading and self.read_offset >= segment.size

    def advance(self) -> Optional[Segment]:
        """
        The segment to read next, moving past those read to their end.
        """
        segment = self.read_segment
        while segment is not None and self.fully_read(segment):
            segment = self.after(segment)
            self.read_segment = segment
            self.read_offset = segment.start if segment is not None else 0
        return segment

    def totals(self) -> tuple[int, int]:
        """
        Records waiting, and their bytes.
        """
        return (
            sum(s.records for s in self.segments),
            sum(s.bytes for s in self.segments),
        )

    def disk_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def unread_since(self) -> Optional[float]:
        """
        The C{received_at} of the oldest record not yet read, or a time no
        later than it.
        """
        for segment in self.segments:
            if segment.records <= 0:
                continue
            if segment is self.read_segment and self.read_offset > segment.start:
                return segment.last_read_at or segment.first_at
            return segment.first_at
        return None

    def cursor(self) -> Cursor:
        return Cursor(
            next_seq=self.next_seq,
            starts={s.seq: s.start for s in self.segments if s.start > SEGMENT_HEADER_SIZE},
        )
