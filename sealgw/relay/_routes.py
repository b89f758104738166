"""
A push route's targets: which upstreams a push of a given tenant goes to
(the route's own, the tenant's own, and the copies named in C{also}), and
delivering one push to all of them at once with one answer for the
client.

Each target is a whole upstream, with its own retries, spool and metrics:
a copy is not a second try of the same request, and one target's failure
neither stops nor cancels the others.  The client hears 2xx only when
every target accepted its copy (or spooled it); otherwise it hears the
failure that must be acted on first, so that nothing is lost silently:
one it should retry wins over one it must not (sending the push again
reaches the target that was unavailable; the one that refused it refuses
it again and the others take a sample twice, which stores ignore).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.python.failure import Failure

from sealgw.config import RouteConfig
from sealgw.relay._interfaces import (
    Delivery,
    DeliveryFailed,
    IUpstream,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sealgw.signals.push import Push


class PushRoute:
    """
    One push route's targets, by tenant, resolved to the live upstreams
    once, when the route is built.

    @ivar path: appended to every target's URL (the route's C{path}).
    """

    def __init__(self, config: RouteConfig, upstreams: Mapping[str, IUpstream]) -> None:
        """
        @raise KeyError: for an upstream C{config} names that C{upstreams}
            lacks (the configuration's checks refuse such a file first).
        """
        self.path = config.path
        self._default = tuple(upstreams[name] for name in config.targets(None))
        self._by_tenant = {
            tenant: tuple(upstreams[name] for name in config.targets(tenant))
            for tenant in config.tenants
        }

    def targets(self, tenant: Optional[str]) -> tuple[IUpstream, ...]:
        """
        The upstreams a push of C{tenant} goes to, the first being the one
        whose answer a route passes on (OTLP's C{partial_success}).
        """
        if tenant is None or not self._by_tenant:
            return self._default
        return self._by_tenant.get(tenant, self._default)

    def deliver(self, push: Push) -> Deferred[Delivery]:
        """
        Deliver C{push} at this route's path to each of its tenant's
        targets (its C{share}: the tenant whose data it is, even where the
        tenant travels as a label).

        Fires with the first target's L{Delivery} once every target has
        accepted; fails with the L{DeliveryFailed} L{worst} picks once
        every target has answered, when one did not.  Cancelling it
        cancels every copy still under way.
        """
        push = push.at_path(self.path)
        targets = self.targets(push.share)
        if len(targets) == 1:
            return targets[0].deliver(push)
        return deliver_all(targets, push)


    def deliver_each(self, pushes: Sequence[Push]) -> Deferred[Delivery]:
        """
        Deliver every one of C{pushes} (parts of one request, for
        different tenants) at once, each as L{deliver} does: the first
        push's L{Delivery} once all are accepted, else the L{worst}
        failure once all have answered.
        """
        return _gathered([self.deliver(push) for push in pushes])


def deliver_all(targets: Sequence[IUpstream], push: Push) -> Deferred[Delivery]:
    """
    C{push} delivered to every one of C{targets} at once: see
    L{PushRoute.deliver}.
    """
    return _gathered([target.deliver(push) for target in targets])


def _gathered(deliveries: list[Deferred[Delivery]]) -> Deferred[Delivery]:
    """
    The one answer for C{deliveries} under way at once: see L{_verdict}.
    Cancelling it cancels each of them still under way.
    """
    waiting: list[Deferred[Any]] = list(deliveries)
    gathered: Deferred[list[tuple[bool, Any]]] = DeferredList(waiting, consumeErrors=True)
    return gathered.addCallback(_verdict)


def _verdict(results: list[tuple[bool, Any]]) -> Delivery:
    failures: list[DeliveryFailed] = []
    for ok, result in results:
        if ok:
            continue
        assert isinstance(result, Failure)
        if result.check(CancelledError):
            result.raiseException()
        if not result.check(DeliveryFailed):
            # A fault of the gateway's own: the route answers it 500.
            result.raiseException()
        assert isinstance(result.value, DeliveryFailed)
        failures.append(result.value)
    if failures:
        raise worst(failures)
    delivery = results[0][1]
    assert isinstance(delivery, Delivery)
    return delivery


def worst(failures: Sequence[DeliveryFailed]) -> DeliveryFailed:
    """
    The failure the client hears when copies of one push failed in
    several ways: one it should retry (L{UpstreamUnavailable}) over one it
    must not (L{UpstreamRejected}), so that the target that did not get
    its copy gets it when the push is sent again; among those it should
    retry, the one asking to wait longest, so that no target is asked
    again sooner than it said; otherwise the first target's.
    """
    retryable = [f for f in failures if isinstance(f, UpstreamUnavailable)]
    if not retryable:
        rejected: list[DeliveryFailed] = [f for f in failures if isinstance(f, UpstreamRejected)]
        return (rejected or list(failures))[0]
    return max(retryable, key=lambda f: f.retry_after or 0.0)
