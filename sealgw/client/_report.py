"""
What the client library tells the user about its own deliveries: one line
on standard error when sending starts failing, when the gateway refuses,
when it works again, and when nothing runs Twisted's reactor.

Never through C{logging}: a L{LokiHandler} whose token is refused would
ship its own complaint, to be refused again.  Never once per attempt:
a process that cannot deliver for a day says so once, not 86,400 times.
Never the token.
"""

from __future__ import annotations

import sys
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, Optional, TextIO

import attr

from sealgw.client import _selflog
from sealgw.client._http import Answer

#: The longest gateway reason quoted in a report.
REASON_CHARACTERS = 200

#: How long something may wait for Twisted's reactor to run before the
#: user is told that nothing runs it.
REACTOR_GRACE = 5.0

_START_HINT = "an application that does not run it calls sealgw.client.start_in_thread() first"


@attr.frozen
class Subject:
    """
    What is being sent, in the words of the reports.

    @ivar one: one payload (C{"a log batch"}).
    @ivar many: payloads (C{"log batches"}).
    @ivar items: what payloads carry (C{"log line(s)"}).
    @ivar waiting: what waits to be sent (C{"log records"}).
    """

    one: str
    many: str
    items: str
    waiting: str


def public_url(url: str) -> str:
    """
    C{url} without any user and password in it, for a report.
    """
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def one_line(text: str, secret: Optional[str] = None) -> str:
    """
    C{text} on one line, at most L{REASON_CHARACTERS} long, with C{secret}
    (the token, should a proxy echo it back) blotted out.
    """
    if secret:
        text = text.replace(secret, "<token>")
    flat = " ".join(text.split())
    if len(flat) > REASON_CHARACTERS:
        flat = flat[: REASON_CHARACTERS - 3] + "..."
    return flat


def write_line(stream: Optional[TextIO], line: str) -> None:
    """
    Write C{line} to C{stream} (standard error as it is now by default).

    Marked as the library's own work: where standard error is itself
    turned into log records (C{twistd}), the line is not shipped.  A
    stream that cannot be written (closed at exit, none at all under
    C{pythonw}) loses the line rather than raising into the caller.
    """
    out = stream if stream is not None else sys.stderr
    if out is None:
        return
    try:
        with _selflog.shipping():
            out.write(f"sealgw client: {line}\n")
            out.flush()
    except (OSError, ValueError):
        pass


class DeliveryReport:
    """
    Follows the answers to one sender's payloads and reports the changes.

    Trouble starts with the first payload not delivered and ends with
    the next one delivered.  During it, the first temporary failure is
    reported once, and each refusal status once; its end is reported with
    what it cost.  Called on the reactor thread only.
    """

    def __init__(
        self, subject: Subject, url: str, stream: Optional[TextIO], secret: Optional[str]
    ) -> None:
        self.subject = subject
        self.url = public_url(url)
        self._stream = stream
        self._secret = secret
        self.reset()

    def reset(self) -> None:
        self.troubled = False
        self._failure_reported = False
        self._refusals_reported: set[Optional[int]] = set()
        self._failed = 0
        self._refused = 0
        self._items_refused = 0

    def write(self, line: str) -> None:
        write_line(self._stream, line)

    def sent(self) -> None:
        if not self.troubled:
            return
        what: list[str] = []
        if self._failed:
            what.append(f"{self._failed} failed attempt(s)")
        if self._refused:
            what.append(
                f"{self._refused} refused ({self._items_refused} {self.subject.items} dropped)"
            )
        self.write(
            f"{self.subject.many} to {self.url} are delivered again, after {', '.join(what)}"
        )
        self.reset()

    def failed(self, answer: Answer, delay: float) -> None:
        self.troubled = True
        self._failed += 1
        if self._failure_reported:
            return
        self._failure_reported = True
        self.write(
            f"{self.subject.many} to {self.url} are failing ({self.reason(answer)}); "
            f"retrying with backoff, next in {delay:.1f}s; reported again once one is delivered"
        )

    def refused(self, answer: Answer, items: int, pause: Optional[float]) -> None:
        """
        @param pause: how long sending pauses now, or L{None} for the last
            attempt at shutdown.
        """
        self.troubled = True
        self._refused += 1
        self._items_refused += items
        if answer.status in self._refusals_reported:
            return
        self._refusals_reported.add(answer.status)
        if pause is None:
            then = "it is dropped (shutting down)"
        else:
            then = (
                f"it is dropped, not retried, and sending pauses for {pause:.1f}s, longer "
                "after each refusal, until the gateway takes one (not reported again "
                "unless its answer changes)"
            )
        self.write(
            f"the gateway refused {self.subject.one} to {self.url}: {self.reason(answer)}; {then}"
        )

    def lost(self, items: int, why: str) -> None:
        """
        C{items} were given up at shutdown.
        """
        if items:
            self.write(f"{items} {self.subject.items} for {self.url} not sent at shutdown ({why})")

    def never_ran(self, count: Optional[int] = None) -> None:
        """
        C{count} things (or some) were given up because the reactor never
        ran.
        """
        if count == 0:
            return
        what = self.subject.waiting if count is None else f"{count} {self.subject.waiting}"
        self.write(
            f"{what} for {self.url} were never sent: Twisted's reactor did not run ({_START_HINT})"
        )

    def reactor_idle(self, grace: float) -> None:
        self.write(
            f"{self.subject.waiting} for {self.url} are waiting, but Twisted's reactor has not "
            f"run for {grace:g}s: nothing is sent until it does ({_START_HINT})"
        )

    def reason(self, answer: Answer) -> str:
        return one_line(answer.reason, self._secret)


#: Calls a function once after a delay, without the reactor.
Timer = Callable[[float, Callable[[], None]], object]


def start_daemon_timer(delay: float, f: Callable[[], None]) -> object:
    """
    C{f} in a thread of its own after C{delay} seconds; the thread never
    keeps the process from exiting.
    """
    timer = threading.Timer(delay, f)
    timer.daemon = True
    timer.name = "sealgw-client-reactor-watch"
    timer.start()
    return timer


class ReactorWatch:
    """
    Tells the user, once, that something waits to be sent while nothing
    runs Twisted's reactor: forgetting L{start_in_thread} otherwise sends
    nothing, silently.

    Armed by the first thing to send; it looks again L{REACTOR_GRACE}
    seconds later from a thread of its own (the reactor's clock does not
    move when the reactor does not run), and says nothing if the reactor
    runs by then, as it does in a Twisted application that logs before
    C{reactor.run()}.
    """

    def __init__(
        self,
        reactor: Any,
        report: DeliveryReport,
        grace: float = REACTOR_GRACE,
        timer: Optional[Timer] = None,
    ) -> None:
        self._reactor = reactor
        self._report = report
        self._grace = grace
        self._timer = timer
        self._lock = threading.Lock()
        #: Whether it has been armed; read without the lock by the hot path.
        self.armed = False

    def arm(self) -> None:
        """
        From any thread; does something the first time only.
        """
        with self._lock:
            if self.armed:
                return
            self.armed = True
        if reactor_running(self._reactor):
            return
        timer = self._timer if self._timer is not None else start_daemon_timer
        try:
            timer(self._grace, self._check)
        except RuntimeError:
            # No new thread at interpreter exit: the close that follows
            # says what was never sent.  A record logged must not raise.
            pass

    def _check(self) -> None:
        if not reactor_running(self._reactor):
            self._report.reactor_idle(self._grace)


def reactor_running(reactor: Any) -> bool:
    return bool(getattr(reactor, "running", False))
