"""
Sharing one upstream's requests in flight fairly between tenants.

An upstream gets a bound on requests in flight at once (I{slots}), and
each tenant a share of it: one tenant's slow queries (or a burst of its
pushes) fill at most its share, so another tenant's request still finds a
free slot at once.  A request beyond its tenant's share, or arriving when
every slot is taken, waits in its own tenant's queue; a freed slot goes to
the waiting tenants in turn (round-robin), so a tenant with one request
waiting never waits behind another tenant's long queue.

Waiting is bounded three ways, each answered with a L{SlotRefused} the
caller turns into a status (L{sealgw.http.failure_verdict}):

  - a tenant's queue is full: C{429} when that tenant holds its whole
    share (the overload is its own), C{503} otherwise (the upstream is
    saturated by others);
  - every tenant's queues together are full: C{503};
  - a request waited longer than its wait timeout: C{429} or C{503} by
    the same rule as a full queue.

Pure logic on an injected clock, with no knowledge of HTTP: the relay
takes a slot per request attempt, the read proxy one per read, held until
the answer has been streamed.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Optional

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import Interface, implementer


class SlotRefused(Exception):
    """
    A request was not given a slot: it was never sent.

    @ivar status: C{429} when the tenant holds its whole share (its own
        overload), C{503} when the upstream as a whole is saturated.
    @ivar reason: the metrics label: C{tenant_queue_full},
        C{upstream_queue_full} or C{wait_timeout}.
    @ivar retry_after: seconds the client should wait before trying again.
    """

    def __init__(self, status: int, reason: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class ISlotMetrics(Interface):
    """
    Where a scheduler's state goes; L{sealgw.http.SlotMetrics} puts it in a
    Prometheus registry.  Never labelled by tenant: tenant ids are
    unbounded.
    """

    def update(in_use: int, waiting: int) -> None:
        """
        The slots now in use and the requests now waiting.
        """

    def refused(reason: str) -> None:
        """
        A request was refused a slot, for C{reason} (see L{SlotRefused}).
        """


@implementer(ISlotMetrics)
class NoSlotMetrics:
    def update(self, in_use: int, waiting: int) -> None:
        pass

    def refused(self, reason: str) -> None:
        pass


@attr.frozen
class SlotLimits:
    """
    One upstream's bounds for one kind of request (pushes or reads).

    @ivar in_flight: requests in flight at once.
    @ivar tenant_share: the fraction of C{in_flight} one tenant may hold,
        in C{(0, 1]}; at least one slot whatever the fraction.
    @ivar tenant_queue: requests one tenant may have waiting.
    @ivar queue: requests every tenant together may have waiting.
    @ivar wait: the longest a request waits for a slot, in seconds.
    """

    in_flight: int
    tenant_share: float = 0.5
    tenant_queue: int = 64
    queue: int = 1024
    wait: float = 30.0

    @property
    def per_tenant(self) -> int:
        """
        The slots one tenant may hold.
        """
        return max(1, min(self.in_flight, math.floor(self.in_flight * self.tenant_share)))


class Slot:
    """
    One request's right to be in flight.  Give it back with L{release}
    however the request ends; releasing twice is harmless.
    """

    __slots__ = ("tenant", "_owner")

    def __init__(self, owner: UpstreamSlots, tenant: Optional[str]) -> None:
        self.tenant = tenant
        self._owner: Optional[UpstreamSlots] = owner

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release(self.tenant)


class _Waiter:
    """
    A request waiting for a slot: its tenant, the Deferred its caller
    awaits (cancelling it leaves the queue) and its wait's timer.
    """

    __slots__ = ("tenant", "deferred", "timer", "_owner")

    def __init__(self, owner: UpstreamSlots, tenant: Optional[str]) -> None:
        self.tenant = tenant
        self._owner = owner
        self.deferred: Deferred[Slot] = Deferred(self._cancel)
        self.timer: Optional[IDelayedCall] = None

    def _cancel(self, _: Deferred[Slot]) -> None:
        # Deferred.cancel fails it with CancelledError afterwards.
        self._owner._leave(self)


class UpstreamSlots:
    """
    The slots of one upstream for one kind of request, and the only owner
    of who holds and who waits for them.

    @param name: the upstream's name, for messages.
    @param kind: C{pushes} or C{reads}, for messages.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        limits: SlotLimits,
        clock: IReactorTime,
        metrics: Optional[ISlotMetrics] = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.limits = limits
        self._clock = clock
        self._metrics: ISlotMetrics = metrics if metrics is not None else NoSlotMetrics()
        self._per_tenant = limits.per_tenant
        self.in_use = 0
        self.waiting = 0
        #: Slots held, by tenant; tenants holding none are not kept.
        self._held: dict[Optional[str], int] = {}
        #: Requests waiting, by tenant, oldest first; no empty queues.
        self._queues: dict[Optional[str], deque[_Waiter]] = {}
        #: Tenants with requests waiting that may take a slot as soon as
        #: one is free (below their share), in the order they are served.
        self._ready: deque[Optional[str]] = deque()

    def __repr__(self) -> str:
        return f"<UpstreamSlots {self.name!r} {self.kind}: {self.in_use}/{self.limits.in_flight}>"

    def share(self, tenant: Optional[str]) -> int:
        """
        The slots C{tenant} may hold: its share, or every slot for requests
        of no tenant (a push to an upstream that keeps tenants apart by a
        label carries its tenant inside its body, where the relay does not
        look).
        """
        return self._per_tenant if tenant is not None else self.limits.in_flight

    def held(self, tenant: Optional[str]) -> int:
        """
        The slots C{tenant} holds now.
        """
        return self._held.get(tenant, 0)

    def queued(self, tenant: Optional[str]) -> int:
        """
        The requests of C{tenant} waiting now.
        """
        queue = self._queues.get(tenant)
        return len(queue) if queue is not None else 0

    def report(self) -> dict[str, int]:
        """
        For C{/health}: slots in use, their bound, requests waiting.
        """
        return {"in_use": self.in_use, "limit": self.limits.in_flight, "waiting": self.waiting}

    def acquire(self, tenant: Optional[str]) -> Deferred[Slot]:
        """
        A slot for a request of C{tenant}: at once when one is free and
        the tenant is below its share, else after waiting its turn.

        Fails with L{SlotRefused} when the request may not wait (or waited
        too long).  Cancelling a wait leaves the queue.
        """
        held = self._held.get(tenant, 0)
        if self.in_use < self.limits.in_flight and held < self.share(tenant):
            # Nobody who could take this slot is waiting: a free slot is
            # always handed to the ready tenants first (see _grant).
            self._take(tenant, held)
            self._metrics.update(self.in_use, self.waiting)
            return succeed(Slot(self, tenant))
        queue = self._queues.get(tenant)
        if queue is not None and len(queue) >= self.limits.tenant_queue:
            return _failed(
                self._refusal(
                    tenant,
                    "tenant_queue_full",
                    f"{len(queue)} requests of tenant {tenant!r} are waiting already "
                    f"(upstreams.{self.name}.in_flight.tenant_queue)",
                )
            )
        if self.waiting >= self.limits.queue:
            return _failed(
                self._refusal(
                    tenant,
                    "upstream_queue_full",
                    f"{self.waiting} requests are waiting already "
                    f"(upstreams.{self.name}.in_flight.queue)",
                    whose=False,
                )
            )
        return self._wait(tenant, held)

    # -- internals ------------------------------------------------------------

    def _take(self, tenant: Optional[str], held: int) -> None:
        self._held[tenant] = held + 1
        self.in_use += 1

    def _wait(self, tenant: Optional[str], held: int) -> Deferred[Slot]:
        waiter = _Waiter(self, tenant)
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = deque()
            if held < self.share(tenant):
                # Below its share: it waits only for a free slot.
                self._ready.append(tenant)
        queue.append(waiter)
        self.waiting += 1
        waiter.timer = self._clock.callLater(self.limits.wait, self._expire, waiter)
        self._metrics.update(self.in_use, self.waiting)
        return waiter.deferred

    def _leave(self, waiter: _Waiter) -> None:
        """
        Take C{waiter} out of its queue (cancelled or timed out).
        """
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None
        queue = self._queues.get(waiter.tenant)
        if queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        self.waiting -= 1
        if not queue:
            del self._queues[waiter.tenant]
            if waiter.tenant in self._ready:
                self._ready.remove(waiter.tenant)
        self._metrics.update(self.in_use, self.waiting)

    def _expire(self, waiter: _Waiter) -> None:
        waiter.timer = None
        self._leave(waiter)
        waiter.deferred.errback(
            self._refusal(
                waiter.tenant,
                "wait_timeout",
                f"no free slot within {self.limits.wait:g}s",
            )
        )

    def _refusal(
        self, tenant: Optional[str], reason: str, why: str, whose: bool = True
    ) -> SlotRefused:
        """
        A refusal, 429 when C{tenant} holds its whole share (its own
        overload), 503 when the upstream is saturated.
        """
        self._metrics.refused(reason)
        retry_after = max(1.0, min(self.limits.wait, 5.0))
        if whose and tenant is not None and self._held.get(tenant, 0) >= self._per_tenant:
            return SlotRefused(
                429,
                reason,
                f"tenant {tenant!r} has its share of {self._per_tenant} {self.kind} in flight "
                f"to upstream {self.name!r} (upstreams.{self.name}.in_flight.tenant_share) "
                f"and {why}",
                retry_after,
            )
        return SlotRefused(
            503,
            reason,
            f"upstream {self.name!r} has all its {self.limits.in_flight} {self.kind} slots "
            f"in use (upstreams.{self.name}.in_flight.{self.kind}) and {why}",
            retry_after,
        )

    def _release(self, tenant: Optional[str]) -> None:
        held = self._held[tenant] - 1
        if held:
            self._held[tenant] = held
        else:
            del self._held[tenant]
        self.in_use -= 1
        if held == self.share(tenant) - 1 and tenant in self._queues:
            # It was at its share with requests waiting: now it may be
            # served again, after the tenants already in line.
            self._ready.append(tenant)
        self._grant()

    def _grant(self) -> None:
        """
        Hand free slots to the ready tenants in turn, one request each per
        round.  The state is settled before any waiter hears: a waiter's
        callbacks may take or release slots themselves.
        """
        granted: list[_Waiter] = []
        while self.in_use < self.limits.in_flight and self._ready:
            tenant = self._ready.popleft()
            queue = self._queues[tenant]
            waiter = queue.popleft()
            self.waiting -= 1
            held = self._held.get(tenant, 0)
            self._take(tenant, held)
            if not queue:
                del self._queues[tenant]
            elif held + 1 < self.share(tenant):
                self._ready.append(tenant)
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.timer = None
            granted.append(waiter)
        self._metrics.update(self.in_use, self.waiting)
        for waiter in granted:
            waiter.deferred.callback(Slot(self, waiter.tenant))


def _failed(refusal: SlotRefused) -> Deferred[Slot]:
    failed: Deferred[Slot] = Deferred()
    failed.errback(refusal)
    return failed
