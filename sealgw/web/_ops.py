"""
The operational routes: C{/health} (liveness with each component's
state), C{/ready} (whether to send traffic here) and C{/metrics}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from sealgw.daemon._health import Health
from sealgw.web._errors import answer_json, answer_routing_error
from sealgw.web._metrics import GatewayMetrics
from sealgw.web._request import record_of


class OpsRoutes:
    """
    @param scrape: what C{/metrics} answers: the text exposition, or a
        L{Deferred} of it.  By default the gateway's own registry, read
        on the reactor thread; with workers, every worker's series read
        from their files in a thread (see L{sealgw.web._metrics.daemon_registry}).
    """

    app = Klein()

    def __init__(
        self,
        health: Health,
        metrics: GatewayMetrics,
        scrape: Optional[Callable[[], Any]] = None,
    ) -> None:
        self.health = health
        self.metrics = metrics
        self._scrape = scrape if scrape is not None else self._own_registry

    def _own_registry(self) -> bytes:
        return generate_latest(self.metrics.registry)

    @app.route("/health", methods=["GET", "HEAD"])
    def health_route(self, request: IRequest) -> bytes:
        record_of(request).route = "health"
        healthy, report = self.health.report()
        return answer_json(request, 200 if healthy else 503, report)

    @app.route("/ready", methods=["GET", "HEAD"])
    def ready_route(self, request: IRequest) -> bytes:
        record_of(request).route = "ready"
        ready, conditions = self.health.readiness()
        return answer_json(
            request,
            200 if ready else 503,
            {"status": "ready" if ready else "not ready", "conditions": conditions},
        )

    @app.route("/metrics", methods=["GET", "HEAD"])
    def metrics_route(self, request: IRequest) -> Any:
        record_of(request).route = "metrics"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self._scrape()

    @app.handle_errors(HTTPException)
    def routing_error(self, request: IRequest, failure: Any) -> bytes:
        return answer_routing_error(request, failure.value)
