"""
An in-memory upstream: keeps every push it is given and answers from a
script, so push routes can be tested without sockets or disks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from sealgw.relay import Delivery, DeliveryFailed, IUpstream
from sealgw.signals.push import Push

#: What a delivery ends as: a 2xx L{Delivery}, a failure the relay would
#: raise (L{sealgw.relay.UpstreamRejected}, L{sealgw.relay.UpstreamUnavailable}),
#: or a L{Deferred} the test fires (or leaves hanging) itself.
Outcome = Union[Delivery, DeliveryFailed, "Deferred[Delivery]"]

ACCEPTED = Delivery(status=204, body=b"", attempts=1)


@implementer(IUpstream)
class MemoryUpstream:
    """
    @ivar pushes: every push given to L{deliver}, in order, whatever became
        of it.
    @ivar delivered: the pushes that were accepted.
    @ivar closed: whether L{close} was called.
    """

    def __init__(self, name: str = "memory", outcomes: Iterable[Outcome] = ()) -> None:
        self.name = name
        self.pushes: list[Push] = []
        self.delivered: list[Push] = []
        self.closed = False
        self._outcomes = list(outcomes)

    def __repr__(self) -> str:
        return f"<MemoryUpstream {self.name!r}>"

    def play(self, *outcomes: Outcome) -> None:
        """
        Answer the next deliveries with C{outcomes}, in order; once they are
        used up, every push is accepted.
        """
        self._outcomes.extend(outcomes)

    def deliver(self, push: Push) -> Deferred[Delivery]:
        self.pushes.append(push)
        outcome = self._outcomes.pop(0) if self._outcomes else ACCEPTED
        if isinstance(outcome, DeliveryFailed):
            return fail(outcome)
        if isinstance(outcome, Deferred):
            return outcome.addCallback(self._accepted, push)
        self.delivered.append(push)
        return succeed(outcome)

    def _accepted(self, delivery: Delivery, push: Push) -> Delivery:
        self.delivered.append(push)
        return delivery

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)
