"""
Waiting for a Deferred with a time limit, in a way that tells a timeout, a
cancellation by our caller and a failure of the operation apart.

C{Deferred.addTimeout} is not enough here: cancelling an Agent request
fails it with C{ResponseNeverReceived}, not C{CancelledError}, so after a
cancellation the code awaiting it could not know it was cancelled and
might retry a request for a client that has gone away.
"""

from __future__ import annotations

from typing import Any, Optional, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")


class OperationTimedOut(Exception):
    """
    An operation given to L{bounded} did not finish in time.
    """

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} took longer than {seconds:g}s")
        self.what = what
        self.seconds = seconds


def bounded(operation: Deferred[T], seconds: float, clock: IReactorTime, what: str) -> Deferred[T]:
    """
    A Deferred with C{operation}'s result, or failing with
    L{OperationTimedOut} after C{seconds} (C{operation} is then cancelled).

    Cancelling the returned Deferred cancels C{operation} and always fails
    with C{CancelledError}, whatever C{operation} fails with when cancelled.
    Failures of C{operation} that arrive after a timeout or a cancellation
    are consumed, so they are not logged as unhandled.
    """
    settled = False
    timer: Optional[IDelayedCall] = None

    def settle() -> None:
        nonlocal settled
        settled = True
        if timer is not None and timer.active():
            timer.cancel()

    def cancel(_: Deferred[T]) -> None:
        # Deferred.cancel fails the result with CancelledError once we
        # return without having fired it.
        settle()
        operation.cancel()

    result: Deferred[T] = Deferred(cancel)

    def expire() -> None:
        settle()
        operation.cancel()
        result.errback(Failure(OperationTimedOut(what, seconds)))

    def relay(outcome: Any) -> None:
        if settled:
            return None
        settle()
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)
        return None

    timer = clock.callLater(seconds, expire)
    operation.addBoth(relay)
    return result
