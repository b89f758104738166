"""
The resource a listener serves: the push (and, later, query) routes, and
the operational routes where the listener is configured to carry them.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.web.resource import IResource, NoResource, Resource

OPS_PATHS = (b"health", b"ready", b"metrics")


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
        if path in OPS_PATHS and self._ops is not None:
            target: Optional[IResource] = self._ops
        else:
            target = self._routes
        if target is None:
            return NoResource("no such route on this listener")
        request.postpath.insert(0, request.prepath.pop())
        return target
