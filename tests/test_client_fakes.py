"""
Fakes for the client library's tests (no tests here): a reactor that is a
C{Clock} with the thread and shutdown hooks the client uses, a scripted
gateway served to C{treq.testing.StubTreq}, and a client whose first
requests fail to connect.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any, Optional

import attr
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from sealgw.signals import snappy_decompress
from sealgw.signals.proto import remote_pb2


class FakeReactor(Clock):
    """
    A C{Clock} that also takes C{callFromThread} (queued until L{run_from_threads}, as
    the real reactor runs them on its next turn) and system event
    triggers (run by L{shutdown}).
    """

    running = True

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[Callable[[], object]] = []
        self.triggers: dict[int, tuple[str, str, Callable[[], Any]]] = {}
        self._next_trigger = 0

    def callFromThread(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self.from_threads.append(lambda: f(*args, **kwargs))

    def run_from_threads(self) -> None:
        calls, self.from_threads = self.from_threads, []
        for call in calls:
            call()

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], Any]) -> int:
        self._next_trigger += 1
        self.triggers[self._next_trigger] = (phase, event, f)
        return self._next_trigger

    def removeSystemEventTrigger(self, trigger: int) -> None:
        del self.triggers[trigger]

    def shutdown(self) -> Deferred[Any]:
        """
        Run the "before shutdown" triggers, as C{reactor.stop} does.
        """
        triggers = [f for phase, event, f in self.triggers.values() if phase == "before"]
        self.triggers.clear()
        return DeferredList([maybeDeferred(f) for f in triggers])


@attr.define
class Seen:
    """
    A request the scripted gateway received.
    """

    method: bytes
    path: bytes
    headers: dict[str, str]
    body: bytes

    def remote_write(self) -> remote_pb2.WriteRequest:
        request = remote_pb2.WriteRequest()
        request.ParseFromString(snappy_decompress(self.body, 1 << 24))
        return request

    def series(self) -> dict[str, float]:
        """
        Each series of a remote-write body by its labels written out
        (C{name{a="b"}}), with its one sample's value.
        """
        out: dict[str, float] = {}
        for one in self.remote_write().timeseries:
            labels = {label.name: label.value for label in one.labels}
            name = labels.pop("__name__")
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out[f"{name}{{{inner}}}"] = one.samples[0].value
        return out

    def loki(self) -> dict[str, Any]:
        body = self.body
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        doc: dict[str, Any] = json.loads(body)
        return doc


HANG = "hang"


def respond(status: int, headers: Optional[dict[str, str]] = None, body: bytes = b"") -> Any:
    return (status, headers or {}, body)


class ScriptedGateway(Resource):
    """
    Answers each request with the next action of C{script} (the last one
    repeating; 204 without a script): C{respond(...)}, or L{HANG} to
    leave it unanswered (kept in C{hanging}).
    """

    isLeaf = True

    def __init__(self, *script: Any) -> None:
        super().__init__()
        self.script = list(script)
        self.seen: list[Seen] = []
        self.hanging: list[Request] = []

    def render(self, request: Request) -> Any:
        assert request.content is not None
        headers = {
            k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.seen.append(Seen(request.method, request.path, headers, request.content.read()))
        if len(self.script) > 1:
            action = self.script.pop(0)
        elif self.script:
            action = self.script[0]
        else:
            action = respond(204)
        if action == HANG:
            self.hanging.append(request)
            return NOT_DONE_YET
        status, answer_headers, body = action
        request.setResponseCode(status)
        for name, value in answer_headers.items():
            request.setHeader(name, value)
        return body


def stub(gateway: ScriptedGateway) -> Any:
    return StubTreq(gateway)


class Unreachable:
    """
    A treq-like client whose first C{failures} requests fail to connect;
    later ones go to C{then}.
    """

    def __init__(self, failures: int, then: Any) -> None:
        self.failures = failures
        self.then = then
        self.attempts = 0

    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:
        self.attempts += 1
        if self.attempts <= self.failures:
            return fail(ConnectionRefusedError("nobody listening"))
        result: Deferred[Any] = self.then.request(method, url, **kwargs)
        return result
