"""
Holding PromQL to a tenant's label without holding the process: each
query is answered from a cache of recent rewrites when it was seen
before (dashboards ask the same queries every refresh), parsed inline
only when it is short and plain enough to cost a fraction of a
millisecond, and otherwise counted against its bounds and parsed in a
parser process (L{sealgw.query._pool}).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Union

import attr
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from sealgw.query._pool import InlineParser, IPromQLParser, ParseBudgetExceeded
from sealgw.tenancy import (
    DEFAULT_BOUNDS,
    LabelEnforcementError,
    PromQLBounds,
    TenantLabel,
    check_bounds,
    check_size,
)

#: A query is parsed inline, on the reactor thread, only when it holds no
#: regular expression, is at most this long and nests at most this deep:
#: the parser's time grows with the square of the nesting, and such a
#: query costs it at most a few hundred microseconds (docs/query.rst).
INLINE_BYTES = 512
INLINE_NESTING = 8

#: What a cached entry is taken to cost besides its text.
_ENTRY_OVERHEAD = 200

CacheKey = tuple[str, str, str]


@attr.frozen
class _Refused:
    message: str


class RewriteCache:
    """
    The rewrites (and refusals) of recent queries, least recently used
    dropped first, bounded in entries and in the bytes of their texts.
    Only answers that depend on the query alone are kept: not a refusal
    for time, which depends on the machine's load.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[CacheKey, Union[str, _Refused]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Union[str, _Refused, None]:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: CacheKey, value: Union[str, _Refused]) -> None:
        cost = _cost(key, value)
        if cost > self.max_bytes or key in self._entries:
            return
        self._entries[key] = value
        self.size += cost
        while len(self._entries) > self.max_entries or self.size > self.max_bytes:
            old_key, old = self._entries.popitem(last=False)
            self.size -= _cost(old_key, old)


def _cost(key: CacheKey, value: Union[str, _Refused]) -> int:
    text = value.message if isinstance(value, _Refused) else value
    return _ENTRY_OVERHEAD + sum(len(part) for part in key) + len(text)


class LabelEnforcer:
    """
    Label enforcement for one gateway: its bounds, its cache, and where
    parsing happens.

    @ivar parser: where queries the bounds do not make cheap are parsed
        (a L{sealgw.query._pool.ParserPool} in the gateway).
    """

    def __init__(
        self,
        parser: IPromQLParser,
        bounds: PromQLBounds = DEFAULT_BOUNDS,
        cache_entries: int = 4096,
        cache_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.parser = parser
        self.bounds = bounds
        self.cache = RewriteCache(cache_entries, cache_bytes)
        self._inline = InlineParser()

    def query(self, text: str, tenant: TenantLabel) -> Deferred[str]:
        """
        A PromQL query held to C{tenant}; fails with
        L{LabelEnforcementError} (400) or
        L{sealgw.query._pool.ParserUnavailable} (503).
        """
        return self._enforce("query", text, tenant)

    def selector(self, text: str, tenant: TenantLabel) -> Deferred[str]:
        """
        A series selector (C{match[]}) held to C{tenant}, as L{query}.
        """
        return self._enforce("selector", text, tenant)

    def _enforce(self, kind: str, text: str, tenant: TenantLabel) -> Deferred[str]:
        key = (kind, str(tenant), text)
        found = self.cache.get(key)
        if isinstance(found, _Refused):
            return fail(LabelEnforcementError(found.message))
        if found is not None:
            return succeed(found)
        try:
            check_size(text, self.bounds)
            parser = self._inline if self._cheap(text) else self.parser
        except LabelEnforcementError as e:
            return fail(e)
        done = parser.enforce(kind, text, tenant, self.bounds)

        def keep(result: Union[str, Failure]) -> Union[str, Failure]:
            if isinstance(result, str):
                self.cache.put(key, result)
            elif result.check(LabelEnforcementError) and not result.check(ParseBudgetExceeded):
                self.cache.put(key, _Refused(str(result.value)))
            return result

        return done.addBoth(keep)


    def _cheap(self, text: str) -> bool:
        """
        Whether C{text} may be parsed on the reactor thread: short, with
        no regular expression (looked for as text, so C{=~} in a string
        counts too), and not nested deeply.  Only such a short query is
        scanned here; the bounds of every other are checked in the parser
        process, before it parses.

        @raise LabelEnforcementError: a short query over a bound.
        """
        if len(text) > INLINE_BYTES or "=~" in text or "!~" in text:
            return False
        shape = check_bounds(text, self.bounds)
        return shape.regex_matchers == 0 and shape.nesting <= INLINE_NESTING
