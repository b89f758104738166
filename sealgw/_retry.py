"""
Retry timing shared by the gateway and the client library: exponential
backoff with "equal jitter", and reading a C{Retry-After} header.

Pure and free of sealgw's other packages, so that applications using
L{sealgw.client} import it without the daemon's configuration and relay.
"""

from __future__ import annotations

import datetime
import email.utils
import math
from collections.abc import Callable
from typing import Optional

#: Returns a float in [0, 1); C{random.random} unless a test pins it.
RandomSource = Callable[[], float]


def equal_jitter(
    initial: float, maximum: float, retries_so_far: int, random: RandomSource
) -> float:
    """
    The wait before retry number C{retries_so_far + 1}: C{initial * 2**n},
    capped at C{maximum}, of which half is always waited and half is
    random.  The floor stops a crowd that saw the same failure from coming
    back in the same instant; the random half spreads them out.
    """
    exponent = min(max(retries_so_far, 0), 62)  # 2**62 dwarfs any cap
    step = max(0.0, min(maximum, initial * (2.0**exponent)))
    return step / 2 + (step / 2) * random()


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """
    Seconds to wait from a C{Retry-After} header, or L{None} when there is
    none or it makes no sense.

    Both forms of RFC 9110 are understood: delay-seconds (C{"120"}; a
    fraction, not allowed but sent in the wild, too) and an HTTP date,
    turned into a delay from C{now} (seconds since the epoch, the
    reactor's clock).  A date in the past means "now" (0).
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
