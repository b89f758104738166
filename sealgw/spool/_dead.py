"""
A spool folder's dead letters: the records the upstream refused, one JSON
object a line, bounded.

They are kept in two files, C{dead-letters.jsonl} (appended to) and
C{dead-letters.1.jsonl} (the older ones).  When the first would pass half
of the bound, it replaces the second, whose letters are dropped and
counted: the files never take more than the bound, and what is dropped is
always the oldest.  Everything here blocks (worker threads, or the
C{sealgw spool} command).

Writers and C{sealgw spool replay-dead-letters} take an flock of
C{dead-letters.jsonl} first, and check that the file they locked is still
the one of that name (it may have been rotated meanwhile).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from typing import Any, Optional

from sealgw.signals.push import Push

DEAD_LETTERS = "dead-letters.jsonl"
OLDER_DEAD_LETTERS = "dead-letters.1.jsonl"
FILE_MODE = 0o600

#: What a stream of dead letters is read in.
CHUNK = 1 << 20


def dead_letter_line(
    upstream: str,
    payload: bytes,
    push: Optional[Push],
    status: Optional[int],
    reason: str,
    at: str,
) -> dict[str, Any]:
    """
    What a dead letter records: when, which upstream, the status and
    reason it was refused with, whose data it was, and the record itself
    (base64 of the serialised push) for C{replay-dead-letters}.
    """
    return {
        "at": at,
        "upstream": upstream,
        "status": status,
        "reason": reason,
        "tenant": None if push is None else push.tenant,
        "signal": None if push is None else push.signal,
        "path": None if push is None else push.path,
        "push": base64.b64encode(payload).decode("ascii"),
    }


def open_locked(path: str, flags: int = os.O_RDWR) -> Optional[int]:
    """
    C{path} opened and flock()ed, the file that has that name once the
    lock is held; L{None} when there is no such file (and C{flags} does
    not create it).
    """
    while True:
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


def count_lines(path: str) -> int:
    """
    The lines of C{path}, read a chunk at a time; 0 when it is missing.
    """
    count = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                count += chunk.count(b"\n")
    except FileNotFoundError:
        return 0
    return count


def lines(fd_or_path: Any) -> Iterator[bytes]:
    """
    The lines of a file (a path, or a file object), one at a time.
    """
    if isinstance(fd_or_path, str):
        try:
            f = open(fd_or_path, "rb")
        except FileNotFoundError:
            return
        with f:
            yield from f
    else:
        yield from fd_or_path


class DeadLetters:
    """
    The dead letters of the folder C{path}, at most C{max_size} bytes.

    @param fsync: the blocking fsync (tests count them).
    """

    def __init__(self, path: str, max_size: int, fsync: Callable[[int], None] = os.fsync) -> None:
        self.path = path
        self.max_size = max_size
        self._fsync = fsync

    @property
    def current(self) -> str:
        return os.path.join(self.path, DEAD_LETTERS)

    @property
    def older(self) -> str:
        return os.path.join(self.path, OLDER_DEAD_LETTERS)

    def append(self, letter: dict[str, Any]) -> int:
        """
        Append one dead letter and fsync it.

        @return: how many older letters were dropped to make room.
        """
        line = (json.dumps(letter, separators=(",", ":"), sort_keys=True) + "\n").encode()
        fd = open_locked(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        assert fd is not None
        dropped = 0
        try:
            size = os.fstat(fd).st_size
            if size and size + len(line) > self.max_size // 2:
                dropped = count_lines(self.older)
                # The current file becomes the older one (its lock goes
                # with it: writers waiting for it look again), and this
                # letter starts a new one.
                os.replace(self.current, self.older)
                created = open_locked(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                assert created is not None
                os.close(fd)
                fd = created
            os.write(fd, line)
            self._fsync(fd)
        finally:
            os.close(fd)
        return dropped

    def size(self) -> int:
        total = 0
        for path in (self.older, self.current):
            try:
                total += os.path.getsize(path)
            except FileNotFoundError:
                pass
        return total
