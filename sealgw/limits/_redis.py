"""
The limit store in Redis (or Valkey): a Lua script per decision, so that
checking and taking are one atomic step however many processes ask, timed
by the store's own clock so that hosts' clocks need not agree.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.ssl import optionsForClientTLS
from zope.interface import implementer

from sealgw.config import RateLimitConfig, SharedLimitsConfig
from sealgw.limits._interface import LimitKey
from sealgw.limits._local import byte_burst, request_burst
from sealgw.limits._store import LEASE_TTL, ILimitStore, Refusal

# KEYS: the requests bucket, the body bucket, the leases in flight.
# ARGV: request rate, request capacity, byte rate, byte capacity, body size,
# max in flight, lease, lease TTL (0 turns a limit off).
# A bucket is a hash (tokens, at); a missing one is full, and a bucket's
# key expires once it would be full again, so idle identities cost nothing.
# The order of the checks, the debt a large body leaves and the waits are
# those of sealgw.limits._local.TokenBucket.
DECIDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function level(key, rate, cap)
  local v = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(v[1]), tonumber(v[2])
  if tokens == nil or at == nil then return cap end
  if now > at then tokens = tokens + (now - at) * rate end
  if tokens > cap then tokens = cap end
  return tokens
end
local rr, rc = tonumber(ARGV[1]), tonumber(ARGV[2])
local br, bc, body = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local maxc, ttl = tonumber(ARGV[6]), tonumber(ARGV[8])
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= maxc then return {'concurrency_limited', '1'} end
end
local rt, bt
if rr > 0 then
  rt = level(KEYS[1], rr, rc)
  local need = math.min(1, rc)
  if rt + 1e-9 < need then return {'rate_limited', tostring((need - rt) / rr)} end
end
if br > 0 then
  bt = level(KEYS[2], br, bc)
  local need = math.min(body, bc)
  if bt + 1e-9 < need then return {'byte_rate_limited', tostring((need - bt) / br)} end
end
if rr > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(rt - 1), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((rc - rt + 1) / rr * 1000) + 1000)
end
if br > 0 then
  redis.call('HSET', KEYS[2], 'tokens', tostring(bt - body), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[2], math.ceil((bc - bt + body) / br * 1000) + 1000)
end
if maxc > 0 then
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[7])
  redis.call('PEXPIRE', KEYS[3], math.ceil(ttl * 1000) + 1000)
end
return {}
"""

# KEYS: the leases in flight; ARGV: the lease TTL, then the leases.
RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
return 0
"""


#: Seconds between attempts to reconnect to a store that is down.
RECONNECT_INITIAL_DELAY = 0.25
RECONNECT_MAX_DELAY = 2.0


def _verdict(reply: Any) -> Refusal:
    if not reply:
        return None
    reason, wait = reply
    if isinstance(reason, bytes):
        reason = reason.decode("ascii")
    return str(reason), float(wait)


@implementer(ILimitStore)
class RedisLimitStore:
    """
    One lazy connection per process, reconnecting by itself; commands
    sent while it is down wait for it, and the shared limiter stops
    waiting after its timeout.

    Keys are C{PREFIX:{KIND:CHECKER:NAME}:r} (requests), C{:b} (bytes)
    and C{:c} (in flight); the braces keep an identity's keys together on
    one Redis Cluster slot, so that the script may touch all three.
    """

    def __init__(self, config: SharedLimitsConfig) -> None:
        self.config = config
        self._redis: Any = None

    def connect(self) -> None:
        config = self.config
        address = config.redis
        password = config.password.value if config.password is not None else None
        options: dict[str, Any] = {
            "dbid": address.db,
            "password": password,
            "username": address.username,
            "reconnect": True,
            "connectTimeout": 1.0,
            "convertNumbers": False,
        }
        if address.path is not None:
            self._redis = txredisapi.lazyUnixConnection(address.path, **options)
        else:
            assert address.host is not None
            tls: Any = optionsForClientTLS(address.host) if address.tls else False
            self._redis = txredisapi.lazyConnection(
                address.host, address.port, ssl_context_factory=tls, **options
            )
        # Reconnect within seconds of the store's return, not txredisapi's
        # default of up to ten: decisions are local until then.
        self._redis._factory.initialDelay = RECONNECT_INITIAL_DELAY
        self._redis._factory.maxDelay = RECONNECT_MAX_DELAY

    def _call(self, command: str, *args: Any) -> Deferred[Any]:
        # Whatever goes wrong reaches the limiter as a failure, never as
        # an exception in the request's path.
        if self._redis is None:
            return fail(txredisapi.ConnectionError("not connected"))
        return maybeDeferred(getattr(self._redis, command), *args)

    def _keys(self, key: LimitKey) -> list[str]:
        base = f"{self.config.key_prefix}:{{{key[0]}:{key[1]}:{key[2]}}}:"
        return [base + "r", base + "b", base + "c"]

    def decide(
        self, key: LimitKey, limits: RateLimitConfig, body_size: int, lease: str
    ) -> Deferred[Refusal]:
        rate = limits.requests_per_second
        byte_rate = limits.bytes_per_second
        args = [
            repr(float(rate)) if rate is not None else "0",
            repr(float(request_burst(limits))) if rate is not None else "0",
            str(byte_rate) if byte_rate is not None else "0",
            repr(float(byte_burst(limits))) if byte_rate is not None else "0",
            str(body_size),
            str(limits.max_concurrent or 0),
            lease,
            repr(LEASE_TTL),
        ]
        d: Deferred[Any] = self._call("eval", DECIDE, self._keys(key), args)
        return d.addCallback(_verdict)

    def release(self, key: LimitKey, lease: str) -> Deferred[None]:
        d: Deferred[Any] = self._call("zrem", self._keys(key)[2], lease)
        return d.addCallback(lambda _: None)

    def renew(self, key: LimitKey, leases: list[str]) -> Deferred[None]:
        d: Deferred[Any] = self._call(
            "eval", RENEW, [self._keys(key)[2]], [repr(LEASE_TTL), *leases]
        )
        return d.addCallback(lambda _: None)

    def ping(self) -> Deferred[None]:
        d: Deferred[Any] = self._call("ping")
        return d.addCallback(lambda _: None)

    def close(self) -> Deferred[None]:
        redis, self._redis = self._redis, None
        if redis is None:
            return succeed(None)
        d: Deferred[Any] = maybeDeferred(redis.disconnect)
        return d.addCallback(lambda _: None)
