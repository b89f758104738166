"""
C{sealgw spool stats} and C{sealgw spool replay-dead-letters}, on spools
a (Clock-driven) gateway wrote.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys

from twisted.internet.defer import Deferred

from sealgw.cli import main
from sealgw.relay import Delivery, UpstreamRejected
from sealgw.spool import _cli
from sealgw.spool._cli import replay_dead_letters, spool_command, stats
from sealgw.spool._dead import DEAD_LETTERS, OLDER_DEAD_LETTERS
from sealgw.testing import MemoryUpstream
from tests.test_spool import DOWN, SpoolTestCase, numbers, push


class StatsTests(SpoolTestCase):
    def test_stats(self) -> None:
        spool = self.spool(MemoryUpstream("mimir", [DOWN] * 1000))
        at = self.clock.seconds() - 192
        self.accepted(spool, push(1, at=at), push(2, at=at + 1))
        out = io.StringIO()
        self.assertEqual(stats(self.directory, out, now=self.clock.seconds()), 0)
        text = out.getvalue()
        self.assertIn(os.path.join(self.directory, "worker-0") + " (in use by a running gateway)",
                      text)
        self.assertIn("queued: 2 record(s)", text)
        self.assertIn("(3m12s ago)", text)
        self.assertIn("total: 2 record(s)", text)
        self.successResultOf(spool.close())
        out = io.StringIO()
        stats(os.path.join(self.directory, "worker-0"), out, as_json=True,
              now=self.clock.seconds())
        (entry,) = json.loads(out.getvalue())
        self.assertFalse(entry["in_use"])
        self.assertEqual(entry["records"], 2)
        self.assertEqual(entry["oldest_age_seconds"], 192)
        self.assertEqual(entry["dead_letters"], 0)

    def test_stats_counts_from_the_cursor_and_reports_damage(self) -> None:
        hang: Deferred[Delivery] = Deferred()
        inner = MemoryUpstream("mimir", [UpstreamRejected(400, "bad label"), hang])
        spool = self.spool(inner, concurrency=1)
        self.accepted(spool, push(1), push(2), push(3))
        self.successResultOf(spool.close())
        (seq,) = self.segments()
        with open(os.path.join(self.directory, "worker-0", f"{seq:020d}.seg"), "ab") as f:
            f.write(b"SGR1\x00\x00")
        out = io.StringIO()
        stats(self.directory, out)
        text = out.getvalue()
        self.assertIn("queued: 2 record(s)", text)
        self.assertIn("damaged: 1 stretch(es)", text)
        self.assertIn("torn record", text)
        self.assertIn("dead letters: 1 (last: ", text)
        self.assertIn("400 bad label", text)
        # The JSON says what the text says.
        out = io.StringIO()
        stats(self.directory, out, as_json=True)
        (entry,) = json.loads(out.getvalue())
        self.assertEqual(entry["damaged"], 1)
        self.assertEqual(len(entry["problems"]), 1)

    def test_stats_counts_every_kind_of_damage_alike(self) -> None:
        """
        A segment whose header is unreadable and one set aside earlier
        count as damage in the text and the JSON alike.
        """
        spool = self.spool(MemoryUpstream("mimir", [DOWN] * 1000))
        self.accepted(spool, push(1))
        self.successResultOf(spool.close())
        folder = os.path.join(self.directory, "worker-0")
        with open(os.path.join(folder, f"{99:020d}.seg"), "wb") as f:
            f.write(b"garbage")
        with open(os.path.join(folder, f"{98:020d}.seg.damaged"), "wb") as f:
            f.write(b"garbage")
        out = io.StringIO()
        stats(self.directory, out)
        self.assertIn("damaged: 2 stretch(es)", out.getvalue())
        self.assertIn("set aside as unreadable", out.getvalue())
        out = io.StringIO()
        stats(self.directory, out, as_json=True)
        (entry,) = json.loads(out.getvalue())
        self.assertEqual(entry["damaged"], 2)
        self.assertEqual(entry["records"], 1)

    def test_stats_counts_both_dead_letter_files(self) -> None:
        inner = MemoryUpstream("mimir", [UpstreamRejected(400, f"bad {n}") for n in range(6)])
        # Small enough that the letters are rotated into the older file.
        spool = self.spool(inner, dead_letters_max_size=1500)
        self.accepted(spool, *[push(n) for n in range(6)])
        folder = os.path.join(self.directory, "worker-0")
        self.assertTrue(os.path.exists(os.path.join(folder, OLDER_DEAD_LETTERS)))
        out = io.StringIO()
        stats(self.directory, out, as_json=True)
        (entry,) = json.loads(out.getvalue())
        self.assertEqual(entry["dead_letters"] + spool.counts.dead_letters_dropped, 6)
        self.assertEqual(entry["last_dead_letter"]["reason"], "bad 5")

    def test_missing_directory(self) -> None:
        err = io.StringIO()
        self.assertEqual(spool_command("stats", self.directory, False, io.StringIO(), err), 1)
        self.assertIn("No such file or directory", err.getvalue())

    def test_command_line(self) -> None:
        self.spool()
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(main(["spool", "stats", self.directory, "--json"]), 0)
        self.assertEqual(json.loads(out.getvalue())[0]["records"], 0)


class ReplayTests(SpoolTestCase):
    def test_replay_dead_letters(self) -> None:
        """
        Dead letters go back into the spool (a C{replay-*} folder a running
        gateway takes over) and are delivered; the file is emptied and a
        copy kept.
        """
        inner = MemoryUpstream(
            "mimir", [UpstreamRejected(400, "bad"), UpstreamRejected(422, "worse")]
        )
        spool = self.spool(inner)
        self.accepted(spool, push(1), push(2), push(3))
        self.assertEqual(numbers(inner.delivered), [3])
        letters = os.path.join(self.directory, "worker-0", DEAD_LETTERS)
        with open(letters, "a") as f:
            f.write("not json\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(replay_dead_letters(self.directory, out, err), 0)
        self.assertIn("2 dead letter(s) re-queued in", out.getvalue())
        self.assertIn("1 dead letter(s) hold no readable push", err.getvalue())
        self.assertEqual(os.path.getsize(letters), 0)
        kept = [n for n in os.listdir(os.path.dirname(letters)) if "replayed" in n]
        self.assertEqual(len(kept), 1)
        replays = [n for n in os.listdir(self.directory) if n.startswith("replay-")]
        self.assertEqual(len(replays), 1)
        # The running spool takes the replay over at its next housekeeping.
        self.clock.advance(30)
        self.assertEqual(numbers(inner.delivered), [3, 1, 2])
        self.assertEqual(inner.delivered[1].received_at > push(1).received_at, True)
        self.assertEqual([n for n in os.listdir(self.directory) if n.startswith("replay")], [])

    def test_replay_reads_both_files_in_order_and_keeps_them_private(self) -> None:
        """
        The older dead-letter file is replayed first; the replay's copy and
        folder are as private as the gateway's own files (0600, 0700).
        """
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        inner = MemoryUpstream("mimir", [UpstreamRejected(400, "bad")] * 6)
        spool = self.spool(inner, dead_letters_max_size=1500)
        self.accepted(spool, *[push(n) for n in range(6)])
        kept_letters = spool.counts.dead_lettered - spool.counts.dead_letters_dropped
        folder = os.path.join(self.directory, "worker-0")
        self.assertTrue(os.path.exists(os.path.join(folder, OLDER_DEAD_LETTERS)))
        out, err = io.StringIO(), io.StringIO()
        self.patch(_cli, "REPLAY_BATCH", 2)
        self.assertEqual(replay_dead_letters(self.directory, out, err), 0)
        self.assertEqual(err.getvalue(), "")
        self.assertFalse(os.path.exists(os.path.join(folder, OLDER_DEAD_LETTERS)))
        (kept,) = [n for n in os.listdir(folder) if "replayed" in n]
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(folder, kept)).st_mode), 0o600)
        (replay,) = [n for n in os.listdir(self.directory) if n.startswith("replay-")]
        replay_path = os.path.join(self.directory, replay)
        self.assertEqual(stat.S_IMODE(os.stat(replay_path).st_mode), 0o700)
        for name in os.listdir(replay_path):
            mode = stat.S_IMODE(os.stat(os.path.join(replay_path, name)).st_mode)
            self.assertEqual(mode, 0o600, name)
        self.clock.advance(30)
        first = 6 - kept_letters
        self.assertEqual(numbers(inner.delivered), list(range(first, 6)))

    def test_nothing_to_replay(self) -> None:
        self.spool()
        out = io.StringIO()
        replay_dead_letters(self.directory, out, io.StringIO())
        self.assertIn("0 dead letter(s) re-queued", out.getvalue())
