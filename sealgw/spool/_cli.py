"""
C{sealgw spool stats DIR} and C{sealgw spool replay-dead-letters DIR}:
an upstream's spool looked at, and its dead letters re-queued, from the
files alone (with the gateway running or not).

C{DIR} is a spool's configured C{directory} (its workers' folders are
under it) or one worker's folder.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Iterator
from typing import IO, Any, Optional

import attr

from sealgw.relay._health import rfc3339
from sealgw.signals.push import Push, PushFormatError
from sealgw.spool._dead import (
    DEAD_LETTERS,
    FILE_MODE,
    OLDER_DEAD_LETTERS,
    count_lines,
    lines,
    open_locked,
)
from sealgw.spool._disk import (
    CURSOR,
    DAMAGED_SUFFIX,
    FOLDER_MODE,
    LOCK,
    SEGMENT_SUFFIX,
    SpoolDirectory,
    fsync_directory,
    human_size,
)
from sealgw.spool._format import SEGMENT_HEADER_SIZE, new_salt

#: A replay writes its re-queued pushes this many at a time.
REPLAY_BATCH = 256


def _is_spool_folder(path: str) -> bool:
    names = set(os.listdir(path))
    return bool(
        names & {LOCK, CURSOR, DEAD_LETTERS, OLDER_DEAD_LETTERS}
        or SpoolDirectory(path).segments()
    )


def spool_folders(directory: str) -> tuple[str, list[SpoolDirectory]]:
    """
    The spool's configured directory, and the worker folders in it.

    @raise OSError: for a C{directory} that cannot be listed.
    """
    directory = os.path.abspath(directory)
    if _is_spool_folder(directory):
        return os.path.dirname(directory), [SpoolDirectory(directory)]
    folders = [
        SpoolDirectory(os.path.join(directory, name))
        for name in sorted(os.listdir(directory))
        if not name.startswith(".") and os.path.isdir(os.path.join(directory, name))
    ]
    return directory, folders


def _last_letter(path: str) -> Optional[dict[str, Any]]:
    """
    The last dead letter of the file C{path} that reads as one, read a
    line at a time.
    """
    last: list[bytes] = []
    for line in lines(path):
        if line.strip():
            last = [*last[-1:], line]
    for line in reversed(last):
        try:
            letter = json.loads(line)
        except ValueError:
            continue
        if isinstance(letter, dict):
            return letter
    return None


def _dead_letters(path: str) -> tuple[int, Optional[dict[str, Any]]]:
    """
    How many dead letters a folder holds, and the last one.
    """
    current = os.path.join(path, DEAD_LETTERS)
    older = os.path.join(path, OLDER_DEAD_LETTERS)
    count = count_lines(older) + count_lines(current)
    return count, _last_letter(current) or _last_letter(older)


def folder_stats(folder: SpoolDirectory, now: float) -> dict[str, Any]:
    """
    What a spool folder holds, read from its files.
    """
    cursor = folder.read_cursor()
    records = size = disk = 0
    oldest: Optional[float] = None
    problems = []
    segments = folder.segments()
    for seq in segments:
        try:
            scan = folder.scan(seq, cursor.starts.get(seq, SEGMENT_HEADER_SIZE))
        except FileNotFoundError:
            continue  # delivered and deleted while we looked
        disk += scan.size
        if scan.salt is None:
            problems.append(f"segment {seq}: {scan.problem}")
            continue
        records += scan.records
        size += scan.bytes
        problems.extend(f"segment {seq}: {d.why} at offset {d.offset}" for d in scan.damage)
        if scan.first_at is not None and (oldest is None or scan.first_at < oldest):
            oldest = scan.first_at
    for name in folder.damaged():
        problems.append(f"{name}: set aside as unreadable, never read")
    letters, last = _dead_letters(folder.path)
    return {
        "folder": folder.path,
        "in_use": folder.in_use(),
        "segments": len(segments),
        "records": records,
        "bytes": size,
        "disk_bytes": disk,
        "oldest_record": None if oldest is None else rfc3339(oldest),
        "oldest_age_seconds": None if oldest is None else round(max(0.0, now - oldest), 3),
        "damaged": len(problems),
        "problems": problems,
        "dead_letters": letters,
        "last_dead_letter": None
        if last is None
        else {k: last.get(k) for k in ("at", "status", "reason", "tenant", "signal")},
    }


def _age(seconds: float) -> str:
    """
    C{3m12s}, C{2h5m}, C{1d3h}: the two largest units.
    """
    left = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2]) or "0s"


def stats(directory: str, out: IO[str], as_json: bool = False, now: Optional[float] = None) -> int:
    """
    Print what each worker folder of a spool holds.
    """
    now = time.time() if now is None else now
    _, folders = spool_folders(directory)
    report = [folder_stats(folder, now) for folder in folders]
    if as_json:
        json.dump(report, out, indent=2)
        out.write("\n")
        return 0
    for entry in report:
        state = "in use by a running gateway" if entry["in_use"] else "not in use"
        out.write(f"{entry['folder']} ({state})\n")
        out.write(
            f"  queued: {entry['records']} record(s), {human_size(entry['bytes'])} "
            f"in {entry['segments']} segment(s), {human_size(entry['disk_bytes'])} on disk\n"
        )
        if entry["oldest_record"] is not None:
            out.write(
                f"  oldest: {entry['oldest_record']} ({_age(entry['oldest_age_seconds'])} ago)\n"
            )
        if entry["problems"]:
            out.write(f"  damaged: {len(entry['problems'])} stretch(es), skipped when read\n")
            for problem in entry["problems"]:
                out.write(f"    {problem}\n")
        letters = entry["dead_letters"]
        if letters:
            last = entry["last_dead_letter"] or {}
            out.write(
                f"  dead letters: {letters} (last: {last.get('at')} {last.get('status')} "
                f"{last.get('reason')})\n"
            )
    records = sum(e["records"] for e in report)
    size = sum(e["bytes"] for e in report)
    letters = sum(e["dead_letters"] for e in report)
    out.write(
        f"total: {records} record(s), {human_size(size)} queued in {len(report)} folder(s); "
        f"{letters} dead letter(s)\n"
    )
    return 0


class _Requeue:
    """
    Pushes written, a batch at a time, as one segment of a new C{replay-*}
    folder beside the workers' ones; a running gateway takes it over like
    the folder of a worker that stopped.  Written under a hidden name and
    renamed when whole, so that it is never taken over half-written.
    """

    def __init__(self, parent: str, origin: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.parent = parent
        self.name = f"replay-{stamp}-{origin}-{os.getpid()}"
        self.hidden = os.path.join(parent, "." + self.name)
        self.folder = SpoolDirectory(self.hidden)
        self.salt = new_salt()
        self.count = 0
        self._batch: list[Push] = []

    def add(self, push: Push) -> None:
        self._batch.append(push)
        if len(self._batch) >= REPLAY_BATCH:
            self._flush(sync=False)

    def _flush(self, sync: bool) -> None:
        if not self._batch and not (sync and self.count):
            return
        if not self.count:
            os.mkdir(self.hidden, FOLDER_MODE)
        self.folder.append(1, self.salt, self._batch, create=not self.count, sync=sync)
        self.count += len(self._batch)
        self._batch = []

    def finish(self) -> Optional[str]:
        """
        Make the folder whole (fsynced, renamed to its final name); its
        path, or L{None} when nothing was re-queued.
        """
        self._flush(sync=True)
        if not self.count:
            return None
        self.folder.close_segment()
        fsync_directory(self.hidden)
        final = os.path.join(self.parent, self.name)
        os.rename(self.hidden, final)
        fsync_directory(self.parent)
        return final


def _letters(fd: int, older: str) -> Iterator[bytes]:
    """
    A folder's dead letters, the older file's first, a line at a time.
    """
    yield from lines(older)
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        yield from lines(f)


def replay_dead_letters(directory: str, out: IO[str], err: IO[str]) -> int:
    """
    Move every dead letter of a spool back into it, to be delivered again
    (after the data or the upstream was fixed).  Re-queued records count
    their age from now.  Each worker's dead letters are kept in
    C{dead-letters.replayed-TIME.jsonl} (0600) beside the emptied files.
    Read and written a line at a time: the dead letters are never all in
    memory.
    """
    parent, folders = spool_folders(directory)
    total = 0
    for folder in folders:
        current = os.path.join(folder.path, DEAD_LETTERS)
        older = os.path.join(folder.path, OLDER_DEAD_LETTERS)
        if not os.path.exists(current) and not os.path.exists(older):
            continue
        # The gateway appends (and rotates) under the same lock.
        fd = open_locked(current, os.O_RDWR | os.O_CREAT)
        assert fd is not None
        try:
            now = time.time()
            requeue = _Requeue(parent, folder.name)
            kept = os.path.join(
                folder.path,
                f"dead-letters.replayed-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.jsonl",
            )
            skipped = copied = 0
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            with open(os.open(kept, flags, FILE_MODE), "wb") as f:
                for line in _letters(fd, older):
                    if not line.strip():
                        continue
                    f.write(line if line.endswith(b"\n") else line + b"\n")
                    copied += 1
                    try:
                        letter = json.loads(line)
                        push = Push.from_bytes(base64.b64decode(letter["push"], validate=True))
                    except (ValueError, KeyError, TypeError, binascii.Error, PushFormatError):
                        skipped += 1
                        continue
                    requeue.add(attr.evolve(push, received_at=now))
                f.flush()
                os.fsync(f.fileno())
            if not copied:
                os.remove(kept)
                continue
            where = requeue.finish()
            if where is not None:
                out.write(f"{folder.path}: {requeue.count} dead letter(s) re-queued in {where}\n")
            if skipped:
                err.write(
                    f"{folder.path}: {skipped} dead letter(s) hold no readable push; "
                    f"left in {kept}\n"
                )
            os.ftruncate(fd, 0)
            os.fsync(fd)
            try:
                os.remove(older)
            except FileNotFoundError:
                pass
            total += requeue.count
        finally:
            os.close(fd)
    out.write(
        f"{total} dead letter(s) re-queued; a running gateway delivers them within "
        "30 seconds, a stopped one when it starts\n"
    )
    return 0


#: The files only a spool's folder holds (besides its segments).
_SPOOL_FILES = frozenset({LOCK, CURSOR, DEAD_LETTERS, OLDER_DEAD_LETTERS})


def holds_a_spool(directory: str) -> bool:
    """
    Whether C{directory} is a spool's folder or one of its workers': it,
    or a folder in it, holds a spool's files.  A folder that cannot be
    read is left to the command, which says why.
    """

    def spool_files(path: str) -> bool:
        return any(
            name in _SPOOL_FILES
            or name.endswith(SEGMENT_SUFFIX)
            or name.endswith(SEGMENT_SUFFIX + DAMAGED_SUFFIX)
            for name in os.listdir(path)
        )

    try:
        if spool_files(directory):
            return True
        folders = [os.path.join(directory, name) for name in os.listdir(directory)]
        return any(os.path.isdir(f) and spool_files(f) for f in folders)
    except OSError:
        return True


def spool_command(action: str, directory: str, as_json: bool, out: IO[str], err: IO[str]) -> int:
    """
    C{sealgw spool ACTION DIR}: refused, naming why, for a folder that
    holds no spool (a typo would otherwise read as an empty spool).
    """
    if not holds_a_spool(directory):
        err.write(
            f"sealgw spool {action}: {directory}: not a spool folder: neither it "
            "nor a folder in it holds a spool's files; give an upstream's "
            "spool.directory, or one worker's folder in it\n"
        )
        return 1
    try:
        if action == "stats":
            return stats(directory, out, as_json)
        return replay_dead_letters(directory, out, err)
    except OSError as e:
        err.write(f"sealgw spool {action}: {e.filename or directory}: {e.strerror or e}\n")
        return 1
