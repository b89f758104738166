"""
The durable spool in front of an HTTP upstream: where it lives, how much
it may hold, and what an answered push's durability costs (see
C{docs/spool.rst}).
"""

from __future__ import annotations

from typing import Annotated

import attr

from sealgw.config._rules import Bytes, Count, Interval, OneOf, Path, Seconds

MiB = 1024 * 1024
GiB = 1024 * MiB

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
    @ivar max_memory: the most the pushes waiting for their write and
        fsync may take in memory; past it a push is answered 503 (the disk
        is slower than the pushes coming in).
    @ivar dead_letters_max_size: the most the dead-letter files may take;
        past it the oldest dead letters are dropped, counted and logged.
    @ivar takeover_after: how long the folder of a worker that does not
        run must stay free before another worker takes it over (longer
        than a worker's restart); C{replay-*} folders are taken at once.
    @ivar drain_grace: on stop, once the gateway has answered its requests
        in flight, how long the spool goes on delivering what it holds
        before the process exits (while the upstream takes it); what is
        left stays on disk for the next start.  A gateway with workers
        kills a worker the gateway's own C{drain_grace} plus 5 s after
        SIGTERM, which may cut a longer spool drain short (losing nothing).
    """

    directory: Path
    max_size: Bytes = 1 * GiB
    max_age: Seconds = 24 * 3600.0
    fsync: Annotated[str, OneOf(FSYNC_POLICIES)] = "always"
    fsync_interval: Seconds = 0.01
    when_full: Annotated[str, OneOf(WHEN_FULL)] = "refuse"
    concurrency: Count = 4
    max_memory: Bytes = 64 * MiB
    dead_letters_max_size: Bytes = 64 * MiB
    takeover_after: Interval = 120.0
    drain_grace: Interval = 5.0
