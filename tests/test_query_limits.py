"""
Reads have limits of their own, apart from pushes: C{reads} in an
identity's C{limits} (token file, client certificates, OIDC groups) or in
C{auth.default_limits}; on a Clock, through the read routes and the gate.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import Identity, RateLimited
from sealgw.auth._limits import Limiter
from sealgw.config import ConfigError, RateLimitConfig, ReadLimitConfig, load
from sealgw.testing import MemoryResponse, SentRequest
from tests.idp import fake_request
from tests.test_query_support import JSON_OK, Reads, make_gate, write_config

READER = "reader-token-0123456789"
PLAIN = "plain-token-0123456789"
OPEN = "open-token-0123456789"

TOKENS = [
    # Its own read limits.
    {
        "name": "reader",
        "token": READER,
        "tenants": ["team-a"],
        "limits": {"requests_per_second": 100, "reads": {"requests_per_second": 1, "burst": 2}},
    },
    # Push limits of its own, no reads: the default read limits apply.
    {"name": "plain", "token": PLAIN, "tenants": ["team-a"], "limits": {"max_concurrent": 50}},
    # reads: {} lifts the default read limits.
    {"name": "open", "token": OPEN, "tenants": ["team-a"], "limits": {"reads": {}}},
]
DEFAULTS = {"default_limits": {"reads": {"max_concurrent": 1}}}


def admit(gate: Any, token: str, kind: str) -> Deferred[Any]:
    return Deferred.fromCoroutine(
        gate.admit(fake_request(token), route="r", body_size=0, kind=kind)
    )


class LimiterKindTests(SynchronousTestCase):
    def test_kinds_are_counted_apart(self) -> None:
        """
        An identity's reads and pushes have states of their own: a read
        limit reached leaves pushes alone, and the other way round.
        """
        limiter = Limiter(Clock())
        who = Identity(
            name="a", tenants=frozenset(["t"]), checker="token_file",
            limits=RateLimitConfig(requests_per_second=1),
        )
        reads = RateLimitConfig(max_concurrent=1)
        limiter.acquire(who, 0)
        self.assertRaises(RateLimited, limiter.acquire, who, 0)
        slot = limiter.acquire(who, 0, kind="read", limits=reads)
        e = self.assertRaises(RateLimited, limiter.acquire, who, 0, kind="read", limits=reads)
        self.assertEqual(e.reason, "concurrency_limited")
        self.assertEqual(e.message, "more than 1 reads in flight for this identity")
        slot.release()
        limiter.acquire(who, 0, kind="read", limits=reads)
        self.assertEqual(len(limiter), 2)


class GateReadLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.gate = make_gate(self, clock=self.clock, tokens=TOKENS, auth=DEFAULTS)

    def test_which_limits(self) -> None:
        """
        An identity's own C{reads}, else the default C{reads} (an identity
        with C{limits} but no C{reads} keeps them), and C{reads: {}} for
        none.
        """
        limits = {
            name: self.gate.read_limits(self.successResultOf(admit(self.gate, token, "push")).identity)
            for name, token in (("reader", READER), ("plain", PLAIN), ("open", OPEN))
        }
        self.assertEqual(
            limits,
            {
                "reader": RateLimitConfig(requests_per_second=1, burst=2),
                "plain": RateLimitConfig(max_concurrent=1),
                "open": RateLimitConfig(),
            },
        )

    def test_reads_not_counted_as_pushes(self) -> None:
        """
        Reads over their limit leave the push allowance whole, and pushes
        take nothing from reads.
        """
        for _ in range(2):
            self.successResultOf(admit(self.gate, READER, "read"))
        failure = self.failureResultOf(admit(self.gate, READER, "read"), RateLimited)
        self.assertEqual(failure.value.reason, "rate_limited")
        self.assertEqual(failure.value.message, "more than 1 reads a second for this identity")
        self.assertEqual(failure.value.headers, {"Retry-After": "1"})
        for _ in range(50):
            self.successResultOf(admit(self.gate, READER, "push"))
        self.clock.advance(1)
        self.successResultOf(admit(self.gate, READER, "read"))

    def test_no_read_limits_at_all(self) -> None:
        for _ in range(100):
            self.successResultOf(admit(self.gate, OPEN, "read"))


class RouteReadLimitTests(SynchronousTestCase):
    def test_rate_limited_read_is_429(self) -> None:
        clock = Clock()
        reads = Reads(self, tokens=TOKENS, auth=DEFAULTS, clock=clock)
        codes = [reads.get("/api/v1/query?query=up", token=READER)[0].code for _ in range(3)]
        self.assertEqual(codes, [200, 200, 429])
        response, body = reads.get("/api/v1/query?query=up", token=READER)
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("Retry-After"), ["1"])
        self.assertIn(b"reads a second", body)
        self.assertEqual(len(reads.sent()), 2)
        clock.advance(1)
        self.assertEqual(reads.get("/api/v1/query?query=up", token=READER)[0].code, 200)

    def test_concurrent_reads_capped(self) -> None:
        """
        A read holds its slot until its answer is sent; the default cap
        of one refuses a second meanwhile.
        """
        held: Deferred[Any] = Deferred()

        def upstream(request: SentRequest) -> Any:
            return held if not held.called else MemoryResponse(200, JSON_OK)

        reads = Reads(self, {"prometheus": upstream}, tokens=TOKENS, auth=DEFAULTS)
        first = reads.stub.request(
            "GET", "http://gateway.example/api/v1/query?query=up",
            headers={"Authorization": [f"Bearer {PLAIN}"]},
        )
        reads.stub.flush()
        self.assertNoResult(first)
        response, body = reads.get("/api/v1/labels", token=PLAIN)
        self.assertEqual((response.code, response.headers.getRawHeaders("Retry-After")), (429, ["1"]))
        self.assertIn(b"more than 1 reads in flight", body)
        held.callback(MemoryResponse(200, JSON_OK))
        reads.stub.flush()
        self.assertEqual(self.successResultOf(first).code, 200)
        self.assertEqual(reads.get("/api/v1/labels", token=PLAIN)[0].code, 200)


class ConfigTests(SynchronousTestCase):
    def write(self, config: dict[str, Any], tokens: Any = TOKENS) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return write_config(directory, config, tokens)

    def test_default_read_limits(self) -> None:
        config = load(self.write({"auth": {"default_limits": {
            "requests_per_second": 50,
            "reads": {"requests_per_second": 2.5, "burst": 5, "max_concurrent": 3},
        }}}))
        self.assertEqual(
            config.auth.default_limits,
            RateLimitConfig(
                requests_per_second=50,
                reads=ReadLimitConfig(requests_per_second=2.5, burst=5, max_concurrent=3),
            ),
        )

    def test_problems(self) -> None:
        path = self.write({"auth": {"default_limits": {"reads": {
            "requests_per_secnd": 1, "bytes_per_second": "1MiB", "max_concurrent": 0,
        }}}})
        e = self.assertRaises(ConfigError, load, path)
        text = str(e)
        self.assertIn(
            "auth.default_limits.reads.requests_per_secnd: unknown key "
            "(did you mean 'requests_per_second'?)",
            text,
        )
        # Reads have no byte rate: their bodies are bounded by max_form_bytes.
        self.assertIn("auth.default_limits.reads.bytes_per_second: unknown key", text)
        self.assertIn("auth.default_limits.reads.max_concurrent: must be at least 1", text)

    def test_token_file_reads(self) -> None:
        """
        A token file entry's C{limits} take C{reads} too, with the same
        messages.
        """
        bad = [{"name": "x", "token": "x-token-0123456789",
                "limits": {"reads": {"requests_per_second": "fast"}}}]
        e = self.assertRaises(ConfigError, make_gate, self, tokens=bad)
        self.assertIn("[0].limits.reads.requests_per_second: expected a number", str(e))
