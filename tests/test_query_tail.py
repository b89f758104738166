"""
Loki live tails: the session's rules on a clock (messages both ways, close
codes passed on, the idle timeout and the maximum duration, a drain), and
the count of open tails per identity.  Over real sockets:
L{tests.test_query_tail_e2e}.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from sealgw.query import ITailEnd, OpenTails, ReadRefused, TailLimits, TailOutcome, TailSession
from sealgw.web._upgrade import websocket_problem


@implementer(ITailEnd)
class RecordingEnd:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.closed: Optional[tuple[int, str]] = None
        self.paused = False
        self.throttled: list[Any] = []

    def send(self, payload: bytes, binary: bool) -> None:
        self.sent.append((payload, binary))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def throttles(self, other: Any) -> None:
        self.throttled.append(other)


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.outcomes: list[TailOutcome] = []
        self.session = TailSession(
            self.clock, TailLimits(max_duration=100, idle_timeout=10), self.outcomes.append
        )
        self.client = RecordingEnd()
        self.upstream = RecordingEnd()
        self.session.upstream_opened(self.upstream)

    def test_upstream_waits_for_the_client(self) -> None:
        """
        The upstream is not read until the client's WebSocket is open;
        then each side's sending throttles the other's reading.
        """
        self.assertTrue(self.upstream.paused)
        self.session.client_opened(self.client)
        self.assertFalse(self.upstream.paused)
        self.assertEqual(self.client.throttled, [self.upstream])
        self.assertEqual(self.upstream.throttled, [self.client])

    def test_messages_both_ways(self) -> None:
        self.session.client_opened(self.client)
        self.session.from_upstream(b'{"streams":[]}', False)
        self.session.from_client(b"\x00\x01", True)
        self.assertEqual(self.client.sent, [(b'{"streams":[]}', False)])
        self.assertEqual(self.upstream.sent, [(b"\x00\x01", True)])

    def test_upstream_close_passed_on(self) -> None:
        """
        The upstream's close code and reason reach the client as they
        came; the tail ends once both are closed.
        """
        self.session.client_opened(self.client)
        self.session.from_upstream(b"x" * 10, False)
        self.session.upstream_closed(1011, "query failed")
        self.assertEqual(self.client.closed, (1011, "query failed"))
        self.assertEqual(self.outcomes, [])
        self.session.client_closed(1011, "query failed")
        [outcome] = self.outcomes
        self.assertEqual((outcome.ended_by, outcome.code, outcome.to_client), ("upstream", 1011, 10))

    def test_client_close_passed_on(self) -> None:
        self.session.client_opened(self.client)
        self.session.client_closed(1000, "bye")
        self.assertEqual(self.upstream.closed, (1000, "bye"))
        self.session.upstream_closed(1000, "bye")
        self.assertEqual(self.outcomes[0].ended_by, "client")

    def test_abnormal_close(self) -> None:
        """
        A side gone without a close frame (1006, which no frame may carry)
        is told to the other as 1011; a frame without a code as 1000.
        """
        self.session.client_opened(self.client)
        self.session.upstream_closed(1006, "dropped")
        self.assertEqual(self.client.closed[0] if self.client.closed else None, 1011)
        other = TailSession(self.clock, TailLimits(), lambda _: None)
        client, upstream = RecordingEnd(), RecordingEnd()
        other.upstream_opened(upstream)
        other.client_opened(client)
        other.client_closed(None, None)
        self.assertEqual(upstream.closed, (1000, ""))

    def test_idle_timeout(self) -> None:
        """
        A message either way puts the idle timeout off; past it with none,
        both sides are closed with 1000 and a reason.
        """
        self.session.client_opened(self.client)
        self.clock.advance(9)
        self.session.from_upstream(b"line", False)
        self.clock.advance(9)
        self.assertIsNone(self.client.closed)
        self.clock.advance(1.5)
        assert self.client.closed is not None and self.upstream.closed is not None
        self.assertEqual(self.client.closed[0], 1000)
        self.assertIn("idle timeout", self.client.closed[1])
        self.assertEqual(self.upstream.closed[0], 1000)
        self.session.client_closed(1000, "")
        self.session.upstream_closed(1000, "")
        self.assertEqual(self.outcomes[0].ended_by, "idle")

    def test_max_duration(self) -> None:
        self.session.client_opened(self.client)
        for _ in range(20):
            self.clock.advance(5)
            self.session.from_upstream(b"line", False)
        assert self.client.closed is not None
        self.assertIn("limit of 100s", self.client.closed[1])
        self.session.client_closed(1000, "")
        self.session.upstream_closed(1000, "")
        self.assertEqual(self.outcomes[0].ended_by, "duration")
        self.assertEqual(self.outcomes[0].seconds, 100)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drain(self) -> None:
        self.session.client_opened(self.client)
        self.session.going_away()
        self.assertEqual(self.client.closed and self.client.closed[0], 1001)
        self.assertEqual(self.upstream.closed and self.upstream.closed[0], 1001)

    def test_upstream_gone_before_client(self) -> None:
        self.session.upstream_closed(1000, "done")
        self.session.client_opened(self.client)
        self.assertEqual(self.client.closed and self.client.closed[0], 1011)
        self.session.client_closed(1011, "")
        self.assertEqual(len(self.outcomes), 1)


class OpenTailsTests(SynchronousTestCase):
    def test_cap_per_identity(self) -> None:
        tails = OpenTails(2)
        first = tails.open("a")
        tails.open("a")
        tails.open("b")
        e = self.assertRaises(ReadRefused, tails.open, "a")
        self.assertEqual(e.status, 429)
        self.assertIn("max_per_identity", e.message)
        self.assertIn("Retry-After", e.headers)
        first()
        first()
        self.assertEqual(tails.count("a"), 1)
        tails.open("a")
        self.assertEqual(tails.total(), 3)


class WebSocketProblemTests(SynchronousTestCase):
    """
    The upgrade request is judged before anything is opened for it.
    """

    def request(self, **headers: str) -> Any:
        request = DummyRequest([b"loki", b"api", b"v1", b"tail"])
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        base = {
            "Upgrade": "websocket",
            "Connection": "keep-alive, Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        base.update(headers)
        for name, value in base.items():
            if value:
                request.requestHeaders.setRawHeaders(name, [value.encode("ascii")])
        return request

    def test_valid(self) -> None:
        self.assertIsNone(websocket_problem(self.request()))

    def test_problems(self) -> None:
        for headers, status, words in [
            ({"Upgrade": ""}, 426, "Upgrade: websocket"),
            ({"Upgrade": "h2c"}, 426, "Upgrade: websocket"),
            ({"Connection": "keep-alive"}, 400, "Connection: Upgrade"),
            ({"Sec-WebSocket-Version": "8"}, 426, "version 13"),
            ({"Sec-WebSocket-Version": ""}, 426, "version 13"),
            ({"Sec-WebSocket-Key": ""}, 400, "Sec-WebSocket-Key"),
            ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400, "Sec-WebSocket-Key"),
            ({"Sec-WebSocket-Key": "not base64!"}, 400, "Sec-WebSocket-Key"),
        ]:
            problem = websocket_problem(self.request(**headers))
            assert problem is not None, headers
            self.assertEqual(problem[0], status, headers)
            self.assertIn(words, problem[1], headers)
        problem = websocket_problem(self.request(Upgrade=""))
        assert problem is not None
        self.assertEqual(problem[2], {"Upgrade": "websocket", "Connection": "Upgrade"})

    def test_method_and_version(self) -> None:
        post = self.request()
        post.method = b"POST"
        self.assertEqual(websocket_problem(post)[0], 400)  # type: ignore[index]
        old = self.request()
        old.clientproto = b"HTTP/1.0"
        self.assertEqual(websocket_problem(old)[0], 400)  # type: ignore[index]
