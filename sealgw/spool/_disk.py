"""
One worker's spool folder on disk: its lock, segment files, cursor and
dead letters.  Everything here blocks: the gateway calls it from its
worker threads, the C{sealgw spool} command directly.

A folder holds::

    lock                      flock()ed by the process that owns it
    cursor.json               where delivery got to (rewritten, not fsynced)
    00000000000000000001.seg  segments, in the order they are drained
    dead-letters.jsonl        records the upstream refused, with why
    dead-letters.1.jsonl      older ones (L{sealgw.spool._dead})
    *.seg.damaged             segments set aside as unreadable

A process that dies (even by SIGKILL) drops its lock with it, which is
how a live gateway tells a spool of a worker that no longer runs from one
in use: it takes the lock and adopts the segments (L{SpoolDirectory.adopt}).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Optional, Union

import attr

from sealgw.signals.push import Push, PushFormatError
from sealgw.spool._format import (
    SEGMENT_HEADER_SIZE,
    Damage,
    FileSource,
    Record,
    SpoolFormatError,
    entries,
    frame,
    read_segment_header,
    seed,
    segment_header,
)

LOCK = "lock"
CURSOR = "cursor.json"
SEGMENT_SUFFIX = ".seg"
#: A segment whose header is unreadable is renamed aside with this added,
#: for someone to look at; it is never read or deleted by the gateway.
DAMAGED_SUFFIX = ".damaged"

#: Folders the spool creates are the gateway's alone; files are 0600.
FOLDER_MODE = 0o700
FILE_MODE = 0o600

#: Blocking fsync; tests pass one that counts.
Fsync = Callable[[int], None]


def worker_directory(worker: Union[int, str, None]) -> str:
    """
    The folder of a spool's directory a gateway worker writes to:
    C{worker-N} for worker index N, C{worker-0} for a gateway in one
    process, or a name given as it is.
    """
    if worker is None:
        return "worker-0"
    if isinstance(worker, int):
        return f"worker-{worker}"
    if not worker or worker.startswith(".") or os.sep in worker:
        raise ValueError(f"{worker!r} cannot name a spool folder")
    return worker


def human_size(size: float) -> str:
    """
    C{5.2MiB}, C{893B}: for people, not for parsing.
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"  # pragma: no cover


def describe(error: Optional[BaseException]) -> str:
    """
    An error as one short line: C{PATH: Input/output error}.
    """
    if error is None:
        return "unknown error"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error) or type(error).__name__


def segment_name(seq: int) -> str:
    return f"{seq:020d}{SEGMENT_SUFFIX}"


def _segment_seq(name: str) -> Optional[int]:
    if not name.endswith(SEGMENT_SUFFIX):
        return None
    stem = name[: -len(SEGMENT_SUFFIX)]
    return int(stem) if stem.isdigit() else None


@attr.frozen
class Cursor:
    """
    Where delivery got to: the next segment number to use, and the first
    offset not known to be delivered in segments where that is not their
    first record.  Losing an update only means records sent again.
    """

    next_seq: int = 1
    starts: dict[int, int] = attr.field(factory=dict)


@attr.define
class ReadRecord:
    """
    A record read back, with its push (or why it is not one).
    """

    offset: int
    end: int
    payload: bytes
    push: Optional[Push]
    problem: Optional[str] = None


@attr.define
class SegmentScan:
    """
    What reading a whole segment from C{start} found.

    @ivar salt: L{None} when the segment's header is unreadable
        (C{problem} says why); such a segment holds no answered record.
    @ivar records: records that check out from C{start} on; C{bytes} their
        size on disk.
    @ivar first_at: the C{received_at} of the first of them.
    """

    seq: int
    size: int
    start: int
    salt: Optional[bytes]
    records: int = 0
    bytes: int = 0
    first_at: Optional[float] = None
    last_at: Optional[float] = None
    damage: list[Damage] = attr.field(factory=list)
    problem: Optional[str] = None


@attr.frozen
class Recovered:
    """
    A spool folder as a starting gateway finds it.
    """

    next_seq: int
    segments: list[SegmentScan]


def read_push(payload: bytes) -> tuple[Optional[Push], Optional[str]]:
    try:
        return Push.from_bytes(payload), None
    except PushFormatError as e:
        return None, str(e)


def make_folder(path: str) -> None:
    """
    Create C{path} 0700, as the spool's folders are, and its parent (the
    spool's configured directory) too when it is missing.
    """
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, mode=FOLDER_MODE, exist_ok=True)
    os.makedirs(path, mode=FOLDER_MODE, exist_ok=True)


def fsync_directory(path: str, fsync: Fsync = os.fsync) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


class SpoolDirectory:
    """
    One spool folder.  Methods block; calls that touch the same segment
    are never made at once by the gateway (one write at a time, reads only
    up to what was written), and the open segment's file is guarded here.
    """

    def __init__(self, path: str, fsync: Fsync = os.fsync) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self._fsync = fsync
        self._lock_fd: Optional[int] = None
        self._guard = threading.Lock()
        self._open_seq: Optional[int] = None
        self._open_fd: Optional[int] = None

    def __repr__(self) -> str:
        return f"<SpoolDirectory {self.path!r}>"

    # -- ownership ---------------------------------------------------------

    def lock(self, wait: bool = True) -> bool:
        """
        Take the folder's lock (creating the folder), waiting for it when
        C{wait}; C{False} when another process holds it and not C{wait}.
        """
        make_folder(self.path)
        fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        self._lock_fd = fd
        return True

    def in_use(self) -> bool:
        """
        Whether a process holds the lock now (asked without keeping it).
        """
        try:
            fd = os.open(os.path.join(self.path, LOCK), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def unlock(self) -> None:
        self.close_segment()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the cursor --------------------------------------------------------

    def read_cursor(self) -> Cursor:
        """
        The saved cursor; a missing or unreadable one is the start of every
        segment (records are sent again, never skipped).
        """
        try:
            with open(os.path.join(self.path, CURSOR), "rb") as f:
                saved = json.loads(f.read())
            return Cursor(
                next_seq=int(saved["next_seq"]),
                starts={int(k): int(v) for k, v in dict(saved["starts"]).items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return Cursor()

    def write_cursor(self, cursor: Cursor) -> None:
        """
        Replace the cursor.  Not fsynced: after a crash an older cursor (or
        none) only means some records are delivered again.
        """
        path = os.path.join(self.path, CURSOR)
        temporary = path + ".new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with open(fd, "w", encoding="ascii") as f:
            json.dump(
                {
                    "next_seq": cursor.next_seq,
                    "starts": {str(k): v for k, v in sorted(cursor.starts.items())},
                },
                f,
            )
        os.replace(temporary, path)

    # -- segments ----------------------------------------------------------

    def segment_path(self, seq: int) -> str:
        return os.path.join(self.path, segment_name(seq))

    def damaged_path(self, seq: int) -> str:
        return self.segment_path(seq) + DAMAGED_SUFFIX

    def damaged(self) -> list[str]:
        """
        The names of the segments renamed aside as unreadable.
        """
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.endswith(SEGMENT_SUFFIX + DAMAGED_SUFFIX))

    def set_aside(self, seq: int) -> None:
        """
        Rename an unreadable segment aside (never delete what may be data).
        """
        os.replace(self.segment_path(seq), self.damaged_path(seq))

    def segments(self) -> list[int]:
        """
        The segment numbers in the folder, oldest first.
        """
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(seq for seq in map(_segment_seq, names) if seq is not None)

    def scan(self, seq: int, start: int = SEGMENT_HEADER_SIZE) -> SegmentScan:
        """
        Read a whole segment from C{start}, checking every record.
        """
        path = self.segment_path(seq)
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            try:
                salt = read_segment_header(os.pread(fd, SEGMENT_HEADER_SIZE, 0))
            except SpoolFormatError as e:
                return SegmentScan(seq, size, SEGMENT_HEADER_SIZE, None, problem=str(e))
            start = min(max(start, SEGMENT_HEADER_SIZE), size)
            scan = SegmentScan(seq, size, start, salt)
            for entry in entries(FileSource(fd), seed(salt), start, size):
                if isinstance(entry, Damage):
                    scan.damage.append(entry)
                    continue
                scan.records += 1
                scan.bytes += entry.end - entry.offset
                push, _ = read_push(entry.payload)
                if push is not None:
                    if scan.first_at is None:
                        scan.first_at = push.received_at
                    scan.last_at = push.received_at
            return scan
        finally:
            os.close(fd)

    def recover(self) -> Recovered:
        """
        Scan every segment from the cursor on, for a gateway that has just
        taken the lock.  Segments whose header is unreadable (torn as they
        were created, so most likely holding nothing that was answered)
        are renamed aside (L{DAMAGED_SUFFIX}), for someone to look at.
        """
        cursor = self.read_cursor()
        scans = []
        for seq in self.segments():
            scan = self.scan(seq, cursor.starts.get(seq, SEGMENT_HEADER_SIZE))
            if scan.salt is None:
                self.set_aside(seq)
            scans.append(scan)
        highest = max((s.seq for s in scans), default=0)
        return Recovered(max(cursor.next_seq, highest + 1), scans)

    def append(
        self, seq: int, salt: bytes, pushes: Iterable[Push], create: bool, sync: bool = True
    ) -> tuple[int, list[tuple[int, int]], float]:
        """
        Append one record per push to segment C{seq} (created, header
        first, when C{create}) and fsync it, and the folder for a new
        segment, unless not C{sync}.

        @return: the segment's new size, each record's C{(offset, end)},
            and the seconds the write and fsync took.
        """
        began = time.monotonic()
        crc_seed = seed(salt)
        with self._guard:
            if create or self._open_seq != seq:
                self._close_locked()
                flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
                self._open_fd = os.open(self.segment_path(seq), flags, FILE_MODE)
                self._open_seq = seq
            fd = self._open_fd
            assert fd is not None
            offset = SEGMENT_HEADER_SIZE if create else os.fstat(fd).st_size
            parts = [segment_header(salt)] if create else []
            spans = []
            for push in pushes:
                record = frame(push.to_bytes(), crc_seed)
                parts.append(record)
                spans.append((offset, offset + len(record)))
                offset += len(record)
            data = b"".join(parts)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if sync:
                self._fsync(fd)
        if create and sync:
            fsync_directory(self.path, self._fsync)
        return offset, spans, time.monotonic() - began

    def _close_locked(self) -> None:
        if self._open_fd is not None:
            os.close(self._open_fd)
        self._open_fd = None
        self._open_seq = None

    def close_segment(self) -> None:
        with self._guard:
            self._close_locked()

    def read(
        self,
        seq: int,
        salt: bytes,
        offset: int,
        end: int,
        max_records: int,
        max_bytes: int,
    ) -> tuple[list[ReadRecord], list[Damage], int]:
        """
        Records from C{offset} up to C{end} (what is known written), their
        pushes decoded, and the damage met, and where to read on from.
        """
        records: list[ReadRecord] = []
        damage: list[Damage] = []
        fd = os.open(self.segment_path(seq), os.O_RDONLY)
        try:
            for entry in entries(FileSource(fd), seed(salt), offset, end, max_records, max_bytes):
                offset = entry.end
                if isinstance(entry, Record):
                    push, problem = read_push(entry.payload)
                    records.append(ReadRecord(entry.offset, entry.end, entry.payload, push, problem))
                else:
                    damage.append(entry)
        finally:
            os.close(fd)
        return records, damage, offset

    def delete(self, seq: int) -> None:
        with self._guard:
            if self._open_seq == seq:
                self._close_locked()
        try:
            os.remove(self.segment_path(seq))
        except FileNotFoundError:
            pass

    # -- spools of workers that no longer run -------------------------------

    def siblings(self) -> list[SpoolDirectory]:
        """
        The other spool folders beside this one that hold segments (hidden
        ones are being written by C{sealgw spool replay-dead-letters}).
        """
        parent = os.path.dirname(self.path)
        found = []
        for name in sorted(os.listdir(parent)):
            path = os.path.join(parent, name)
            if name == self.name or name.startswith(".") or not os.path.isdir(path):
                continue
            other = SpoolDirectory(path, self._fsync)
            if other.segments():
                found.append(other)
        return found

    def adopt(self, orphan: SpoolDirectory, first_seq: int) -> list[SegmentScan]:
        """
        Move the segments of C{orphan} (whose lock the caller holds) here,
        numbered from C{first_seq} on and starting where its cursor says,
        and scan them.
        """
        cursor = orphan.read_cursor()
        seqs = orphan.segments()
        scans = []
        for index, seq in enumerate(seqs):
            new = first_seq + index
            os.rename(orphan.segment_path(seq), self.segment_path(new))
            scan = self.scan(new, cursor.starts.get(seq, SEGMENT_HEADER_SIZE))
            if scan.salt is None:
                self.set_aside(new)
            scans.append(scan)
        fsync_directory(self.path, self._fsync)
        fsync_directory(orphan.path, self._fsync)
        if seqs:
            orphan.write_cursor(Cursor(next_seq=max(cursor.next_seq, seqs[-1] + 1)))
        return scans

    def remove_if_spent(self) -> bool:
        """
        Delete a C{replay-*} folder once it holds nothing but its lock and
        cursor.
        """
        if not self.name.startswith("replay-"):
            return False
        left = set(os.listdir(self.path)) - {LOCK, CURSOR, CURSOR + ".new"}
        if left:
            return False
        for name in (LOCK, CURSOR, CURSOR + ".new"):
            try:
                os.remove(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        os.rmdir(self.path)
        return True
