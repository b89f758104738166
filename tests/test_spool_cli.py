"""
C{sealgw spool stats} and C{sealgw spool replay-dead-letters}, on spools
a (Clock-driven) gateway wrote.
"""

from __future__ import annotations

import io
import json
import os
import sys

from twisted.internet.defer import Deferred

from sealgw.cli import main
from sealgw.relay import Delivery, UpstreamRejected
from sealgw.spool._cli import replay_dead_letters, spool_command, stats
from sealgw.spool._disk import DEAD_LETTERS
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

    def test_nothing_to_replay(self) -> None:
        self.spool()
        out = io.StringIO()
        replay_dead_letters(self.directory, out, io.StringIO())
        self.assertIn("0 dead letter(s) re-queued", out.getvalue())
