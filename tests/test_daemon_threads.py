"""
Tests for L{sealgw.daemon._threads}: the gateway's own worker threads.
"""

import threading

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from sealgw.daemon._threads import WorkerThreads


class WorkerThreadsTests(TestCase):
    async def test_runs_off_the_reactor_thread(self) -> None:
        threads = WorkerThreads(reactor, size=2)
        threads.startService()
        self.addCleanup(threads.stopService)
        name = await threads.run(lambda: threading.current_thread().name)
        self.assertNotEqual(name, threading.current_thread().name)

    async def test_not_the_reactors_pool(self) -> None:
        """
        Work on these threads does not occupy the reactor's default pool,
        which Twisted's name resolution shares.
        """
        threads = WorkerThreads(reactor, size=1)
        threads.startService()
        self.addCleanup(threads.stopService)
        self.assertIsNot(threads.pool, reactor.getThreadPool())
        release = threading.Event()
        busy = threads.run(release.wait, 10)
        # The reactor's own pool still answers while ours is busy.
        from twisted.internet.threads import deferToThread

        self.assertEqual(await deferToThread(lambda: 42), 42)
        release.set()
        self.assertTrue(await busy)

    async def test_queued_before_start(self) -> None:
        threads = WorkerThreads(reactor, size=1)
        pending = threads.run(lambda: "done")
        self.assertNoResult(pending)
        threads.startService()
        self.addCleanup(threads.stopService)
        self.assertEqual(await pending, "done")

    async def test_failure_reaches_caller(self) -> None:
        threads = WorkerThreads(reactor, size=1)
        threads.startService()
        self.addCleanup(threads.stopService)

        def fail() -> None:
            raise ValueError("bad body")

        with self.assertRaises(ValueError):
            await threads.run(fail)

    def test_stop_joins(self) -> None:
        threads = WorkerThreads(reactor, size=2)
        threads.startService()
        threads.stopService()
        self.assertFalse(threads.running)
        self.assertEqual(threads.pool.threads, [])
