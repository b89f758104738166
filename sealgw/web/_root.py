"""
The resource a listener serves: the push (and, later, query) routes, and
the operational routes where the listener is configured to carry them.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import NotFound

from sealgw.web._errors import answer_error, answer_routing_error

OPS_PATHS = (b"health", b"ready", b"metrics")


class _NoRoute(Resource):
    """
    The answer for every path on a listener that serves no push routes
    (the C{admin} listener): the same 404 the routers give.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return answer_routing_error(request, NotFound())


class _NotUTF8(Resource):
    """
    A path (once percent-decoded) or C{Host} that is not UTF-8 names no
    route.  The router would say so with a logged traceback, as if it were
    our fault.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return answer_error(request, 400, "the path or Host header is not valid UTF-8")


def _utf8(segments: list[bytes]) -> bool:
    try:
        for segment in segments:
            segment.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class GatewayRoot(Resource):
    """
    Sends C{/health}, C{/ready} and C{/metrics} to the operational routes
    when C{ops} is given, and everything else to C{routes}.

    Both are Klein resources that route on the full path, so the first
    segment that Twisted consumed to choose a child is put back.
    """

    def __init__(self, routes: Optional[IResource], ops: Optional[IResource]) -> None:
        super().__init__()
        self._routes = routes
        self._ops = ops

    def getChildWithDefault(self, path: bytes, request: Any) -> IResource:
        if not _utf8([path, *request.postpath, request.getRequestHostname()]):
            return _NotUTF8()
        # Only the operational paths themselves: /metrics/job/... is a
        # Pushgateway push, and goes to the push routes.
        if path in OPS_PATHS and not any(request.postpath) and self._ops is not None:
            target: Optional[IResource] = self._ops
        else:
            target = self._routes
        if target is None:
            return _NoRoute()
        request.postpath.insert(0, request.prepath.pop())
        return target
