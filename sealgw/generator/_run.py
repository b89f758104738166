"""
Running the generator: a L{MetricsPusher} over the sample metrics, until
stopped or until C{--count} pushes have been delivered.
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import IO, Any, Optional

import attr
from prometheus_client import CollectorRegistry
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import globalLogBeginner, textFileLogObserver

from sealgw._version import __version__
from sealgw.client import MetricsPusher, PushFormat
from sealgw.client._http import TreqLike
from sealgw.generator import parse_labels, read_token
from sealgw.generator._samples import SampleMetrics


@attr.frozen
class Settings:
    """
    What the command line asked for.
    """

    url: str
    token: str
    format: PushFormat
    interval: float
    labels: dict[str, str]
    tenant: Optional[str] = None
    count: Optional[int] = None
    version: str = __version__

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> Settings:
        return cls(
            url=ns.url,
            token=read_token(ns.token, ns.token_file),
            format=PushFormat(ns.format),
            interval=ns.interval,
            labels=parse_labels(ns.label),
            tenant=ns.tenant,
            count=ns.count,
        )


async def generate(
    reactor: Any,
    settings: Settings,
    *,
    out: IO[str] = sys.stdout,
    http: Optional[TreqLike] = None,
    rng: Optional[random.Random] = None,
) -> int:
    """
    Push the sample metrics every C{settings.interval} seconds, printing a
    line per delivered push; with C{settings.count}, stop after that many
    and return 0.  Without it, run until the reactor stops.
    """
    registry = CollectorRegistry()
    samples = SampleMetrics(registry, reactor, settings.version, rng or random.Random())
    pusher = MetricsPusher(
        settings.url,
        token=settings.token,
        registry=registry,
        interval=settings.interval,
        labels=settings.labels,
        tenant=settings.tenant,
        format=settings.format,
        before_push=samples.update,
        reactor=reactor,
        http=http,
    )
    pusher.startService()
    delivered = 0
    try:
        while settings.count is None or delivered < settings.count:
            await pusher.wait_delivered(delivered + 1)
            delivered += 1
            out.write(f"push {delivered} delivered to {pusher.url}\n")
            out.flush()
    finally:
        await pusher.stop(final_push=False)
    return 0


def main(ns: argparse.Namespace) -> int:
    settings = Settings.from_namespace(ns)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)

    def start(reactor: Any) -> Deferred[int]:
        return Deferred.fromCoroutine(generate(reactor, settings))

    task.react(start)
    return 0  # pragma: no cover - react exits
