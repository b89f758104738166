"""
The spool's bytes on disk: a segment file is a header and a run of
checksummed, length-prefixed records, each a serialised push
(L{sealgw.signals.push.Push.to_bytes}).

Pure functions over something that reads bytes at an offset, so the same
code reads a file, a test's C{bytes}, and what a crash left behind.

A segment starts with C{SGWSPOOL}, a version byte and a random salt.  A
record is C{SGR1}, the payload's length (4 bytes, big-endian), a CRC-32
(zlib's) of the salt, the length and the payload, then the payload.  The
salt makes a record valid only in its own segment: a body that happens to
hold the bytes of a record (a client can send anything) never checks out
when the reader searches past damage for the next record, so damage can
drop data but never invent a push.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from typing import Optional, Protocol, Union

import attr

SEGMENT_MAGIC = b"SGWSPOOL"
SEGMENT_VERSION = 1
SALT_SIZE = 16
_SEGMENT_HEADER = struct.Struct(f">8sB7x{SALT_SIZE}s")
#: Bytes before a segment's first record.
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER.size

RECORD_MAGIC = b"SGR1"
_RECORD_HEADER = struct.Struct(">4sII")
#: Bytes a record adds to its payload.
RECORD_OVERHEAD = _RECORD_HEADER.size
#: No record is larger; a length past it is damage, not a record.
MAX_RECORD = 1 << 30

#: How far a search for the next record after damage reads at a time.
_SEARCH_CHUNK = 1 << 20


class SpoolFormatError(ValueError):
    """
    Bytes that are not a spool segment of a version this code reads.
    """


def new_salt() -> bytes:
    return os.urandom(SALT_SIZE)


def segment_header(salt: bytes) -> bytes:
    return _SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, salt)


def read_segment_header(data: bytes) -> bytes:
    """
    The salt of a segment whose first bytes are C{data}.

    @raise SpoolFormatError: saying what is wrong.
    """
    if len(data) < SEGMENT_HEADER_SIZE:
        raise SpoolFormatError(
            f"segment header torn ({len(data)} of {SEGMENT_HEADER_SIZE} bytes)"
        )
    magic, version, salt = _SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise SpoolFormatError("not a sealgw spool segment")
    if version != SEGMENT_VERSION:
        raise SpoolFormatError(f"segment version {version} is not readable here")
    return bytes(salt)


def seed(salt: bytes) -> int:
    """
    The running CRC a segment's records start from.
    """
    return zlib.crc32(salt)


def frame(payload: bytes, crc_seed: int) -> bytes:
    """
    One record holding C{payload}, for the segment whose seed is
    C{crc_seed}.
    """
    length = struct.pack(">I", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length, crc_seed))
    return RECORD_MAGIC + length + struct.pack(">I", crc) + payload


class Source(Protocol):
    """
    Bytes that can be read at an offset: a file, or C{bytes} in tests.
    """

    def read_at(self, offset: int, size: int) -> bytes:
        """
        Up to C{size} bytes from C{offset}; fewer only at the end.
        """


@attr.frozen
class BytesSource:
    data: bytes

    def read_at(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


class FileSource:
    """
    A file read through a window of C{window} bytes, so that many small
    records cost few system calls.
    """

    def __init__(self, fd: int, window: int = 1 << 20) -> None:
        self._fd = fd
        self._window = window
        self._at = 0
        self._buffer = b""

    def read_at(self, offset: int, size: int) -> bytes:
        start = offset - self._at
        if 0 <= start and start + size <= len(self._buffer):
            return self._buffer[start : start + size]
        if size >= self._window:
            return os.pread(self._fd, size, offset)
        self._buffer = os.pread(self._fd, self._window, offset)
        self._at = offset
        return self._buffer[:size]


@attr.frozen
class Record:
    """
    A record that checked out: its payload lies in C{[offset, end)}.
    """

    offset: int
    end: int
    payload: bytes


@attr.frozen
class Damage:
    """
    Bytes in C{[offset, end)} that are no record: a record torn by a crash
    (always the last one written), or a corrupted one.  Skipped, never
    forwarded.
    """

    offset: int
    end: int
    why: str


Entry = Union[Record, Damage]


def _check(source: Source, offset: int, end: int, crc_seed: int) -> Union[Record, str]:
    """
    The record at C{offset}, or why there is none.
    """
    header = source.read_at(offset, RECORD_OVERHEAD) if end - offset >= RECORD_OVERHEAD else b""
    if len(header) < RECORD_OVERHEAD:
        return f"torn record: {end - offset} byte(s) at the end, less than a record header"
    magic, length, crc = _RECORD_HEADER.unpack(header)
    if magic != RECORD_MAGIC:
        return "no record starts here"
    if length > MAX_RECORD:
        return f"record length {length} is implausible"
    record_end = offset + RECORD_OVERHEAD + length
    if record_end > end:
        return (
            f"torn record: its header says {length} bytes, "
            f"{end - offset - RECORD_OVERHEAD} were written"
        )
    payload = source.read_at(offset + RECORD_OVERHEAD, length)
    if len(payload) < length:
        return f"torn record: {len(payload)} of {length} bytes could be read"
    if zlib.crc32(payload, zlib.crc32(header[4:8], crc_seed)) != crc:
        return "checksum mismatch"
    return Record(offset, record_end, payload)


def _next_record(source: Source, offset: int, end: int, crc_seed: int) -> int:
    """
    Where the first record that checks out after C{offset} starts, or
    C{end}.
    """
    position = offset + 1
    while position < end:
        chunk = source.read_at(position, min(_SEARCH_CHUNK + len(RECORD_MAGIC) - 1, end - position))
        if not chunk:
            break
        found = chunk.find(RECORD_MAGIC)
        while found != -1:
            candidate = position + found
            if isinstance(_check(source, candidate, end, crc_seed), Record):
                return candidate
            found = chunk.find(RECORD_MAGIC, found + 1)
        position += _SEARCH_CHUNK
    return end


def entries(
    source: Source,
    crc_seed: int,
    offset: int,
    end: int,
    max_records: Optional[int] = None,
    max_bytes: Optional[int] = None,
) -> Iterator[Entry]:
    """
    The records and damage in C{[offset, end)}, in order; each damaged
    stretch is one L{Damage}, and reading resumes at the next record that
    checks out.

    Stops after C{max_records} records, or once their payloads reach
    C{max_bytes} (always after at least one).  The last entry's C{end} is
    where to resume.
    """
    records = 0
    size = 0
    while offset < end:
        found = _check(source, offset, end, crc_seed)
        if isinstance(found, Record):
            yield found
            offset = found.end
            records += 1
            size += len(found.payload)
            if (max_records is not None and records >= max_records) or (
                max_bytes is not None and size >= max_bytes
            ):
                return
        else:
            resume = _next_record(source, offset, end, crc_seed)
            yield Damage(offset, resume, found)
            offset = resume
