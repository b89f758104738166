"""
When to try an upstream request again, as pure functions of the
configuration, the clock and a random source, so tests can pin all three.
"""

from __future__ import annotations

import datetime
import email.utils
import math
from collections.abc import Callable
from typing import Optional

import attr

from sealgw.config import RetryConfig

#: Returns a float in [0, 1); C{random.random} in production.
RandomSource = Callable[[], float]


def backoff(retry: RetryConfig, retries_so_far: int, random: RandomSource) -> float:
    """
    How long to wait before retry number C{retries_so_far + 1}.

    Exponential (C{initial_backoff * 2**n}, capped at C{max_backoff}) with
    "equal jitter": half the step is always waited, the other half is
    random.  Keeping a floor stops a crowd of gateways that all saw the same
    5xx from hammering a recovering upstream in the same instant, while the
    random half still spreads them out.
    """
    exponent = min(retries_so_far, 62)  # 2**62 already dwarfs any max_backoff
    step = min(retry.max_backoff, retry.initial_backoff * (2.0**exponent))
    step = max(step, 0.0)
    return step / 2 + (step / 2) * random()


def parse_retry_after(value: Optional[bytes], now: float) -> Optional[float]:
    """
    Seconds to wait from a C{Retry-After} header, or C{None} when there is
    none or it makes no sense.

    Both forms of RFC 9110 are understood: delay-seconds (C{"120"}) and an
    HTTP date, which is turned into a delay from C{now} (seconds since the
    epoch, the reactor's clock).  A date in the past means "now" (0).
    """
    if value is None:
        return None
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # Not allowed by the RFC but sent in the wild ("1.5"); negative and
        # non-finite values are nonsense.
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP dates are always GMT; parsedate_to_datetime leaves "-0000"
        # naive.
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


@attr.frozen
class RetryDecision:
    """
    The outcome of L{next_retry}: wait C{delay} seconds, or give up
    (C{delay is None}) because C{why}.
    """

    delay: Optional[float]
    why: str = ""


def next_retry(
    retry: RetryConfig,
    attempts_made: int,
    now: float,
    started: float,
    random: RandomSource,
    retry_after: Optional[float] = None,
) -> RetryDecision:
    """
    Decide whether and when to make attempt C{attempts_made + 1}.

    A C{Retry-After} from the upstream replaces the computed backoff: the
    upstream knows best when it will have room again.  No retry is started
    when it would begin after C{started + retry.deadline}: past that point
    the client has likely given up and will send the data again itself.

    @param attempts_made: requests already made, at least 1.
    @param started: when the push came in (C{Push.received_at}).
    """
    if attempts_made >= retry.attempts:
        return RetryDecision(None, f"gave up after {attempts_made} attempts")
    if retry_after is not None:
        delay = max(0.0, retry_after)
    else:
        delay = backoff(retry, attempts_made - 1, random)
    if now + delay > started + retry.deadline:
        return RetryDecision(
            None, f"gave up after {attempts_made} attempts: the retry deadline would pass"
        )
    return RetryDecision(delay)
