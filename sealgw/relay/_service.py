"""
Turning the configuration's upstreams into live ones, and stopping them
with the daemon.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Optional, Union

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from sealgw.config import ConfigError, FileUpstreamConfig, HTTPUpstreamConfig, UpstreamConfig
from sealgw.credentials import ICredentials
from sealgw.relay._file import FileUpstream, ThreadRunner
from sealgw.relay._http import HTTPUpstream
from sealgw.relay._interfaces import IRelayMetrics, IUpstream


class UpstreamsService(Service, Mapping[str, IUpstream]):
    """
    The live upstreams, by name: a read-only mapping, and a service whose
    stopping closes their pooled connections and waits for file writes
    already under way.

    Give it a parent that stops it only after the listeners have drained
    (a C{MultiService} stops its children in reverse order of adding).
    """

    _log = Logger()

    # A service is one thing, whatever it holds: identity, not the
    # mapping's equality, and hashable.
    __eq__ = object.__eq__  # type: ignore[assignment]
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __init__(self, upstreams: Mapping[str, IUpstream]) -> None:
        self.upstreams: dict[str, IUpstream] = dict(upstreams)

    def __getitem__(self, name: str) -> IUpstream:
        return self.upstreams[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.upstreams)

    def __len__(self) -> int:
        return len(self.upstreams)

    def __repr__(self) -> str:
        return f"<UpstreamsService {sorted(self.upstreams)}>"

    def health(self) -> dict[str, Any]:
        """
        Each upstream's recent record, by name: C{{"status": "ok"}} or
        C{"degraded"} with detail.  Never C{"down"}: see
        L{sealgw.relay._health}.
        """
        report: dict[str, Any] = {}
        for name, upstream in self.upstreams.items():
            health = getattr(upstream, "health", None)
            report[name] = health() if callable(health) else {"status": "ok"}
        return report

    def startService(self) -> None:
        super().startService()
        # Spools recover and start forwarding (in the worker threads).
        for upstream in self.upstreams.values():
            start = getattr(upstream, "start", None)
            if callable(start):
                start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        closing = [
            upstream.close().addErrback(self._close_failed, upstream.name)
            for upstream in self.upstreams.values()
        ]
        return DeferredList(closing).addCallback(lambda _: None)

    def _close_failed(self, failure: Failure, name: str) -> None:
        self._log.failure("closing upstream {upstream} failed", failure=failure, upstream=name)


def build_upstreams(
    configs: Mapping[str, UpstreamConfig],
    reactor: Any,
    tenant_header: str = "X-Scope-OrgID",
    metrics: Optional[IRelayMetrics] = None,
    run_in_thread: Optional[ThreadRunner] = None,
    credentials: Optional[Mapping[str, ICredentials]] = None,
    worker: Union[int, str, None] = None,
) -> UpstreamsService:
    """
    One live upstream per configured one, by name, in an
    L{UpstreamsService} (use it as a mapping, and give it a parent so the
    upstreams are closed on shutdown).

    Reads CA files now, so a missing or broken one stops start-up instead
    of failing every request.

    @param run_in_thread: where file upstreams decode and write (the
        gateway's worker threads); the reactor's pool when not given.
    @param credentials: issued credentials (Azure AD) by upstream name, in
        place of the static ones the configuration names.
    @param worker: this gateway worker's index (or name): an upstream's
        spool is kept in C{worker-N} under its C{directory}
        (C{worker-0} in a gateway of one process).

    @raise ConfigError: listing every upstream that cannot be built and
        why (an unreadable or empty C{ca_file}, an unknown kind).
    """
    # The spool wraps relay upstreams (it depends on this package), so it
    # is imported here rather than when this module is.
    from sealgw.spool import add_spools, spool_metrics, spool_problems

    upstreams: dict[str, IUpstream] = {}
    problems: list[str] = []
    for name, config in configs.items():
        if isinstance(config, HTTPUpstreamConfig):
            try:
                upstreams[name] = HTTPUpstream(
                    config, reactor, tenant_header=tenant_header, metrics=metrics,
                    credentials=(credentials or {}).get(name),
                )
            except OSError as e:
                problems.append(f"upstreams.{name}.ca_file: {e.filename}: {e.strerror}")
            except ValueError as e:
                problems.append(f"upstreams.{name}.ca_file: {e}")
        elif isinstance(config, FileUpstreamConfig):
            upstreams[name] = FileUpstream(
                config, reactor, metrics=metrics, run_in_thread=run_in_thread
            )
        else:
            problems.append(f"upstreams.{name}: unknown upstream kind {type(config).__name__}")
    problems.extend(spool_problems(configs))
    if problems:
        raise ConfigError(problems)
    registry = getattr(metrics, "registry", None)
    spooled = add_spools(
        upstreams, configs, reactor, run_in_thread=run_in_thread, worker=worker,
        metrics=spool_metrics(registry) if registry is not None else None,
    )
    return UpstreamsService(spooled)
