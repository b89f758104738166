"""
Running sealgw's own commands as child processes in tests, and waiting on
them through Deferreds rather than sleeps.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any, Optional

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 nothing listens on right now, for programs
    that must be told their port up front (twistd, Prometheus); servers in
    the test process listen on port 0 instead.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Child(ProcessProtocol):
    """
    A child process whose output is kept and whose end is a Deferred.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int] = Deferred()
        self.exit_code: Optional[int] = None
        self._watchers: list[tuple[bytes, Deferred[None]]] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check()

    def _check(self) -> None:
        for needle, d in list(self._watchers):
            if needle in self.out or needle in self.err:
                self._watchers.remove((needle, d))
                d.callback(None)

    def output_contains(self, needle: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._watchers.append((needle, d))
        self._check()
        return d

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.ended.callback(self.exit_code if self.exit_code is not None else -1)

    def signal(self, name: str) -> None:
        if self.transport is not None and self.exit_code is None:
            self.transport.signalProcess(name)


def spawn(args: list[str], cwd: Optional[str] = None, **env: str) -> Child:
    child = Child()
    reactor.spawnProcess(
        child, sys.executable, [sys.executable, *args], env=child_env(**env), path=cwd
    )
    return child


def twistd(*args: str, cwd: Optional[str] = None) -> Child:
    return spawn(
        ["-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=", *args],
        cwd=cwd,
    )


async def wait_for(
    check: Callable[[], Deferred[bool]], timeout: float = 30.0, every: float = 0.1
) -> None:
    """
    Ask C{check} until it says yes, for at most C{timeout} seconds.
    """
    waited = 0.0
    last: object = None
    while waited < timeout:
        try:
            if await check():
                return
        except Exception as e:  # not up yet: connection refused and the like
            last = e
        await deferLater(reactor, every, lambda: None)
        waited += every
    raise AssertionError(f"not ready after {timeout}s (last: {last!r})")


async def healthy(url: str) -> bool:
    response = await treq.get(url + "/health", persistent=False, timeout=2)
    await response.content()
    return bool(response.code == 200)


async def stop(child: Child, timeout: float = 15.0) -> Any:
    """
    SIGTERM, then SIGKILL if it lingers; for test cleanup.
    """
    if child.exit_code is not None:
        return
    child.signal("TERM")
    killer = reactor.callLater(timeout, child.signal, "KILL")
    await child.ended
    if killer.active():
        killer.cancel()
