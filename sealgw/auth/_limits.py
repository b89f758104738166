"""
The gate's view of the limiter: an identity's request counted under its
key, and a limit's refusal answered as a 429 (L{RateLimited}).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sealgw.auth._identity import Identity, RateLimited
from sealgw.config import RateLimitConfig
from sealgw.limits import ILimiter, ISlot, LocalLimiter, OverLimit


def _rate_limited(e: OverLimit) -> RateLimited:
    return RateLimited(str(e), e.retry_after, e.reason)


def _translate(failure: Failure) -> Failure:
    if isinstance(failure.value, OverLimit):
        return Failure(_rate_limited(failure.value))
    return failure


class Limiter:
    """
    Counts each identity's requests with an L{ILimiter}: this process's
    own buckets unless another is given (the shared store's).
    """

    def __init__(
        self, clock: IReactorTime, share: int = 1, backend: Optional[ILimiter] = None
    ) -> None:
        self.backend: ILimiter = backend if backend is not None else LocalLimiter(clock)
        self.backend.share = share

    @property
    def share(self) -> int:
        share: int = self.backend.share
        return share

    @share.setter
    def share(self, value: int) -> None:
        self.backend.share = value

    def acquire(
        self,
        identity: Identity,
        body_size: int,
        *,
        kind: str = "push",
        limits: Optional[RateLimitConfig] = None,
    ) -> Union[ISlot, Deferred[ISlot]]:
        """
        Admit one request of C{body_size} bytes, or refuse it.

        @param kind: which of the identity's limit sets counts the request
            (C{"push"} or C{"read"}); each has a state of its own.
        @param limits: the limits of that set; by default the identity's
            own.
        @raise RateLimited: (or fails with it) with the seconds until it
            would be admitted.
        """
        try:
            result = self.backend.admit(
                (kind, identity.checker, identity.name),
                identity.limits if limits is None else limits,
                body_size,
            )
        except OverLimit as e:
            raise _rate_limited(e) from None
        if isinstance(result, Deferred):
            return result.addErrback(_translate)
        return result

    def health(self) -> dict[str, Any]:
        return self.backend.health()

    def __len__(self) -> int:
        return len(self.backend)  # type: ignore[arg-type]
