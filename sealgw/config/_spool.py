"""
The durable spool in front of an HTTP upstream: where it lives, how much
it may hold, and what an answered push's durability costs (see
C{docs/spool.rst}).
"""

from __future__ import annotations

from typing import Annotated

import attr

from sealgw.config._rules import Bytes, Count, OneOf, Path, Seconds

GiB = 1024 * 1024 * 1024

FSYNC_POLICIES = ("always", "batch")
WHEN_FULL = ("refuse", "drop_oldest")


@attr.frozen
class SpoolConfig:
    """
    An HTTP upstream's spool: a push is answered 2xx once it is on disk
    here, and a forwarder delivers it upstream afterwards.

    @ivar directory: the spool's own folder; each gateway worker keeps its
        files in a subfolder of it (C{worker-0}, C{worker-1} ...).
    @ivar max_size: the most the spool's files may take on disk.
    @ivar max_age: the oldest undelivered record allowed; past it the spool
        counts as full.
    @ivar fsync: C{always}, every answer waits for an fsync of its record
        (writes that arrive during one fsync share the next); C{batch},
        writes are gathered for C{fsync_interval} and share one fsync.
    @ivar fsync_interval: how long a C{batch} group gathers.
    @ivar when_full: C{refuse} (503 with C{Retry-After}) or C{drop_oldest}
        (the oldest records are deleted, counted and logged).
    @ivar concurrency: pushes being delivered upstream at once per spool.
    """

    directory: Path
    max_size: Bytes = 1 * GiB
    max_age: Seconds = 24 * 3600.0
    fsync: Annotated[str, OneOf(FSYNC_POLICIES)] = "always"
    fsync_interval: Seconds = 0.01
    when_full: Annotated[str, OneOf(WHEN_FULL)] = "refuse"
    concurrency: Count = 4
