"""
How many requests an HTTP upstream has in flight at once, and each
tenant's share of them (see C{docs/configuration.rst}, "Requests in
flight").
"""

from __future__ import annotations

from typing import Annotated

import attr

from sealgw.config._problems import Invalid
from sealgw.config._rules import Count, Rule, SourceFile, number


@attr.frozen
class Share(Rule):
    """
    A fraction of a whole: a number above 0 and at most 1.
    """

    def structure(self, value: object, file: SourceFile) -> float:
        share = number(value)
        if not 0 < share <= 1:
            raise Invalid(f"must be above 0 and at most 1, not {share:g}")
        return share


@attr.frozen
class InFlightConfig:
    """
    An HTTP upstream's requests in flight, pushes and reads counted apart
    (each has its own connection pool): a burst of slow queries never
    holds back the pushes, nor the other way round.

    @ivar pushes: push requests in flight at once (each attempt of a
        retried push counts while it is sent, not while it waits to retry).
    @ivar reads: reads in flight at once, each until its answer has been
        streamed to the client.
    @ivar tenant_share: the fraction of C{pushes} (and of C{reads}) one
        tenant may hold, at least one request whatever the fraction.
    @ivar tenant_queue: requests of one tenant that may wait for a slot
        (of each kind); past it the answer is 429 when the tenant holds
        its whole share, 503 when the upstream is full of others'.
    @ivar queue: requests of every tenant together that may wait (of each
        kind); past it the answer is 503.
    """

    pushes: Count = 256
    reads: Count = 64
    tenant_share: Annotated[float, Share()] = 0.5
    tenant_queue: Count = 64
    queue: Count = 1024
