"""
Put a gateway together from a L{Config}: metrics and health, the auth
gate, the upstreams, the routes, a site per kind of listener, and the
service that runs them; with workers, the main process that binds the
listeners and supervises the worker processes that serve them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any, Optional, Union

from prometheus_client import CollectorRegistry, generate_latest

from sealgw.auth import build_gate
from sealgw.config import Config, ListenerConfig
from sealgw.credentials.azure import (
    OutboundCredentials,
    RelayedTokens,
    build_credentials,
    build_relayed_credentials,
)
from sealgw.daemon import (
    DOWN,
    OK,
    GatewayService,
    Health,
    make_observer,
    prepare_listener,
)
from sealgw.daemon._leases import TIMEOUT as LEASE_TIMEOUT
from sealgw.daemon._leases import LeaseServer
from sealgw.daemon._listeners import Listener
from sealgw.daemon._memory import freeze_startup_objects, map_large_blocks
from sealgw.daemon._supervisor import Supervisor
from sealgw.daemon._threads import WorkerThreads
from sealgw.daemon._tokens import TokenRelay
from sealgw.daemon._view import Worker
from sealgw.daemon._workers import NotServed, ProcessLauncher, WorkersService
from sealgw.limits import LimitOwner
from sealgw.query import build_reads
from sealgw.relay import FileUpstream, RelayMetrics, build_upstreams
from sealgw.web import GatewayMetrics, GatewayRoot, GatewaySite, OpsRoutes
from sealgw.web._metrics import daemon_registry
from sealgw.web.grpc import GrpcSite
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
    worker: Optional[Worker] = None,
    on_fatal: Optional[Callable[[str], None]] = None,
) -> GatewayService:
    """
    Everything is built and checked here, before anything listens; a
    problem raises L{sealgw.config.ConfigError}.

    @param log_output: where the configured log observer writes; when
        L{None} no observer is installed (twistd's own is used).
    @param check_only: build to find problems, never to run: sockets that
        only systemd can hand over are not looked for.
    @param worker: set in a worker process: its listeners adopt the
        sockets the main process bound, each identity's limits are shared
        out between the workers, file upstreams write files of this
        worker's own, and C{/health}, C{/ready} and C{/metrics} speak for
        the whole daemon.
    @param on_fatal: called with the reason (already logged, one line)
        when the gateway cannot go on: an upstream's first Entra ID token
        could not be had.  twistd's exits; without it the gateway goes on.
    """
    metrics = GatewayMetrics(registry)
    health = Health()
    gate = build_gate(config, reactor, metrics.registry)
    gate.audit.log_allowed = config.log.level == "debug"
    if worker is not None:
        if worker.leases is not None:
            # Without a shared store, the main process owns the limits.
            gate.lease_limits(worker.leases, "the main process", LEASE_TIMEOUT)
        gate.limiter.share = worker.count
    # Large decodes and file writes get threads of their own, apart from
    # the reactor's pool that name resolution uses.
    threads = WorkerThreads(reactor)
    # Issued tokens (Azure AD), one refresher per upstream shared by its
    # push and read clients; in a worker, the tokens its main process's
    # refreshers hand over.
    credentials: OutboundCredentials
    relayed: Optional[RelayedTokens] = None
    if worker is not None:
        credentials = relayed = build_relayed_credentials(
            config.upstreams, reactor, registry=metrics.registry, on_fatal=on_fatal
        )
    else:
        credentials = build_credentials(
            config.upstreams, reactor, registry=metrics.registry, on_fatal=on_fatal
        )
    upstreams = build_upstreams(
        config.upstreams,
        reactor,
        tenant_header=config.tenancy.header,
        metrics=RelayMetrics(metrics.registry),
        run_in_thread=threads.run,
        credentials=credentials.by_upstream,
        # Each worker spools in a folder of its own.
        worker=worker.index if worker is not None else None,
    )
    if worker is not None:
        for upstream in upstreams.values():
            if isinstance(upstream, FileUpstream):
                # One writer per file.
                upstream.worker = worker.index
    push = PushRoutes(
        config, gate, upstreams, reactor, run_in_thread=threads.run, metrics=metrics
    )
    reads = build_reads(config, reactor, credentials.by_upstream, metrics.registry)
    # Read paths go to the query routes, every other one to the push routes.
    public = ReadAndPushRoutes(QueryRoutes(reads.settings, gate), push.resource())
    scrape = None
    if worker is not None:
        # Reading every worker's files is disk work: off the reactor thread.
        # The token series are the main process's word (its refreshers'),
        # counted once, not summed over the workers.
        exposition = daemon_registry(
            worker.setup.metrics_dir,
            [worker.view, relayed] if relayed is not None and len(relayed) else [worker.view],
        )
        scrape = lambda: threads.run(generate_latest, exposition)  # noqa: E731
    ops_resource = OpsRoutes(health, metrics, scrape).app.resource()

    roots: dict[str, GatewayRoot] = {}
    sites: list[GatewaySite | GrpcSite] = []

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

    def grpc_site(lc: ListenerConfig) -> GrpcSite:
        site = GrpcSite(
            push,
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
            grpc_site(lc)
            if lc.protocol == "otlp-grpc"
            else site_for("push+ops" if lc.ops else "push", lc),
            f"listeners[{i}]",
            check_only,
            metrics,
            worker.endpoint(reactor, f"listeners[{i}]") if worker is not None else None,
        )
        for i, lc in enumerate(config.listeners)
    ]
    if config.admin is not None:
        listeners.append(prepare_listener(
                reactor, config.admin, site_for("admin", config.admin), "admin", check_only, metrics,
                worker.endpoint(reactor, "admin") if worker is not None else None,
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
    credentials.setName("credentials")
    credentials.setServiceParent(service)
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
    if gate.shared_limits is not None:
        # Degraded while each process decides alone with its share.
        health.register("limits", gate.shared_limits.health)
    health.register("upstreams", lambda: _worst(upstreams.health()))
    if reads.slots:
        health.register("reads", lambda: _worst(reads.health()))
    health.require_for_ready("listening", lambda: service.listening)
    health.require_for_ready("not_draining", lambda: not service.draining)
    if len(credentials):
        # Down, and not ready, while an upstream holds no valid token.
        health.register("credentials", lambda: _worst(credentials.health()))
        health.require_for_ready("credentials", credentials.ready)
        health.add_top_level(credentials.sidecar_fields)
    if worker is not None:
        # Ready when every worker serves, as the supervisor last said.
        health.register("workers", worker.view.health)
        health.require_for_ready("workers", worker.view.ready)
    if not check_only:
        # So that a refused body's memory leaves the process with it.
        map_large_blocks()
    return service


def build_daemon(
    config: Config,
    reactor: Any,
    *,
    install_signal_handlers: bool = True,
    log_output: Optional[IO[str]] = None,
    on_fatal: Optional[Callable[[str], None]] = None,
) -> Union[GatewayService, WorkersService]:
    """
    The gateway as twistd runs it: in this process with C{workers: 1};
    otherwise a main process that binds the listeners and keeps
    C{config.workers} worker processes serving them
    (L{sealgw.daemon.worker}).

    Either way the whole gateway is built here first, so that every
    problem stops start-up before anything listens.
    """
    gateway = build_gateway(
        config,
        reactor,
        install_signal_handlers=install_signal_handlers,
        log_output=log_output,
        on_fatal=on_fatal,
    )
    # Once everything is built: what exists then lives as long as we do.
    reactor.callWhenRunning(freeze_startup_objects)
    if config.workers == 1:
        return gateway
    launcher = ProcessLauncher(reactor, config)
    supervisor = Supervisor(
        config.workers,
        launcher,
        reactor,
        config.drain_grace,
        on_fatal=on_fatal,
        # The workers' limits, unless a shared store holds them.
        leases=LeaseServer(LimitOwner(reactor)) if config.auth.shared_limits is None else None,
    )
    observer = None
    if log_output is not None:
        observer = make_observer(log_output, config.log.format, config.log.level)
    main = WorkersService(
        reactor,
        # Only bound here: the workers accept, with TLS and limits of their own.
        [Listener(li.where, li.config, li.endpoint, NotServed()) for li in gateway.listeners],
        config.drain_grace,
        launcher,
        supervisor,
        log_observer=observer,
        install_signal_handlers=install_signal_handlers,
    )
    credentials = gateway.getServiceNamed("credentials")
    assert isinstance(credentials, OutboundCredentials)
    if len(credentials):
        # The daemon's only refreshers: one token request per refresh,
        # whatever the number of workers, each token handed to them all.
        # A first token that cannot be had ends the daemon from here
        # (on_fatal), as it ends a single gateway.
        credentials.disownServiceParent()
        credentials.setServiceParent(main)
        TokenRelay(credentials, supervisor)
    return main


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
