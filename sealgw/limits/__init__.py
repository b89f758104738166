"""
Per-identity rates and concurrency behind one interface, L{ILimiter}:
buckets kept in this process (L{LocalLimiter}), or a store every process
and instance shares (L{SharedLimiter}), falling back to the local buckets
while the store cannot answer.
"""

from sealgw.limits._interface import ILimiter, ISlot, LimitKey, OverLimit
from sealgw.limits._local import LocalLimiter, TokenBucket
from sealgw.limits._owner import LimitOwner
from sealgw.limits._shared import SharedLimiter, shared_limiter
from sealgw.limits._store import LEASE_TTL, ILimitStore, Refusal

__all__ = [
    "LEASE_TTL",
    "ILimitStore",
    "Refusal",
    "SharedLimiter",
    "ILimiter",
    "ISlot",
    "LimitKey",
    "LimitOwner",
    "LocalLimiter",
    "OverLimit",
    "TokenBucket",
    "shared_limiter",
]
