"""
Log output as text or JSON lines, filtered by level.

twistd picks this observer up because the gateway's service registers it
on the application (see L{sealgw.daemon.GatewayService.setServiceParent});
an explicit C{twistd --logger} still wins.
"""

from __future__ import annotations

from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}


def make_observer(output: IO[str], format: str = "text", level: str = "info") -> ILogObserver:
    """
    An observer writing to C{output} in C{format} (C{"text"} or C{"json"}),
    dropping events below C{level}.
    """
    if format == "json":
        # One JSON object per line, without the record separator that
        # Twisted's default JSON observer puts first, so line-oriented
        # log shippers take the lines as they are.
        inner = jsonFileLogObserver(output, recordSeparator="")
    else:
        inner = textFileLogObserver(output)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    return FilteringLogObserver(inner, [predicate])
