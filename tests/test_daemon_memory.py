"""
Tests for L{sealgw.daemon._memory}: large blocks go back to the system.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sealgw.build import build_daemon
from sealgw.config import default_config
from sealgw.daemon import _memory
from sealgw.daemon._memory import LARGE_BLOCK, freeze_startup_objects, map_large_blocks
from tests.subprocesses import child_env

# In a fresh process: one large block freed (glibc raises its thresholds),
# then 16 MiB in 2 MiB blocks made and freed in a worker thread, as a
# refused body is.  Prints how many MiB of them stayed resident.
_ARENA_KEEPS = textwrap.dedent(
    """
    import sys, threading
    from sealgw.daemon._memory import map_large_blocks

    if sys.argv[1] == "map":
        assert map_large_blocks()

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    def decode():
        large = b"x" * (8 << 20)
        del large
        before = rss()
        blocks = [b"y" * (2 << 20) for _ in range(8)]
        del blocks
        print((rss() - before) >> 20)

    thread = threading.Thread(target=decode)
    thread.start()
    thread.join()
    """
)


def _kept_mib(mode: str) -> int:
    env = child_env()
    env.pop(_memory.OPERATOR_SETTING, None)
    out = subprocess.run(
        [sys.executable, "-c", _ARENA_KEEPS, mode],
        env=env,
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    ).stdout
    return int(out)


class MapLargeBlocksTests(SynchronousTestCase):
    def test_sets_the_threshold(self) -> None:
        calls = []

        def mallopt(option: int, value: int) -> int:
            calls.append((option, value))
            return 1

        self.assertTrue(map_large_blocks(environ={}, mallopt=lambda: mallopt))
        self.assertEqual(calls, [(-3, LARGE_BLOCK)])

    def test_operator_setting_wins(self) -> None:
        """
        With C{MALLOC_MMAP_THRESHOLD_} set, glibc has its orders already.
        """

        def mallopt() -> None:
            self.fail("mallopt looked up")

        self.assertFalse(
            map_large_blocks(environ={"MALLOC_MMAP_THRESHOLD_": "65536"}, mallopt=mallopt)
        )

    def test_not_glibc(self) -> None:
        self.assertFalse(map_large_blocks(environ={}, mallopt=lambda: None))

    def test_not_glibc_confstr(self) -> None:
        """
        Where C{confstr} does not know the name (musl, macOS), there is no
        glibc to tune.
        """

        def confstr(name: str) -> str:
            raise ValueError("unrecognized configuration name")

        self.patch(_memory.os, "confstr", confstr)
        self.assertIsNone(_memory._glibc_mallopt())

    def test_freed_blocks_leave_the_process(self) -> None:
        """
        Without a fixed threshold, blocks a worker thread frees after one
        large block was freed stay resident; with it they are returned.
        """
        if _memory._glibc_mallopt() is None:
            raise SkipTest("glibc only")
        try:
            open("/proc/self/status").close()
        except OSError:
            raise SkipTest("needs /proc") from None
        if _kept_mib("default") < 12:
            raise SkipTest("this glibc gives the blocks back by itself")
        self.assertLessEqual(_kept_mib("map"), 2)


class FreezeStartupObjectsTests(SynchronousTestCase):
    def test_frozen(self) -> None:
        """
        What exists when it runs is left out of the collector's work, and
        a full collection then no longer walks it.
        """
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        before = gc.get_freeze_count()
        freeze_startup_objects()
        self.assertGreater(gc.get_freeze_count(), before)

    def test_daemon_freezes_once_running(self) -> None:
        """
        twistd's gateway freezes what it built when the reactor starts,
        not before (the reactor's own start-up objects are part of it).
        """
        reactor = MemoryReactorClock()
        build_daemon(default_config(self.mktemp()), reactor, install_signal_handlers=False)
        self.assertIn(
            freeze_startup_objects, [hook for hook, _, _ in reactor.whenRunningHooks]
        )
