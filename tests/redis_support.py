"""
A C{redis-server} of the test's own, on a unix socket in a folder of its
own, that a test can kill and start again at the same address.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Optional

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e_support import with_timeout

reactor: Any = _reactor

REDIS_SERVER = shutil.which("redis-server")


def require_redis() -> str:
    """
    The path of C{redis-server}.  Without one the test fails in CI (where
    C{.ci/run} installs it) and is skipped elsewhere.
    """
    if REDIS_SERVER is not None:
        return REDIS_SERVER
    message = (
        "redis-server is not on PATH; the shared limits tests need it "
        "(Debian: apt-get install redis-server)"
    )
    if os.environ.get("CI"):
        raise AssertionError(message + " -- CI is set, so this is a failure, not a skip")
    raise SkipTest(message)


class _Server(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.exited = False

    def outReceived(self, data: bytes) -> None:
        self.output = (self.output + data)[-32768:]
        # "Ready to accept connections tcp" or "... ready to accept
        # connections at PATH", as versions word it.
        if b"eady to accept connections" in self.output and not self.ready.called:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        if not self.ready.called:
            self.ready.errback(AssertionError(f"redis-server ended:\n{self.output.decode()}"))
        self.ended.callback(None)


class Redis:
    """
    @ivar url: C{unix://...} for C{auth.shared_limits.redis}.
    """

    def __init__(self, test: TestCase) -> None:
        self.binary = require_redis()
        # A short path: a unix socket's must fit in 108 bytes.
        self.directory = tempfile.mkdtemp(prefix="sealgw-redis-")
        test.addCleanup(shutil.rmtree, self.directory, True)
        self.socket = os.path.join(self.directory, "redis.sock")
        self.url = f"unix://{self.socket}"
        self._process: Optional[_Server] = None
        self._transport: Any = None
        test.addCleanup(self.stop)

    async def start(self) -> None:
        process = _Server()
        self._transport = reactor.spawnProcess(
            process,
            self.binary,
            [
                self.binary, "--port", "0", "--unixsocket", self.socket,
                "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                "--dir", self.directory,
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin")},
            path=self.directory,
        )
        self._process = process
        await with_timeout(process.ready, 20, "redis-server to start")

    async def kill(self) -> None:
        """
        SIGKILL, as a store that vanishes.
        """
        process, self._process = self._process, None
        if process is not None and not process.exited:
            self._transport.signalProcess("KILL")
            await with_timeout(process.ended, 20, "redis-server to end")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and not process.exited:
            self._transport.signalProcess("TERM")
            await with_timeout(process.ended, 20, "redis-server to end")


async def start_redis(test: TestCase) -> Redis:
    redis = Redis(test)
    await redis.start()
    return redis
