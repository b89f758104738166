"""
When the client library sends a payload again: exponential backoff with
jitter, and the upstream's C{Retry-After} when it gives one.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random as _random
from collections.abc import Callable
from typing import Optional

import attr

#: Returns a float in [0, 1); C{random.random} unless a test pins it.
RandomSource = Callable[[], float]


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
        exponent = min(max(failures - 1, 0), 62)
        step = min(self.maximum, self.initial * (2.0**exponent))
        return step / 2 + (step / 2) * self.random()


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """
    Seconds to wait from a C{Retry-After} header: delay-seconds or an HTTP
    date (turned into a delay from C{now}, the reactor's clock), or L{None}
    when there is no usable header.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP dates are GMT; "-0000" comes back naive.
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)
