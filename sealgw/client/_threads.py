"""
Using the client from an application that does not run a reactor: the
reactor runs in a thread of its own (crochet's), and the application's
threads hand work to it without ever waiting on it, except for the last
flush at close, which waits a bounded time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import threadable


def start_in_thread() -> None:
    """
    Run Twisted's reactor in a thread of its own, for applications that
    do not run one (Django, Flask, scripts).  Call it once, early; calling
    it again does nothing.

    This is C{crochet.setup()}: it also sends Twisted's log messages to
    the standard library's C{logging}, and stops the reactor when the main
    thread exits, after the pushers and handlers have made their last
    push.  A Twisted application must not call it.
    """
    import crochet

    crochet.setup()


def in_reactor_thread() -> bool:
    """
    Whether the caller is the thread that runs (or will run) the reactor.
    """
    return bool(threadable.isInIOThread())


def call_in_reactor(reactor: Any, f: Callable[[], object]) -> None:
    """
    Run C{f} on the reactor thread: now when already there, else soon.
    """
    if in_reactor_thread():
        f()
    else:
        reactor.callFromThread(f)


def wait_in_reactor(reactor: Any, f: Callable[[], Deferred[Any]], timeout: float) -> bool:
    """
    From a thread that is not the reactor's: run C{f} on the reactor
    thread and wait for its Deferred, at most C{timeout} seconds.

    Twisted's C{blockingCallFromThread} waits for ever, and a reactor that
    is shutting down never runs what it is handed: an application's exit
    would hang.

    @return: whether it finished in time.
    """
    done = threading.Event()

    def run() -> None:
        f().addBoth(lambda _: done.set())

    reactor.callFromThread(run)
    return done.wait(timeout)
