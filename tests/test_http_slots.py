"""
Tests for L{sealgw.http._slots}: an upstream's slots shared between
tenants, on a L{Clock}.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.http import Slot, SlotLimits, SlotRefused, UpstreamSlots, slot_metrics


def slots(
    in_flight: int = 4,
    share: float = 0.5,
    tenant_queue: int = 8,
    queue: int = 100,
    wait: float = 30.0,
    clock: Optional[Clock] = None,
    **kwargs: Any,
) -> UpstreamSlots:
    return UpstreamSlots(
        "mimir",
        "reads",
        SlotLimits(in_flight, share, tenant_queue, queue, wait),
        clock or Clock(),
        **kwargs,
    )


class LimitsTests(SynchronousTestCase):
    def test_per_tenant(self) -> None:
        self.assertEqual(SlotLimits(10, 0.5).per_tenant, 5)
        self.assertEqual(SlotLimits(10, 0.25).per_tenant, 2)
        self.assertEqual(SlotLimits(10, 1.0).per_tenant, 10)
        # At least one slot, however small the share.
        self.assertEqual(SlotLimits(1, 0.5).per_tenant, 1)
        self.assertEqual(SlotLimits(3, 0.01).per_tenant, 1)


class UpstreamSlotsTests(SynchronousTestCase):
    def test_free_slot_at_once(self) -> None:
        s = slots()
        slot = self.successResultOf(s.acquire("a"))
        self.assertEqual((s.in_use, s.held("a")), (1, 1))
        slot.release()
        slot.release()  # harmless
        self.assertEqual((s.in_use, s.held("a")), (0, 0))

    def test_share_leaves_room_for_others(self) -> None:
        """
        A tenant holding its share waits; another tenant is served at once.
        """
        s = slots(in_flight=4, share=0.5)
        a = [self.successResultOf(s.acquire("a")) for _ in range(2)]
        third = s.acquire("a")
        self.assertNoResult(third)
        b = self.successResultOf(s.acquire("b"))
        self.assertEqual((s.in_use, s.waiting, s.queued("a")), (3, 1, 1))
        # A's own release serves A's waiter.
        a[0].release()
        self.assertIsInstance(self.successResultOf(third), Slot)
        self.assertEqual(s.held("a"), 2)
        b.release()

    def test_round_robin(self) -> None:
        """
        Freed slots go to waiting tenants in turn: B's one waiting request
        does not wait behind A's queue.
        """
        s = slots(in_flight=2, share=1.0)
        first = [self.successResultOf(s.acquire("c")) for _ in range(2)]
        a = [s.acquire("a") for _ in range(5)]
        b = s.acquire("b")
        first[0].release()
        self.successResultOf(a[0])
        self.assertNoResult(b)
        first[1].release()
        # B next, though four of A's wait longer.
        self.successResultOf(b)
        for waiting in a[1:]:
            self.assertNoResult(waiting)

    def test_tenant_queue_full_at_share_is_429(self) -> None:
        s = slots(in_flight=4, share=0.5, tenant_queue=2)
        for _ in range(2):
            self.successResultOf(s.acquire("a"))
        s.acquire("a"), s.acquire("a")
        refused = self.failureResultOf(s.acquire("a"), SlotRefused).value
        self.assertEqual((refused.status, refused.reason), (429, "tenant_queue_full"))
        self.assertIn("tenant 'a' has its share of 2 reads in flight", refused.message)
        self.assertIn("upstreams.mimir.in_flight.tenant_queue", refused.message)
        self.assertGreaterEqual(refused.retry_after, 1)

    def test_tenant_queue_full_below_share_is_503(self) -> None:
        """
        A tenant waiting only because others fill the upstream is not
        overloading it: 503.
        """
        s = slots(in_flight=2, share=0.5, tenant_queue=1)
        self.successResultOf(s.acquire("a"))
        self.successResultOf(s.acquire("b"))
        s.acquire("c")
        refused = self.failureResultOf(s.acquire("c"), SlotRefused).value
        self.assertEqual(refused.status, 503)
        self.assertIn("upstream 'mimir' has all its 2 reads slots in use", refused.message)

    def test_upstream_queue_full_is_503(self) -> None:
        s = slots(in_flight=1, share=1.0, tenant_queue=10, queue=2)
        self.successResultOf(s.acquire("a"))
        s.acquire("b"), s.acquire("c")
        refused = self.failureResultOf(s.acquire("d"), SlotRefused).value
        self.assertEqual((refused.status, refused.reason), (503, "upstream_queue_full"))
        self.assertIn("upstreams.mimir.in_flight.queue", refused.message)

    def test_wait_timeout(self) -> None:
        clock = Clock()
        s = slots(in_flight=2, share=0.5, wait=10.0, clock=clock)
        self.successResultOf(s.acquire("a"))
        waiting = s.acquire("a")
        clock.advance(9.9)
        self.assertNoResult(waiting)
        clock.advance(0.1)
        refused = self.failureResultOf(waiting, SlotRefused).value
        self.assertEqual((refused.status, refused.reason), (429, "wait_timeout"))
        self.assertIn("no free slot within 10s", refused.message)
        self.assertEqual((s.waiting, s.queued("a")), (0, 0))

    def test_granted_waiter_timer_cancelled(self) -> None:
        clock = Clock()
        s = slots(in_flight=1, share=1.0, clock=clock)
        first = self.successResultOf(s.acquire("a"))
        waiting = s.acquire("b")
        first.release()
        self.successResultOf(waiting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_leaves_queue(self) -> None:
        clock = Clock()
        s = slots(in_flight=1, share=1.0, clock=clock)
        first = self.successResultOf(s.acquire("a"))
        gone = s.acquire("b")
        kept = s.acquire("c")
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.assertEqual((s.waiting, s.queued("b")), (0 + 1, 0))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        first.release()
        self.successResultOf(kept)

    def test_waiter_callback_may_release(self) -> None:
        """
        A waiter whose callback gives its slot back at once (its request
        failed synchronously) leaves the state whole.
        """
        s = slots(in_flight=1, share=1.0)
        first = self.successResultOf(s.acquire("a"))
        second: Deferred[Slot] = s.acquire("b")
        third = s.acquire("c")
        second.addCallback(lambda slot: slot.release())
        first.release()
        self.successResultOf(third)
        self.assertEqual((s.in_use, s.waiting), (1, 0))

    def test_no_tenant_no_share(self) -> None:
        """
        Requests of no tenant may take every slot.
        """
        s = slots(in_flight=3, share=0.5)
        for _ in range(3):
            self.successResultOf(s.acquire(None))
        self.assertEqual(s.share(None), 3)
        self.assertNoResult(s.acquire("a"))

    def test_report(self) -> None:
        s = slots(in_flight=4)
        self.successResultOf(s.acquire("a"))
        self.assertEqual(s.report(), {"in_use": 1, "limit": 4, "waiting": 0})

    def test_metrics(self) -> None:
        registry = CollectorRegistry()
        families = slot_metrics(registry)
        self.assertIs(slot_metrics(registry), families)
        s = slots(
            in_flight=1, share=1.0, tenant_queue=1,
            metrics=families.for_slots("mimir", "reads", 1),
        )
        self.successResultOf(s.acquire("a"))
        s.acquire("b")
        self.failureResultOf(s.acquire("b"), SlotRefused)
        labels = {"upstream": "mimir", "kind": "reads"}
        value = registry.get_sample_value
        self.assertEqual(value("sealgw_upstream_slots_in_use", labels), 1)
        self.assertEqual(value("sealgw_upstream_slots_limit", labels), 1)
        self.assertEqual(value("sealgw_upstream_slots_waiting", labels), 1)
        self.assertEqual(
            value("sealgw_upstream_slots_refused_total", {**labels, "reason": "tenant_queue_full"}),
            1,
        )


#: C{None}: pushes whose tenant is in their body, held to no share.
TENANTS = ("a", "b", "c", None)


class SlotsMachine(RuleBasedStateMachine):
    """
    Requests of three tenants arrive, are released, cancelled and time
    out in any order; the scheduler is checked against a plain model of
    who holds and who waits, and for its promises.
    """

    #: Each tenant's share: two of the three slots.
    share = 0.7

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.in_flight = 3
        self.slots = UpstreamSlots(
            "up", "pushes", SlotLimits(self.in_flight, self.share, 3, 5, 10.0), self.clock
        )
        self.per_tenant = self.slots.limits.per_tenant
        self.held: list[Slot] = []
        self.waiting: list[tuple[Optional[str], Deferred[Slot]]] = []
        self.refused = 0
        #: For each tenant waiting below its share: slots given to other
        #: tenants since it was last served or began to wait so.
        self.passed_over: dict[Optional[str], int] = {}

    def _eligible(self) -> set[Optional[str]]:
        s = self.slots
        return {t for t, _ in self.waiting if s.held(t) < s.share(t)}

    def _collect(self, eligible_before: set[Optional[str]]) -> None:
        still = []
        for tenant, d in self.waiting:
            if d.called:
                result: list[Any] = []
                d.addBoth(result.append)
                if isinstance(result[0], Slot):
                    self.held.append(result[0])
                    self.passed_over[tenant] = 0
                    for other in eligible_before - {tenant}:
                        self.passed_over[other] = self.passed_over.get(other, 0) + 1
            else:
                still.append((tenant, d))
        self.waiting = still
        self._forget_served()

    def _forget_served(self) -> None:
        eligible = self._eligible()
        for tenant in list(self.passed_over):
            if tenant not in eligible:
                del self.passed_over[tenant]

    @rule(tenant=st.sampled_from(TENANTS))
    def acquire(self, tenant: Optional[str]) -> None:
        d = self.slots.acquire(tenant)
        if d.called:
            result: list[Any] = []
            d.addBoth(result.append)
            if isinstance(result[0], Slot):
                self.held.append(result[0])
            else:
                assert result[0].check(SlotRefused)
                self.refused += 1
        else:
            self.waiting.append((tenant, d))

    @precondition(lambda self: self.held)
    @rule(i=st.integers(min_value=0))
    def release(self, i: int) -> None:
        slot = self.held.pop(i % len(self.held))
        eligible = self._eligible()
        slot.release()
        self._collect(eligible)

    @precondition(lambda self: self.waiting)
    @rule(i=st.integers(min_value=0))
    def cancel(self, i: int) -> None:
        tenant, d = self.waiting.pop(i % len(self.waiting))
        d.cancel()
        self._forget_served()
        result: list[Any] = []
        d.addBoth(result.append)
        assert result[0].check(CancelledError)

    @rule(seconds=st.sampled_from([1.0, 5.0, 10.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        still = []
        for entry in self.waiting:
            d = entry[1]
            if d.called:
                result: list[Any] = []
                d.addBoth(result.append)
                assert result[0].check(SlotRefused)
            else:
                still.append(entry)
        self.waiting = still
        self._forget_served()

    @invariant()
    def counts_match_model(self) -> None:
        s = self.slots
        assert s.in_use == len(self.held) <= self.in_flight
        assert s.waiting == len(self.waiting)
        for tenant in TENANTS:
            held = sum(1 for slot in self.held if slot.tenant == tenant)
            assert s.held(tenant) == held <= (self.per_tenant if tenant else self.in_flight)
            assert s.queued(tenant) == sum(1 for t, _ in self.waiting if t == tenant)

    @invariant()
    def no_waiter_with_a_slot_free_for_it(self) -> None:
        # Work-conserving within the shares: nobody waits while a slot is
        # free and its tenant is below its share.
        s = self.slots
        if s.in_use < self.in_flight:
            for tenant, _ in self.waiting:
                assert tenant is not None and s.held(tenant) >= self.per_tenant

    @invariant()
    def round_robin(self) -> None:
        # A tenant waiting below its share is passed over by at most one
        # slot for each other tenant: it never waits behind a long queue.
        for tenant, count in self.passed_over.items():
            assert count <= len(TENANTS) - 1, (tenant, count)

    @invariant()
    def timers_only_for_waiters(self) -> None:
        assert len(self.clock.getDelayedCalls()) == len(self.waiting)


class WholeShareMachine(SlotsMachine):
    """
    The same with no tenant held to a share: only the turns keep a
    tenant from taking every slot freed.
    """

    share = 1.0


class SlotsModelTests(SynchronousTestCase):
    def run_machine(self, machine: type[SlotsMachine]) -> None:
        case = machine.TestCase
        case.settings = settings(
            derandomize=True, deadline=None, max_examples=300, stateful_step_count=40
        )
        case().runTest()

    def test_model(self) -> None:
        self.run_machine(SlotsMachine)

    def test_model_whole_share(self) -> None:
        self.run_machine(WholeShareMachine)


class FairnessTests(SynchronousTestCase):
    def test_bounded_wait(self) -> None:
        """
        With every tenant keeping its queue full, a waiting tenant is
        served within as many grants as there are tenants waiting.
        """
        s = slots(in_flight=4, share=1.0, tenant_queue=50, queue=1000)
        held: deque[Slot] = deque(self.successResultOf(s.acquire("x")) for _ in range(4))
        for tenant in ("a", "b", "c"):
            for _ in range(20):
                s.acquire(tenant).addCallback(held.append)
        late = s.acquire("d")
        grants = 0
        while not late.called:
            held.popleft().release()
            grants += 1
        self.assertLessEqual(grants, 4)
