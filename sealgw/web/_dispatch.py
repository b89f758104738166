"""
Klein's resource with a shortcut for paths that have no variable part.

Klein routes every request by binding its URL map to the request's host,
scheme and path and matching the rules in order: a few dozen microseconds
of werkzeug and interface adaptation per request, which on the push path
(the same few paths, thousands of times a second) is a tenth of the
gateway's CPU.  A route whose rule has no variable part matches exactly
one path, so a dict keyed by method and path finds it at once; anything
else (a path with variables, a percent-encoded one, a wrong method, no
route at all) is Klein's to route and answer, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

#: Turns a failure of an endpoint into the answer's body (or a Deferred
#: of it), as the app's error handler for L{Exception} does.
ErrorHandler = Callable[[IRequest, Failure], Any]

_log = Logger()


def exact_routes(app: Klein) -> dict[tuple[bytes, bytes], str]:
    """
    The endpoint of every rule of C{app} that matches exactly one path, by
    method and path as they appear on the request line.
    """
    routes: dict[tuple[bytes, bytes], str] = {}
    for rule in app.url_map.iter_rules():
        if rule.arguments or rule.host or not rule.methods:
            continue
        path = rule.rule.encode("utf-8")
        if b"%" in path or not path.startswith(b"/"):
            continue
        for method in rule.methods:
            # The first rule Klein would try wins, as in Klein.
            routes.setdefault((method.encode("ascii"), path), rule.endpoint)
    return routes


class ExactPathResource(KleinResource):
    """
    A Klein app's resource that dispatches requests for its exact paths
    itself.

    What Klein does for a matched route is done here too: the path moves
    to C{prepath}, a coroutine's result is awaited, a client that goes
    away cancels the endpoint's Deferred, the result is written and the
    request finished, and a failure goes to C{on_error}.
    """

    def __init__(self, app: Klein, on_error: ErrorHandler) -> None:
        super().__init__(app)
        self._exact = exact_routes(app)
        self._on_error = on_error

    def render(self, request: IRequest) -> Any:
        req: Any = request
        endpoint = self._exact.get((req.method, req.path))
        if endpoint is None or req.prepath:
            return super().render(request)
        req.prepath.extend(req.postpath)
        req.postpath = []
        done = False

        def finished(result: object) -> None:
            nonlocal done
            done = True
            if isinstance(result, Failure):
                # The client went away: stop what the endpoint is doing.
                answer.cancel()

        answer: Deferred[Any] = maybeDeferred(self._app.execute_endpoint, endpoint, request)
        req.notifyFinish().addBoth(finished)

        def failed(failure: Failure) -> Any:
            if done:
                if not failure.check(CancelledError):
                    _log.failure("unexpected error after the answer", failure)
                return None
            return maybeDeferred(self._on_error, request, failure)

        def write(body: object) -> None:
            if done:
                return
            if isinstance(body, str):
                body = body.encode("utf-8")
            if isinstance(body, bytes) and body:
                req.write(body)
            if not done:
                req.finish()

        answer.addErrback(failed)
        answer.addCallback(write)
        answer.addErrback(lambda failure: _log.failure("writing the answer", failure))
        return NOT_DONE_YET
