"""
The Redis limit store against a real C{redis-server}: the Lua script's
decisions match the local buckets', places in flight are leases, and a
limiter whose store is killed decides alone and comes back by itself.
"""

from __future__ import annotations

from typing import Any, Optional

from prometheus_client import CollectorRegistry
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from sealgw.config import RateLimitConfig, SharedLimitsConfig, parse_redis_url
from sealgw.limits import ISlot, LocalLimiter, OverLimit, SharedLimiter, shared_limiter
from sealgw.limits._redis import RedisLimitStore
from tests.e2e_support import wait_until
from tests.redis_support import Redis, start_redis

reactor: Any = _reactor

KEY = ("push", "token_file", "alice")


class RedisStoreTests(TestCase):
    timeout = 60

    async def store(self, redis: Redis, prefix: str = "t") -> RedisLimitStore:
        store = RedisLimitStore(
            SharedLimitsConfig(redis=parse_redis_url(redis.url), key_prefix=prefix)
        )
        store.connect()
        self.addCleanup(store.close)
        await store.ping()
        return store

    async def test_decisions(self) -> None:
        """
        Rate, bytes and places in flight, refused with the waits the local
        buckets give, two stores (two processes) counting as one.
        """
        redis = await start_redis(self)
        first, second = await self.store(redis), await self.store(redis)
        limits = RateLimitConfig(requests_per_second=2, burst=3)
        verdicts = [await (first, second)[i % 2].decide(KEY, limits, 0, "") for i in range(4)]
        self.assertEqual(verdicts[:3], [None, None, None])
        reason, wait = verdicts[3]  # type: ignore[misc]
        self.assertEqual(reason, "rate_limited")
        self.assertTrue(0.4 < wait <= 0.5, wait)

        body = RateLimitConfig(bytes_per_second=1000, burst_bytes=2000)
        self.assertIsNone(await first.decide(("push", "c", "bytes"), body, 5000, ""))
        reason, wait = await second.decide(("push", "c", "bytes"), body, 10, "")  # type: ignore[misc]
        self.assertEqual(reason, "byte_rate_limited")
        self.assertTrue(2.9 < wait <= 3.01, wait)  # the debt of a large body

        one = RateLimitConfig(max_concurrent=1)
        key = ("read", "c", "conc")
        self.assertIsNone(await first.decide(key, one, 0, "lease-1"))
        self.assertEqual(await second.decide(key, one, 0, "lease-2"), ("concurrency_limited", 1.0))
        await first.renew(key, ["lease-1"])
        await first.release(key, "lease-1")
        self.assertIsNone(await second.decide(key, one, 0, "lease-2"))

    async def test_keys_expire(self) -> None:
        """
        An identity's buckets vanish from the store once they would be
        full again, so idle identities cost the store nothing.
        """
        redis = await start_redis(self)
        store = await self.store(redis, prefix="exp")
        await store.decide(KEY, RateLimitConfig(requests_per_second=1000, burst=1), 0, "")
        raw = store._redis
        keys = await raw.keys("exp:*")
        self.assertEqual(keys, ["exp:{push:token_file:alice}:r"])
        ttl = await raw.execute_command("PTTL", keys[0])
        self.assertTrue(0 < ttl <= 1002, ttl)

    async def test_store_killed_and_back(self) -> None:
        """
        Redis killed: decisions are the process's own within the timeout,
        never an error, /health says degraded; Redis back: shared again by
        itself.
        """
        redis = await start_redis(self)
        registry = CollectorRegistry()
        limiter = shared_limiter(
            SharedLimitsConfig(redis=parse_redis_url(redis.url), timeout=0.05), reactor, registry
        )
        limiter.share = 2
        limiter.startService()
        self.addCleanup(limiter.stopService)
        limits = RateLimitConfig(requests_per_second=100, burst=10, max_concurrent=5)

        async def admit() -> ISlot:
            result = limiter.admit(KEY, limits, 0)
            slot: ISlot = await result if isinstance(result, Deferred) else result
            return slot

        held = await admit()
        self.assertEqual(limiter.health()["mode"], "shared")
        await redis.kill()
        started = reactor.seconds()
        slot = await admit()
        self.assertLess(reactor.seconds() - started, 1.0)
        slot.release()
        health = limiter.health()
        self.assertEqual((health["status"], health["mode"]), ("degraded", "local"))
        for _ in range(4):  # local share: 5 of 10
            (await admit()).release()
        with self.assertRaises(OverLimit):
            await admit()
        self.assertGreaterEqual(
            registry.get_sample_value("sealgw_limits_fallbacks_total", {"cause": "degraded"}), 4
        )
        held.release()  # into a store that is down: no error

        await redis.start()

        async def shared() -> Optional[bool]:
            return True if limiter.health()["mode"] == "shared" else None

        await wait_until(shared, what="the limiter to share again", timeout=15)
        await deferLater(reactor, 0.05, lambda: None)
        (await admit()).release()
        self.assertEqual(limiter.health()["status"], "ok")


class LocalAndSharedAgree(TestCase):
    """
    The same requests, decided by the local buckets and by the store,
    get the same answers.
    """

    timeout = 60

    async def test_same_answers(self) -> None:
        redis = await start_redis(self)
        store = RedisLimitStore(SharedLimitsConfig(redis=parse_redis_url(redis.url)))
        shared = SharedLimiter(store, LocalLimiter(reactor), reactor, 0.5)
        shared.startService()
        self.addCleanup(shared.stopService)
        local = LocalLimiter(reactor)
        limits = RateLimitConfig(requests_per_second=0.01, burst=5, bytes_per_second=10_000)
        sizes = [100, 4000, 3000, 5000, 10, 1, 1]
        for size in sizes:
            try:
                local.admit(KEY, limits, size)
                expected = None
            except OverLimit as e:
                expected = e.reason
            result = shared.admit(KEY, limits, size)
            try:
                await result if isinstance(result, Deferred) else result
                got = None
            except OverLimit as e:
                got = e.reason
            self.assertEqual(got, expected, size)
