"""
L{sealgw.web._dispatch}: exact paths dispatched without Klein's URL
matching, with Klein's behaviour for everything else.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyChannel

from sealgw.web._dispatch import ExactPathResource, exact_routes


class Routes:
    app = Klein()

    def __init__(self) -> None:
        self.pending: Deferred[bytes] = Deferred()
        self.cancelled = False
        self.errors: list[Failure] = []

    @app.route("/push", methods=["POST"])
    def push(self, request: Any) -> Any:
        request.setResponseCode(204)
        return b""

    @app.route("/text", methods=["POST"])
    def text(self, request: Any) -> Any:
        return "héllo"

    @app.route("/later", methods=["POST"])
    async def later(self, request: Any) -> bytes:
        try:
            return await self.pending
        except CancelledError:
            self.cancelled = True
            raise

    @app.route("/stubborn", methods=["POST"])
    async def stubborn(self, request: Any) -> bytes:
        try:
            return await self.pending
        except CancelledError:
            raise RuntimeError("cleaning up went wrong") from None

    @app.route("/broken", methods=["POST"])
    def broken(self, request: Any) -> Any:
        raise ValueError("no")

    @app.route("/items/<name>", methods=["GET"])
    def item(self, request: Any, name: str) -> bytes:
        return f"item {name}".encode()

    @app.handle_errors(Exception)
    def unexpected(self, request: Any, failure: Failure) -> bytes:
        self.errors.append(failure)
        if failure.check(CancelledError):
            return b""
        request.setResponseCode(500)
        return b"klein said no"

    def answer_error(self, request: Any, failure: Failure) -> bytes:
        self.errors.append(failure)
        request.setResponseCode(500)
        return b"dispatch said no"


def _request(method: bytes, path: bytes) -> tuple[Request, DummyChannel]:
    channel = DummyChannel()
    request = Request(channel)
    request.method = method
    request.uri = request.path = path
    request.clientproto = b"HTTP/1.1"
    request.prepath = []
    request.postpath = path[1:].split(b"/")
    return request, channel


def _answer(channel: DummyChannel) -> tuple[int, bytes]:
    raw: bytes = channel.transport.written.getvalue()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        # One chunk and the terminator, as Twisted writes a short answer.
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return status, body


class ExactRoutesTests(SynchronousTestCase):
    def test_only_paths_without_variables(self) -> None:
        routes = exact_routes(Routes.app)
        self.assertEqual(routes[(b"POST", b"/push")], "push")
        self.assertEqual(routes[(b"POST", b"/later")], "later")
        self.assertNotIn((b"GET", b"/push"), routes)
        self.assertFalse(any(path.startswith(b"/items") for _, path in routes))


class ExactPathResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.routes = Routes()
        self.resource = ExactPathResource(self.routes.app, self.routes.answer_error)

    def render(self, method: bytes, path: bytes) -> tuple[Request, DummyChannel]:
        request, channel = _request(method, path)
        self.assertEqual(self.resource.render(request), NOT_DONE_YET)
        return request, channel

    def test_exact_path(self) -> None:
        request, channel = self.render(b"POST", b"/push")
        self.assertTrue(request.finished)
        self.assertEqual(_answer(channel), (204, b""))
        # As Klein leaves it for a matched route.
        self.assertEqual((request.prepath, request.postpath), ([b"push"], []))

    def test_text_is_utf8(self) -> None:
        _, channel = self.render(b"POST", b"/text")
        self.assertEqual(_answer(channel), (200, "héllo".encode()))

    def test_coroutine_awaited(self) -> None:
        request, channel = self.render(b"POST", b"/later")
        self.assertFalse(request.finished)
        self.routes.pending.callback(b"done")
        self.assertTrue(request.finished)
        self.assertEqual(_answer(channel), (200, b"done"))

    def test_failure_goes_to_the_error_handler(self) -> None:
        _, channel = self.render(b"POST", b"/broken")
        self.assertEqual(_answer(channel), (500, b"dispatch said no"))
        [failure] = self.routes.errors
        self.assertTrue(failure.check(ValueError))

    def test_client_gone_cancels(self) -> None:
        request, channel = self.render(b"POST", b"/later")
        request.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.routes.cancelled)
        # Nobody is left to answer, and a cancellation is not an error.
        self.assertEqual(channel.transport.written.getvalue(), b"")
        self.assertEqual(self.routes.errors, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failure_after_client_gone_is_logged(self) -> None:
        request, channel = self.render(b"POST", b"/stubborn")
        request.connectionLost(Failure(ConnectionDone()))
        # Nobody to answer, but the operator hears of it.
        self.assertEqual(channel.transport.written.getvalue(), b"")
        self.assertEqual(self.routes.errors, [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_other_paths_are_kleins(self) -> None:
        _, channel = self.render(b"GET", b"/items/a")
        self.assertEqual(_answer(channel), (200, b"item a"))

    def test_wrong_method_is_kleins(self) -> None:
        _, channel = self.render(b"GET", b"/push")
        status, _ = _answer(channel)
        self.assertEqual(status, 500)  # the app's own handler, as Klein calls it
        [failure] = self.routes.errors
        self.assertEqual(failure.value.code, 405)

    def test_percent_encoded_path_is_kleins(self) -> None:
        request, channel = _request(b"POST", b"/pu%73h")
        request.postpath = [b"push"]
        self.resource.render(request)
        # Served all the same, through Klein's matching of the decoded path.
        self.assertEqual(_answer(channel), (204, b""))
        self.assertEqual(self.routes.errors, [])
