"""
Loki live tails (C{/loki/api/v1/tail}): the client's WebSocket and the
upstream's joined into one L{TailSession}, under the bounds a tail is held
to (L{TailLimits}), and the count of open tails per identity
(L{OpenTails}).

Nothing here knows a WebSocket library or a Twisted web request: each side
of a tail is an L{ITailEnd}, so the session's rules (what ends a tail, with
which close code, what each side is told) are tested on a
L{twisted.internet.task.Clock}.  The autobahn protocols that are the real
ends are in L{sealgw.query._tail_upstream} and L{sealgw.web.query}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import attr
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface

from sealgw.query._outcome import ReadRefused

MiB = 1024 * 1024

#: The close codes a close frame may carry (RFC 6455 section 7.4, and the
#: IANA registry): the others (1005, 1006, 1015) only say that no frame
#: came, and are never sent.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})

#: Sent to one side when the other went away without a close frame.
ABNORMAL = 1011

#: Sent to both sides when the gateway itself ends a tail: its maximum
#: duration, its idle timeout, a drain.
NORMAL = 1000
GOING_AWAY = 1001


def sendable(code: Optional[int]) -> bool:
    """
    Whether C{code} may be written in a close frame.
    """
    return code is not None and (code in _SENDABLE or 3000 <= code <= 4999)


@attr.frozen
class TailLimits:
    """
    The bounds on one tail (see L{sealgw.config.TailConfig}).

    @ivar max_message_bytes: the largest message passed from the upstream
        to the client; the read route's C{max_response_bytes}.
    @ivar max_client_message_bytes: the largest message passed from the
        client to the upstream.  Loki reads nothing a client sends on a
        tail; Grafana sends nothing but control frames.
    """

    max_duration: float = 3600.0
    idle_timeout: float = 600.0
    max_per_identity: int = 4
    max_message_bytes: int = 64 * MiB
    max_client_message_bytes: int = 64 * 1024


class OpenTails:
    """
    How many tails each identity holds open in this process: the only
    owner of that count.  An identity at its cap is refused 429 before its
    upgrade, never cut off later.
    """

    def __init__(self, max_per_identity: int) -> None:
        self.max_per_identity = max_per_identity
        self._open: dict[str, int] = {}

    def count(self, identity: str) -> int:
        return self._open.get(identity, 0)

    def total(self) -> int:
        return sum(self._open.values())

    def open(self, identity: str) -> Callable[[], None]:
        """
        Count one more tail of C{identity}.

        @return: what gives it back, once; calling it again does nothing.
        @raise ReadRefused: 429, the identity holds its cap already.
        """
        held = self._open.get(identity, 0)
        if held >= self.max_per_identity:
            raise ReadRefused(
                429,
                f"identity {identity!r} has {held} live tails open, the most this gateway "
                f"allows (query.loki.tail.max_per_identity); close one first",
                # Tails end when a person closes a view: no sooner than this.
                {"Retry-After": "30"},
            )
        self._open[identity] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._open[identity] - 1
            if left:
                self._open[identity] = left
            else:
                del self._open[identity]

        return release


class ITailEnd(Interface):
    """
    One side of a tail, as the session drives it: a WebSocket that is
    open.
    """

    def send(payload: bytes, binary: bool) -> None:
        """
        Send one message.
        """

    def close(code: int, reason: str) -> None:
        """
        Begin the closing handshake with C{code}; the end tells the session
        it is closed when it is.
        """

    def pause() -> None:
        """
        Stop reading from this side (the other cannot take more yet).
        """

    def resume() -> None:
        """
        Read from this side again.
        """

    def throttles(other: ITailEnd) -> None:
        """
        While this side cannot send as fast as C{other} says, stop reading
        C{other}: this side's transport pauses it when its buffer is full
        and resumes it once drained.
        """


@attr.define
class TailOutcome:
    """
    How a tail ended, for the access line and the log.

    @ivar ended_by: C{client}, C{upstream}, C{idle}, C{duration} or
        C{drain}.
    @ivar code: the close code the side that ended it sent, or 1006 when
        it sent none.
    @ivar to_client: message bytes passed to the client.
    @ivar from_client: message bytes passed to the upstream.
    """

    ended_by: str = ""
    code: int = 1006
    reason: str = ""
    to_client: int = 0
    from_client: int = 0
    messages_to_client: int = 0
    seconds: float = 0.0


class TailSession:
    """
    One tail: messages relayed both ways as they come, each side's close
    passed to the other with its code and reason, and the tail ended by
    the gateway once it reaches C{limits.max_duration} or passes no
    message for C{limits.idle_timeout}.

    Backpressure is the ends' transports': the web layer registers each
    side's transport as the producer of the other's, so a client that
    reads slowly stops the gateway reading the upstream (and Loki then
    drops entries, which it reports in C{dropped_entries}).

    @param on_end: called once, with the outcome, when both sides are
        closed.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        limits: TailLimits,
        on_end: Callable[[TailOutcome], None],
        label: str = "tail",
    ) -> None:
        self._clock = clock
        self._limits = limits
        self._on_end = on_end
        self._label = label
        self.outcome = TailOutcome()
        self._client: Optional[ITailEnd] = None
        self._upstream: Optional[ITailEnd] = None
        self._client_open = False
        self._upstream_open = False
        self._started: Optional[float] = None
        self._idle: Optional[IDelayedCall] = None
        self._deadline: Optional[IDelayedCall] = None
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def upstream_opened(self, upstream: ITailEnd) -> None:
        """
        The upstream's WebSocket is open; it is not read until the
        client's is too, so nothing it says is lost or held here.
        """
        self._upstream = upstream
        self._upstream_open = True
        upstream.pause()

    def client_opened(self, client: ITailEnd) -> None:
        """
        The client's WebSocket is open: the tail starts, and its clocks.
        """
        self._client = client
        self._client_open = True
        self._started = self._clock.seconds()
        if self._upstream is None or not self._upstream_open:
            # The upstream went while the client's handshake was answered.
            self._close(client, ABNORMAL, "the loki upstream closed the tail")
            self._settle()
            return
        self._deadline = self._clock.callLater(self._limits.max_duration, self._too_long)
        self._idle = self._clock.callLater(self._limits.idle_timeout, self._went_idle)
        client.throttles(self._upstream)
        self._upstream.throttles(client)
        self._upstream.resume()

    # -- messages ----------------------------------------------------------

    def from_upstream(self, payload: bytes, binary: bool) -> None:
        if self._ended or self._client is None or not self._client_open:
            return
        self._active()
        self.outcome.to_client += len(payload)
        self.outcome.messages_to_client += 1
        self._client.send(payload, binary)

    def from_client(self, payload: bytes, binary: bool) -> None:
        if self._ended or self._upstream is None or not self._upstream_open:
            return
        self._active()
        self.outcome.from_client += len(payload)
        self._upstream.send(payload, binary)

    def _active(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._limits.idle_timeout)

    # -- endings -----------------------------------------------------------

    def client_closed(self, code: Optional[int], reason: Optional[str]) -> None:
        """
        The client's WebSocket is closed, with C{code} if it sent one.
        """
        self._client_open = False
        self._first_end("client", code, reason)
        if self._upstream is not None and self._upstream_open:
            self._pass_close(self._upstream, code, reason, "the client")
        self._settle()

    def upstream_closed(self, code: Optional[int], reason: Optional[str]) -> None:
        """
        The upstream's WebSocket is closed, with C{code} if it sent one.
        """
        self._upstream_open = False
        self._first_end("upstream", code, reason)
        if self._client is not None and self._client_open:
            self._pass_close(self._client, code, reason, "the loki upstream")
        self._settle()

    def going_away(self) -> None:
        """
        The gateway is draining: both sides are told 1001, and Grafana
        reconnects to a gateway that is not.
        """
        self._end_both("drain", GOING_AWAY, "the gateway is shutting down")

    def _too_long(self) -> None:
        self._deadline = None
        self._end_both(
            "duration",
            NORMAL,
            f"the tail reached the gateway's limit of {self._limits.max_duration:g}s",
        )

    def _went_idle(self) -> None:
        self._idle = None
        self._end_both(
            "idle",
            NORMAL,
            f"no log line for {self._limits.idle_timeout:g}s (the gateway's idle timeout)",
        )

    def _end_both(self, why: str, code: int, reason: str) -> None:
        self._first_end(why, code, reason)
        for end, is_open in ((self._client, self._client_open),
                             (self._upstream, self._upstream_open)):
            if end is not None and is_open:
                self._close(end, code, reason)

    def _first_end(self, who: str, code: Optional[int], reason: Optional[str]) -> None:
        if self.outcome.ended_by:
            return
        self.outcome.ended_by = who
        self.outcome.code = code if code is not None else 1006
        self.outcome.reason = reason or ""
        self._cancel_timers()

    def _pass_close(
        self, end: ITailEnd, code: Optional[int], reason: Optional[str], who: str
    ) -> None:
        if sendable(code):
            assert code is not None
            self._close(end, code, reason or "")
        elif code is None or code == 1005:
            # A close frame without a code: a normal close.
            self._close(end, NORMAL, reason or "")
        else:
            self._close(end, ABNORMAL, f"{who} went away without closing the tail")

    def _close(self, end: ITailEnd, code: int, reason: str) -> None:
        try:
            end.close(code, reason)
        except Exception:
            self._log.failure("{label}: closing one side of a tail failed", label=self._label)

    def _cancel_timers(self) -> None:
        for call in (self._idle, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._deadline = None

    def _settle(self) -> None:
        if self._ended or self._client_open or self._upstream_open:
            return
        self._ended = True
        self._cancel_timers()
        if self._started is not None:
            self.outcome.seconds = self._clock.seconds() - self._started
        self._on_end(self.outcome)
