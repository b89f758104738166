"""
Tests for the relay's retry policy and Retry-After parsing.
"""

from __future__ import annotations

import email.utils

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import RetryConfig
from sealgw.relay import backoff, next_retry, parse_retry_after

RETRY = RetryConfig(attempts=4, initial_backoff=0.25, max_backoff=5.0, deadline=30.0)


class BackoffTests(SynchronousTestCase):
    def test_doubles_from_initial(self) -> None:
        """
        With the random half at its top, each step doubles.
        """
        self.assertEqual(
            [backoff(RETRY, n, lambda: 1.0) for n in range(4)], [0.25, 0.5, 1.0, 2.0]
        )

    def test_equal_jitter_floor(self) -> None:
        """
        Half of each step is always waited.
        """
        self.assertEqual(
            [backoff(RETRY, n, lambda: 0.0) for n in range(4)], [0.125, 0.25, 0.5, 1.0]
        )

    def test_capped(self) -> None:
        self.assertEqual(backoff(RETRY, 10, lambda: 1.0), 5.0)
        self.assertEqual(backoff(RETRY, 10_000, lambda: 1.0), 5.0)

    @settings(derandomize=True, deadline=None)
    @given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0, max_value=0.999))
    def test_bounds(self, n: int, r: float) -> None:
        delay = backoff(RETRY, n, lambda: r)
        self.assertTrue(0 < delay <= RETRY.max_backoff)


class RetryAfterTests(SynchronousTestCase):
    def test_absent(self) -> None:
        self.assertIsNone(parse_retry_after(None, 0))
        self.assertIsNone(parse_retry_after(b"", 0))

    def test_seconds(self) -> None:
        self.assertEqual(parse_retry_after(b"120", 1000.0), 120.0)
        self.assertEqual(parse_retry_after(b" 7 ", 1000.0), 7.0)

    def test_fractional_seconds(self) -> None:
        """
        Not in the RFC, but sent in the wild.
        """
        self.assertEqual(parse_retry_after(b"1.5", 0), 1.5)

    def test_http_date(self) -> None:
        now = 1_700_000_000.0
        date = email.utils.formatdate(now + 42, usegmt=True).encode()
        self.assertEqual(parse_retry_after(date, now), 42.0)

    def test_date_in_past(self) -> None:
        now = 1_700_000_000.0
        date = email.utils.formatdate(now - 42, usegmt=True).encode()
        self.assertEqual(parse_retry_after(date, now), 0.0)

    def test_nonsense(self) -> None:
        for value in [b"-1", b"soon", b"nan", b"inf", b"\xff", b"Mon, 99 Foo"]:
            self.assertIsNone(parse_retry_after(value, 0), value)

    @settings(derandomize=True, deadline=None)
    @given(st.binary(max_size=64))
    def test_never_raises(self, value: bytes) -> None:
        result = parse_retry_after(value, 1_700_000_000.0)
        self.assertTrue(result is None or result >= 0)


class NextRetryTests(SynchronousTestCase):
    def test_backoff(self) -> None:
        decision = next_retry(RETRY, 1, now=0.0, started=0.0, random=lambda: 0.0)
        self.assertEqual(decision.delay, 0.125)

    def test_attempts_exhausted(self) -> None:
        decision = next_retry(RETRY, 4, now=0.0, started=0.0, random=lambda: 0.0)
        self.assertIsNone(decision.delay)
        self.assertIn("4 attempts", decision.why)

    def test_retry_after_replaces_backoff(self) -> None:
        decision = next_retry(
            RETRY, 1, now=0.0, started=0.0, random=lambda: 1.0, retry_after=3.0
        )
        self.assertEqual(decision.delay, 3.0)

    def test_deadline(self) -> None:
        """
        No retry that would start after C{started + deadline}; one that
        starts exactly at it is fine.
        """
        at_deadline = next_retry(
            RETRY, 1, now=29.75, started=0.0, random=lambda: 1.0
        )
        self.assertEqual(at_deadline.delay, 0.25)
        past = next_retry(RETRY, 1, now=29.76, started=0.0, random=lambda: 1.0)
        self.assertIsNone(past.delay)
        self.assertIn("deadline", past.why)

    def test_retry_after_past_deadline(self) -> None:
        decision = next_retry(
            RETRY, 1, now=0.0, started=0.0, random=lambda: 0.0, retry_after=31.0
        )
        self.assertIsNone(decision.delay)
