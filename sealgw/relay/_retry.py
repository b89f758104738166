"""
When to try an upstream request again, as pure functions of the
configuration, the clock and a random source, so tests can pin all three.
"""

from __future__ import annotations

from typing import Optional

import attr

from sealgw._retry import RandomSource, equal_jitter
from sealgw._retry import parse_retry_after as parse_text
from sealgw.config import RetryConfig

__all__ = ["RandomSource", "RetryDecision", "backoff", "next_retry", "parse_retry_after"]

def backoff(retry: RetryConfig, retries_so_far: int, random: RandomSource) -> float:
    """
    How long to wait before retry number C{retries_so_far + 1}: equal
    jitter between C{initial_backoff} and C{max_backoff}.
    """
    return equal_jitter(retry.initial_backoff, retry.max_backoff, retries_so_far, random)


def parse_retry_after(value: Optional[bytes], now: float) -> Optional[float]:
    """
    L{sealgw._retry.parse_retry_after} of a raw header value.
    """
    if value is None:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return parse_text(text, now)


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
