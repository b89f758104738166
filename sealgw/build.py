"""
Put a gateway together from a L{Config}: metrics and health, the auth
gate, the upstreams, the routes, a site per kind of listener, and the
service that runs them.
"""

from __future__ import annotations

from typing import IO, Any, Optional

from prometheus_client import CollectorRegistry

from sealgw.auth import build_gate
from sealgw.config import Config, ListenerConfig
from sealgw.daemon import (
    DOWN,
    OK,
    GatewayService,
    Health,
    make_observer,
    prepare_listener,
)
from sealgw.daemon._memory import map_large_blocks
from sealgw.daemon._threads import WorkerThreads
from sealgw.query import build_reads
from sealgw.relay import RelayMetrics, build_upstreams
from sealgw.web import GatewayMetrics, GatewayRoot, GatewaySite, OpsRoutes
from sealgw.web.push import PushRoutes
from sealgw.web.query import QueryRoutes, ReadAndPushRoutes


def build_gateway(
    config: Config,
    reactor: Any,
    *,
    registry: Optional[CollectorRegistry] = None,
    install_signal_handlers: bool = True,
    log_output: Optional[IO[str]] = None,
    check_only: bool = False,
) -> GatewayService:
    """
    Everything is built and checked here, before anything listens; a
    problem raises L{sealgw.config.ConfigError}.

    @param log_output: where the configured log observer writes; when
        L{None} no observer is installed (twistd's own is used).
    @param check_only: build to find problems, never to run: sockets that
        only systemd can hand over are not looked for.
    """
    metrics = GatewayMetrics(registry)
    health = Health()
    gate = build_gate(config, reactor, metrics.registry)
    gate.audit.log_allowed = config.log.level == "debug"
    # Large decodes and file writes get threads of their own, apart from
    # the reactor's pool that name resolution uses.
    threads = WorkerThreads(reactor)
    upstreams = build_upstreams(
        config.upstreams,
        reactor,
        tenant_header=config.tenancy.header,
        metrics=RelayMetrics(metrics.registry),
        run_in_thread=threads.run,
    )
    push = PushRoutes(config, gate, upstreams, reactor, run_in_thread=threads.run)
    reads = build_reads(config, reactor)
    # Read paths go to the query routes, every other one to the push routes.
    public = ReadAndPushRoutes(QueryRoutes(reads.settings, gate), push.app.resource())
    ops_resource = OpsRoutes(health, metrics).app.resource()

    roots: dict[str, GatewayRoot] = {}
    sites: list[GatewaySite] = []

    def site_for(kind: str, lc: ListenerConfig) -> GatewaySite:
        # One site per listener, for the listener's own limits; listeners
        # of one kind share the resource tree.
        if kind not in roots:
            roots[kind] = GatewayRoot(
                routes=None if kind == "admin" else public,
                ops=None if kind == "push" else ops_resource,
            )
        site = GatewaySite(
            roots[kind],
            reactor,
            metrics,
            max_body=config.limits.max_body,
            access_log=config.log.access,
            listener=lc,
        )
        sites.append(site)
        return site

    listeners = [
        prepare_listener(
            reactor,
            lc,
            site_for("push+ops" if lc.ops else "push", lc),
            f"listeners[{i}]",
            check_only,
            metrics,
        )
        for i, lc in enumerate(config.listeners)
    ]
    if config.admin is not None:
        listeners.append(prepare_listener(
                reactor, config.admin, site_for("admin", config.admin), "admin", check_only, metrics
            ))

    observer = None
    if log_output is not None:
        observer = make_observer(log_output, config.log.format, config.log.level)

    service = GatewayService(
        reactor,
        listeners,
        sites,
        drain_grace=config.drain_grace,
        reload=gate.reload,
        log_observer=observer,
        install_signal_handlers=install_signal_handlers,
    )
    # Children stop in the reverse order: the threads last, once the
    # upstreams have finished their writes.
    threads.setServiceParent(service)
    gate.setServiceParent(service)
    upstreams.setServiceParent(service)
    reads.setServiceParent(service)

    def listener_health() -> dict[str, Any]:
        if service.draining:
            return {"status": OK, "state": "draining"}
        if service.listening:
            return {"status": OK, "state": "listening", "count": len(listeners)}
        return {"status": DOWN, "state": "not listening"}

    health.register("listeners", listener_health)
    tls = {li.where: li.tls for li in listeners if li.tls is not None}
    if tls:
        # Degraded while a rotated certificate could not be loaded.
        health.register("tls", lambda: _worst({w: t.health() for w, t in tls.items()}))
    health.register("auth", lambda: _worst(gate.health()))
    health.register("upstreams", lambda: _worst(upstreams.health()))
    health.require_for_ready("listening", lambda: service.listening)
    health.require_for_ready("not_draining", lambda: not service.draining)
    if not check_only:
        # So that a refused body's memory leaves the process with it.
        map_large_blocks()
    return service


def _worst(components: dict[str, Any]) -> dict[str, Any]:
    """
    Fold sub-component states into one, keeping the detail.
    """
    order = {"ok": 0, "degraded": 1, "down": 2}
    status = "ok"
    for state in components.values():
        s = state.get("status", "ok") if isinstance(state, dict) else "ok"
        if order.get(s, 0) > order[status]:
            status = s
    return {"status": status, **components}
