"""
The shared limiter against the plain local buckets, model-based: any
sequence of requests, releases, time passing, new limits and the store
going down, slow and coming back never admits more than the local buckets
would (while shared, it admits exactly what they would), never fails a
request for the store's sake, and leaves no place in flight behind.
"""

from __future__ import annotations

from typing import Any, Optional

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import RateLimitConfig
from sealgw.limits import LEASE_TTL, ISlot, LocalLimiter, OverLimit, SharedLimiter
from sealgw.testing import MemoryLimitStore

KEY = ("push", "token_file", "alice")
LIMITS = st.builds(
    RateLimitConfig,
    requests_per_second=st.sampled_from([None, 1.0, 5.0]),
    burst=st.sampled_from([None, 1, 3]),
    bytes_per_second=st.sampled_from([None, 100, 1000]),
    max_concurrent=st.sampled_from([None, 1, 2]),
)


class LimiterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = MemoryLimitStore(self.clock)
        self.shared = SharedLimiter(self.store, LocalLimiter(self.clock), self.clock, 0.05)
        self.shared.startService()
        self.model = LocalLimiter(self.clock)
        self.limits = RateLimitConfig(requests_per_second=5.0, burst=3, max_concurrent=2)
        self.slots: list[tuple[ISlot, Optional[ISlot]]] = []
        # Whether every decision so far was the store's, as the model's.
        self.exact = True
        # Whether a release was lost (the store down): its place is freed
        # when its lease expires.
        self.lost = False

    def _decide(self, limiter: Any, size: int) -> tuple[Optional[ISlot], Optional[str]]:
        try:
            result = limiter.admit(KEY, self.limits, size)
        except OverLimit as e:
            return None, e.reason
        if isinstance(result, Deferred):
            outcome: list[Any] = []
            result.addBoth(outcome.append)
            if not outcome:
                self.clock.advance(0.05)  # the timeout: decided locally
                self.exact = False
            (value,) = outcome
            if isinstance(value, Exception) or hasattr(value, "value"):
                error = getattr(value, "value", value)
                assert isinstance(error, OverLimit), error  # never a failure of the store
                return None, error.reason
            return value, None
        return result, None

    @rule(size=st.integers(0, 1500))
    def request(self, size: int) -> None:
        mine, mine_reason = self._decide(self.shared, size)
        theirs, their_reason = self._decide(self.model, size)
        if self.exact and self.store.state == "up" and self.shared.shared:
            assert (mine is None) == (theirs is None), (mine_reason, their_reason)
            assert mine_reason == their_reason
        if mine is not None and theirs is None:
            # Only after the store was away may the limiter admit more.
            assert not self.exact
        if mine is not None:
            self.slots.append((mine, theirs))
        elif theirs is not None:
            theirs.release()

    @precondition(lambda self: self.slots)
    @rule(index=st.integers(0, 100))
    def release(self, index: int) -> None:
        mine, theirs = self.slots.pop(index % len(self.slots))
        if self.store.state == "down":
            self.lost = True
        mine.release()
        if theirs is not None:
            theirs.release()

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 3.0, LEASE_TTL]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if seconds >= LEASE_TTL:
            self.lost = False

    @rule(limits=LIMITS)
    def new_limits(self, limits: RateLimitConfig) -> None:
        self.limits = limits
        # The store carries levels over where the local buckets start
        # full: from here on the two may differ in the store's favour.
        self.exact = False

    @rule(state=st.sampled_from(["down", "slow", "up"]))
    def store_state(self, state: str) -> None:
        self.store.state = state
        if state != "up":
            self.exact = False
        else:
            self.store.answer_slow()

    @invariant()
    def no_place_left_behind(self) -> None:
        if self.store.state == "up" and not self.slots and not self.lost:
            self.store.answer_slow()
            assert self.store.in_flight(KEY) == 0, self.store.owner.leases

    def teardown(self) -> None:
        self.shared.stopService()


class LimiterModelTests(SynchronousTestCase):
    def test_model(self) -> None:
        case = LimiterMachine.TestCase
        case.settings = settings(derandomize=True, max_examples=600, stateful_step_count=40, deadline=None)
        case("runTest").runTest()
