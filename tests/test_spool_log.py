"""
The spool's log on its own (no files): segments kept in sequence order,
the reader never passing a takeover's reservation, the watermark, drops,
and a change always ending in the listener's call.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals.push import Push
from sealgw.spool._disk import ReadRecord, SegmentScan
from sealgw.spool._format import SEGMENT_HEADER_SIZE, Damage
from sealgw.spool._log import Segment, Spooled, SpoolLog

H = SEGMENT_HEADER_SIZE


def push(n: int) -> Push:
    return Push(
        signal="remote_write", tenant="t", body=f"{n}:".encode(), content_type="x",
        content_encoding="", path="/p", received_at=float(n),
    )


def scan(seq: int, *ns: int) -> SegmentScan:
    """
    A segment as found on disk, holding records C{ns} of 10 bytes each.
    """
    return SegmentScan(
        seq, H + 10 * len(ns), H, b"s" * 16, records=len(ns), bytes=10 * len(ns),
        first_at=float(ns[0]) if ns else None, last_at=float(ns[-1]) if ns else None,
    )


class Disk:
    """
    What the log reads: records C{ns} of each segment, 10 bytes apiece.
    """

    def __init__(self) -> None:
        self.records: dict[int, list[int]] = {}
        self.deleted: list[int] = []

    def read(self, seq: int, salt: bytes, offset: int, end: int, *_: Any) -> Deferred[Any]:
        ns = self.records.get(seq, [])
        found = []
        for index, n in enumerate(ns):
            at = H + 10 * index
            if offset <= at < end:
                payload = push(n).to_bytes()
                found.append(ReadRecord(at, at + 10, payload, push(n)))
        return succeed((found, [], end))


class LogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.disk = Disk()
        self.changes = 0
        self.log = SpoolLog(
            read=self.disk.read,
            delete=lambda segment: self.disk.deleted.append(segment.seq),
            moved=lambda: None,
            damaged=lambda seq, damage: None,
            unreadable=lambda seq, error: None,
            clock=Clock(),
        )
        self.log.listen(self.changed)
        self.log.start()

    def changed(self) -> None:
        self.changes += 1

    def numbers(self, batch: list[Spooled]) -> list[int]:
        return [int(r.push.body.split(b":")[0]) for r in batch if r.push is not None]

    def deliver_all(self) -> list[int]:
        """
        Take and acknowledge records until none comes (an empty batch may
        only have started a read: ask once more).
        """
        got: list[int] = []
        empty = 0
        while empty < 2:
            batch = self.log.next_batch(10)
            empty = 0 if batch else empty + 1
            got += self.numbers(batch)
            for record in batch:
                self.log.acknowledged(record)
        return got

    def test_recovered_in_sequence_order(self) -> None:
        self.disk.records = {3: [30], 1: [10, 11]}
        self.log.recovered([scan(3, 30), scan(1, 10, 11)], next_seq=4)
        self.assertEqual([s.seq for s in self.log], [1, 3])
        self.assertEqual(self.deliver_all(), [10, 11, 30])
        self.assertEqual(self.disk.deleted, [1, 3])
        self.assertEqual(self.log.totals(), (0, 0))

    def test_reader_waits_for_a_reservation(self) -> None:
        """
        A segment written after a reservation is not read before the
        reserved segments are in; then they come first.
        """
        self.disk.records = {1: [1]}
        self.log.recovered([scan(1, 1)], next_seq=2)
        reservation = self.log.reserve(2)
        self.assertEqual((reservation.first, reservation.count), (2, 2))
        segment, created = self.log.segment_for_write(b"n" * 16, 1 << 20)
        self.assertTrue(created)
        self.assertEqual(segment.seq, 4)
        self.log.appended(segment, [push(40)], [(H, H + 10)], H + 10)
        self.disk.records[4] = [40]
        self.assertEqual(self.deliver_all(), [1])
        self.disk.records.update({2: [20], 3: [30]})
        before = self.changes
        self.log.take_over(reservation, [scan(2, 20), scan(3, 30)])
        self.assertGreater(self.changes, before)
        self.assertEqual([s.seq for s in self.log], [2, 3, 4])
        self.assertEqual(self.deliver_all(), [20, 30, 40])

    def test_released_reservation_lets_the_reader_on(self) -> None:
        reservation = self.log.reserve(1)
        segment, _ = self.log.segment_for_write(b"n" * 16, 1 << 20)
        self.log.appended(segment, [push(5)], [(H, H + 10)], H + 10)
        self.disk.records[segment.seq] = [5]
        self.assertEqual(self.deliver_all(), [])
        self.log.release(reservation)
        self.assertEqual(self.deliver_all(), [5])

    def test_take_over_outside_the_reservation_is_refused(self) -> None:
        reservation = self.log.reserve(1)
        self.assertRaises(ValueError, self.log.take_over, reservation, [scan(9, 1)])

    def test_a_write_is_handed_over(self) -> None:
        """
        Records written where the reader waits are taken as they are, not
        read back.
        """
        segment, _ = self.log.segment_for_write(b"n" * 16, 1 << 20)
        self.log.appended(segment, [push(1), push(2)], [(H, H + 10), (H + 10, H + 20)], H + 20)
        batch = self.log.next_batch(10)
        self.assertEqual(self.numbers(batch), [1, 2])
        self.assertIsNone(batch[0].payload)

    def test_watermark_moves_over_what_is_done_in_order(self) -> None:
        self.disk.records = {1: [1, 2, 3]}
        self.log.recovered([scan(1, 1, 2, 3)], next_seq=2)
        self.log.next_batch(3)
        first, second, third = self.log.next_batch(3)
        self.log.acknowledged(second)
        self.assertEqual(self.log.cursor().starts, {})
        self.log.acknowledged(first)
        self.assertEqual(self.log.cursor().starts, {1: H + 20})
        self.assertEqual(self.log.oldest_at(), 3.0)
        self.log.acknowledged(third)
        self.assertEqual(self.disk.deleted, [1])

    def test_drop_oldest_gives_back_what_is_out(self) -> None:
        self.disk.records = {1: [1, 2], 2: [3]}
        self.log.recovered([scan(1, 1, 2), scan(2, 3)], next_seq=3)
        self.log.next_batch(0)
        out = self.log.next_batch(1)
        dropped = self.log.drop_oldest()
        assert dropped is not None
        segment, records, size, in_flight = dropped
        self.assertEqual((segment.seq, records, size), (1, 2, 20))
        self.assertEqual(in_flight, out)
        self.assertTrue(out[0].done)
        self.assertEqual(self.deliver_all(), [3])

    def test_a_write_under_way_is_not_dropped(self) -> None:
        segment, _ = self.log.segment_for_write(b"n" * 16, 1 << 20)
        self.assertIsNone(self.log.drop_oldest())
        self.log.appended(segment, [push(1)], [(H, H + 10)], H + 10)
        self.assertIsNotNone(self.log.drop_oldest())
        # The next write begins a new segment.
        following, created = self.log.segment_for_write(b"n" * 16, 1 << 20)
        self.assertTrue(created)
        self.assertGreater(following.seq, segment.seq)

    def test_held_age_counts_from_the_takeover(self) -> None:
        clock = Clock()
        clock.advance(1000)
        log = SpoolLog(
            read=self.disk.read, delete=lambda s: None, moved=lambda: None,
            damaged=lambda s, d: None, unreadable=lambda s, e: None, clock=clock,
        )
        log.recovered([scan(1, 5)], next_seq=2)
        self.assertEqual(log.oldest_at(), 5.0)
        self.assertEqual(log.oldest_at(held=True), 1000.0)

    def test_damage_reported_once(self) -> None:
        found: list[tuple[int, Damage]] = []
        damage = Damage(H, H + 10, "checksum mismatch")

        def read(seq: int, salt: bytes, offset: int, end: int, *_: Any) -> Deferred[Any]:
            return succeed(([], [damage], end))

        log = SpoolLog(
            read=read, delete=lambda s: None, moved=lambda: None,
            damaged=lambda seq, d: found.append((seq, d)), unreadable=lambda s, e: None,
            clock=Clock(),
        )
        log.start()
        log.recovered([SegmentScan(1, H + 10, H, b"s" * 16)], next_seq=2)
        log.next_batch(1)
        log.next_batch(1)
        self.assertEqual(found, [(1, damage)])
        self.assertIsInstance(list(log), list)
        self.assertTrue(all(isinstance(s, Segment) for s in log))
