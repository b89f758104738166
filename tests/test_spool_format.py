"""
The spool's record format and its recovery, in memory and on disk:
whatever a crash leaves (a cut at any byte, a corrupted byte), the records
read back are exactly records that were written, damage is reported, and
a body holding the bytes of a record never turns into one.
"""

from __future__ import annotations

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals.push import Push
from sealgw.spool._dead import DEAD_LETTERS, OLDER_DEAD_LETTERS, DeadLetters, dead_letter_line
from sealgw.spool._disk import CURSOR, Cursor, SpoolDirectory
from sealgw.spool._format import (
    RECORD_OVERHEAD,
    SEGMENT_HEADER_SIZE,
    BytesSource,
    Damage,
    Record,
    SpoolFormatError,
    entries,
    frame,
    read_segment_header,
    seed,
    segment_header,
)

SALT = bytes(range(16))
SEED = seed(SALT)

payloads = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=12)


def segment(items: list[bytes], salt: bytes = SALT) -> bytes:
    return segment_header(salt) + b"".join(frame(p, seed(salt)) for p in items)


def read_all(data: bytes, crc_seed: int = SEED) -> list[Record | Damage]:
    return list(entries(BytesSource(data), crc_seed, SEGMENT_HEADER_SIZE, len(data)))


def push(n: int) -> Push:
    return Push("loki", "team-a", f"line {n}".encode() * 20, "application/json", None, "/x", {},
                1_700_000_000.0 + n)


class FormatTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        items = [b"", b"a", b"b" * 70_000]
        found = read_all(segment(items))
        self.assertEqual([r.payload for r in found if isinstance(r, Record)], items)
        self.assertEqual(found[-1].end, len(segment(items)))

    def test_segment_header(self) -> None:
        self.assertEqual(read_segment_header(segment_header(SALT)), SALT)
        for bad, why in [
            (b"short", "torn"),
            (b"X" * SEGMENT_HEADER_SIZE, "not a sealgw spool segment"),
            (segment_header(SALT)[:8] + b"\x09" + segment_header(SALT)[9:], "version 9"),
        ]:
            error = self.assertRaises(SpoolFormatError, read_segment_header, bad)
            self.assertIn(why, str(error))

    def test_limits(self) -> None:
        data = segment([b"a" * 10] * 5)
        first = list(entries(BytesSource(data), SEED, SEGMENT_HEADER_SIZE, len(data), 2))
        self.assertEqual(len(first), 2)
        rest = list(entries(BytesSource(data), SEED, first[-1].end, len(data)))
        self.assertEqual(len(rest), 3)
        by_size = list(entries(BytesSource(data), SEED, SEGMENT_HEADER_SIZE, len(data),
                               max_bytes=15))
        self.assertEqual(len(by_size), 2)

    @settings(derandomize=True, deadline=None, max_examples=300)
    @given(payloads, st.data())
    def test_cut_anywhere(self, items: list[bytes], data: st.DataObject) -> None:
        """
        A segment cut at any byte reads back as the records wholly before
        the cut, then (when the cut is inside a record) one damaged
        stretch to the end: never a wrong payload.
        """
        whole = segment(items)
        cut = data.draw(st.integers(SEGMENT_HEADER_SIZE, len(whole)))
        found = read_all(whole[:cut])
        records = [e for e in found if isinstance(e, Record)]
        ends = []
        position = SEGMENT_HEADER_SIZE
        for item in items:
            position += RECORD_OVERHEAD + len(item)
            ends.append(position)
        complete = [item for item, end in zip(items, ends, strict=True) if end <= cut]
        self.assertEqual([r.payload for r in records], complete)
        damage = [e for e in found if isinstance(e, Damage)]
        if cut in ends or cut == SEGMENT_HEADER_SIZE:
            self.assertEqual(damage, [])
        else:
            self.assertEqual(len(damage), 1)
            self.assertEqual(damage[0].end, cut)
            self.assertIn("torn record", damage[0].why)

    @settings(derandomize=True, deadline=None, max_examples=300)
    @given(payloads, st.data())
    def test_corrupt_byte(self, items: list[bytes], data: st.DataObject) -> None:
        """
        One corrupted byte loses at most the record it is in (and reading
        resumes at the next one); nothing is invented.
        """
        whole = bytearray(segment(items))
        at = data.draw(st.integers(SEGMENT_HEADER_SIZE, len(whole) - 1))
        whole[at] ^= data.draw(st.integers(1, 255))
        found = read_all(bytes(whole))
        payloads_found = [e.payload for e in found if isinstance(e, Record)]
        starts = []
        position = SEGMENT_HEADER_SIZE
        for item in items:
            starts.append((position, position + RECORD_OVERHEAD + len(item), item))
            position += RECORD_OVERHEAD + len(item)
        untouched = [item for start, end, item in starts if not start <= at < end]
        self.assertEqual(payloads_found, untouched)
        self.assertEqual(len([e for e in found if isinstance(e, Damage)]), 1)

    def test_a_record_inside_a_body_is_never_read(self) -> None:
        """
        A client can send a body holding the bytes of a record.  When the
        record around it is damaged, the search for the next record does not
        stop there: records are salted per segment.
        """
        forged = frame(push(666).to_bytes(), seed(os.urandom(16)))
        carrier = b"junk" + forged + b"junk"
        whole = bytearray(segment([b"before", carrier, b"after"]))
        # Damage the carrier record's header.
        carrier_at = SEGMENT_HEADER_SIZE + RECORD_OVERHEAD + len(b"before")
        whole[carrier_at + 5] ^= 0xFF
        payloads_found = [e.payload for e in read_all(bytes(whole)) if isinstance(e, Record)]
        self.assertEqual(payloads_found, [b"before", b"after"])

    def test_other_segments_records_do_not_check_out(self) -> None:
        data = segment([b"a"], salt=b"x" * 16)
        found = read_all(data)
        self.assertEqual(len(found), 1)
        self.assertIsInstance(found[0], Damage)


class DiskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fsyncs: list[int] = []
        self.spool = SpoolDirectory(os.path.abspath(self.mktemp()), self.fsyncs.append)
        self.spool.lock()
        self.addCleanup(self.spool.unlock)

    def test_append_scan_read(self) -> None:
        size, spans, _ = self.spool.append(1, SALT, [push(0), push(1)], create=True)
        self.assertEqual(len(self.fsyncs), 2)  # the file, and its folder
        size, more, _ = self.spool.append(1, SALT, [push(2)], create=False)
        self.assertEqual(len(self.fsyncs), 3)
        self.assertEqual(spans[0][0], SEGMENT_HEADER_SIZE)
        self.assertEqual(more[0][0], spans[-1][1])
        self.assertEqual(size, os.path.getsize(self.spool.segment_path(1)))
        scan = self.spool.scan(1)
        self.assertEqual((scan.records, scan.damage, scan.size), (3, [], size))
        self.assertEqual(scan.first_at, push(0).received_at)
        self.assertEqual(scan.last_at, push(2).received_at)
        records, damage, offset = self.spool.read(1, SALT, SEGMENT_HEADER_SIZE, size, 2, 1 << 20)
        self.assertEqual([r.push for r in records], [push(0), push(1)])
        self.assertEqual(offset, spans[1][1])
        self.assertEqual(damage, [])
        # From a cursor.
        self.assertEqual(self.spool.scan(1, spans[1][0]).records, 2)

    def test_unsynced(self) -> None:
        self.spool.append(1, SALT, [push(0)], create=True, sync=False)
        self.assertEqual(self.fsyncs, [])

    @settings(derandomize=True, deadline=None, max_examples=60)
    @given(st.integers(1, 8), st.data())
    def test_cut_on_disk(self, count: int, data: st.DataObject) -> None:
        """
        A segment file cut anywhere after its header (what a crash during
        a write leaves) recovers exactly the records before the cut.
        """
        for seq in self.spool.segments():
            self.spool.delete(seq)
        pushes = [push(n) for n in range(count)]
        size, spans, _ = self.spool.append(1, SALT, pushes, create=True)
        cut = data.draw(st.integers(SEGMENT_HEADER_SIZE, size))
        os.truncate(self.spool.segment_path(1), cut)
        recovered = self.spool.recover()
        (scan,) = recovered.segments
        whole = [end for _, end in spans if end <= cut]
        self.assertEqual(scan.records, len(whole))
        self.assertEqual(len(scan.damage), 0 if cut in [SEGMENT_HEADER_SIZE, *whole] else 1)
        records, damage, _ = self.spool.read(1, SALT, SEGMENT_HEADER_SIZE, cut, 100, 1 << 30)
        self.assertEqual([r.push for r in records], pushes[: len(whole)])

    def test_torn_header_segment_is_removed(self) -> None:
        self.spool.append(1, SALT, [push(0)], create=True)
        self.spool.close_segment()
        os.truncate(self.spool.segment_path(1), 10)
        recovered = self.spool.recover()
        self.assertIsNone(recovered.segments[0].salt)
        self.assertIn("torn", recovered.segments[0].problem or "")
        self.assertEqual(self.spool.segments(), [])
        self.assertEqual(recovered.next_seq, 2)

    def test_cursor(self) -> None:
        self.assertEqual(self.spool.read_cursor(), Cursor())
        self.spool.write_cursor(Cursor(7, {5: 100, 6: 40}))
        self.assertEqual(self.spool.read_cursor(), Cursor(7, {5: 100, 6: 40}))
        with open(os.path.join(self.spool.path, CURSOR), "w") as f:
            f.write('{"next_seq": ')
        self.assertEqual(self.spool.read_cursor(), Cursor())

    def test_next_seq_comes_from_the_cursor_too(self) -> None:
        self.spool.write_cursor(Cursor(12, {}))
        self.assertEqual(self.spool.recover().next_seq, 12)
        self.spool.append(15, SALT, [push(0)], create=True)
        self.assertEqual(self.spool.recover().next_seq, 16)

    def test_lock(self) -> None:
        other = SpoolDirectory(self.spool.path)
        self.assertTrue(other.in_use())
        self.assertFalse(other.lock(wait=False))
        self.spool.unlock()
        self.assertFalse(other.in_use())
        self.assertTrue(other.lock(wait=False))
        self.assertTrue(SpoolDirectory(self.spool.path).in_use())
        other.unlock()

    def test_adopt(self) -> None:
        orphan = SpoolDirectory(os.path.join(os.path.dirname(self.spool.path), "worker-9"))
        orphan.lock()
        _, spans, _ = orphan.append(3, SALT, [push(0), push(1)], create=True)
        orphan.append(4, SALT, [push(2)], create=True)
        orphan.write_cursor(Cursor(5, {3: spans[0][1]}))
        orphan.unlock()
        self.assertEqual([s.path for s in self.spool.siblings()], [orphan.path])
        self.assertTrue(orphan.lock(wait=False))
        scans = self.spool.adopt(orphan, 20)
        orphan.unlock()
        self.assertEqual([s.seq for s in scans], [20, 21])
        self.assertEqual([s.records for s in scans], [1, 1])
        self.assertEqual(self.spool.segments(), [20, 21])
        self.assertEqual(orphan.segments(), [])
        self.assertEqual(orphan.read_cursor().next_seq, 5)
        self.assertEqual(self.spool.siblings(), [])

    def test_dead_letter(self) -> None:
        line = dead_letter_line("mimir", push(1).to_bytes(), push(1), 400, "bad", "now")
        letters = DeadLetters(self.spool.path, 1 << 20, self.fsyncs.append)
        self.assertEqual(letters.append(line), 0)
        self.assertEqual(letters.append(line), 0)
        with open(os.path.join(self.spool.path, DEAD_LETTERS)) as f:
            self.assertEqual(len(f.readlines()), 2)
        self.assertEqual(len(self.fsyncs), 2)

    def test_dead_letters_are_bounded(self) -> None:
        """
        The dead-letter files never take more than their bound: the older
        file's letters are dropped, counted, when the current one is
        rotated; the newest letters are always kept.
        """
        line = dead_letter_line("mimir", push(1).to_bytes(), push(1), 400, "bad", "now")
        size = len(json.dumps(line, separators=(",", ":"), sort_keys=True)) + 1
        letters = DeadLetters(self.spool.path, 10 * size, self.fsyncs.append)
        dropped = [letters.append(dict(line, reason=str(n))) for n in range(23)]
        # Five a file; the first rotation drops nothing, each next one five.
        self.assertEqual(sum(dropped), 15)
        self.assertEqual([n for n, d in enumerate(dropped) if d], [10, 15, 20])
        self.assertLessEqual(letters.size(), 10 * size)
        with open(os.path.join(self.spool.path, OLDER_DEAD_LETTERS)) as f:
            older = [json.loads(x)["reason"] for x in f]
        with open(os.path.join(self.spool.path, DEAD_LETTERS)) as f:
            current = [json.loads(x)["reason"] for x in f]
        self.assertEqual(older + current, [str(n) for n in range(15, 23)])
        for name in (DEAD_LETTERS, OLDER_DEAD_LETTERS):
            mode = os.stat(os.path.join(self.spool.path, name)).st_mode & 0o777
            self.assertEqual(mode, 0o600)
