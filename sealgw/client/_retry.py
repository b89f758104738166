"""
When the client library sends a payload again: exponential backoff with
jitter, and the upstream's C{Retry-After} when it gives one.
"""

from __future__ import annotations

import random as _random
from typing import Optional

import attr

from sealgw._retry import RandomSource, equal_jitter, parse_retry_after

__all__ = ["Backoff", "RandomSource", "parse_retry_after"]


@attr.frozen
class Backoff:
    """
    How long to wait after consecutive failures.

    @ivar initial: the wait after the first failure (before jitter).
    @ivar maximum: the longest computed wait.
    @ivar max_retry_after: the longest C{Retry-After} honoured; a gateway
        asking for more is believed only this far, so that a nonsense
        header cannot park a client for a day.
    @ivar random: the jitter source.
    """

    initial: float = 1.0
    maximum: float = 60.0
    max_retry_after: float = 300.0
    random: RandomSource = attr.field(default=_random.random, eq=False)

    def delay(self, failures: int, retry_after: Optional[float] = None) -> float:
        """
        The wait before the next attempt after C{failures} failures in a
        row (at least 1).

        "Equal jitter": half of C{initial * 2**(failures - 1)} (capped at
        C{maximum}) is always waited and the other half is random, so that
        many clients that saw the same outage do not all come back in the
        same instant, yet none comes back at once.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return equal_jitter(self.initial, self.maximum, failures - 1, self.random)
