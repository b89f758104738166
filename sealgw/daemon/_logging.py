"""
Log output as text or JSON lines, filtered by level.

twistd picks this observer up because the gateway's service registers it
on the application (see L{sealgw.daemon.GatewayService.setServiceParent});
an explicit C{twistd --logger} still wins.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

# Keys of a Twisted log event that are Twisted's own bookkeeping rather
# than facts the code logged; the JSON line says them once, in its own
# words (time, level, logger, message, error).
_BOOKKEEPING = frozenset(
    {
        "format",
        "log_format",
        "log_level",
        "log_logger",
        "log_namespace",
        "log_source",
        "log_time",
        "log_system",
        "log_failure",
        "log_flattened",
        "log_io",
        "log_text",
        "log_trace",
        "log_observer",
        "log_legacy",
        "log_filtered",
        "message",
        "isError",
        "system",
        "time",
        "why",
        "failure",
    }
)


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    One JSON object a line per event: C{time} (RFC 3339, UTC), C{level},
    C{logger} (the namespace), C{message} (the event's formatted text),
    C{error} with the traceback when a failure was logged, and every field
    the code logged with it.

    That is the shape log shippers (Loki, Elasticsearch, Cloud Logging)
    index directly; Twisted's own C{jsonFileLogObserver} writes its
    internal event serialisation instead, which is for reading back into
    Twisted, not for people or log stores.
    """

    def __init__(self, output: IO[str]) -> None:
        self._output = output

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0.0), UTC).isoformat(
                timespec="milliseconds"
            ).replace("+00:00", "Z"),
            "level": level.name if level is not None else "info",
            "logger": event.get("log_namespace", "-"),
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            line["error"] = failure.getTraceback()
        for key, value in event.items():
            if key not in _BOOKKEEPING and not key.startswith("log_") and key not in line:
                line[key] = value
        self._output.write(json.dumps(line, default=repr, ensure_ascii=False) + "\n")
        self._output.flush()


def make_observer(output: IO[str], format: str = "text", level: str = "info") -> ILogObserver:
    """
    An observer writing to C{output} in C{format} (C{"text"} or C{"json"}),
    dropping events below C{level}.
    """
    inner: ILogObserver
    if format == "json":
        inner = JSONLinesObserver(output)
    else:
        inner = textFileLogObserver(output)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    return FilteringLogObserver(inner, [predicate])


@implementer(ILogObserver)
class WorkerTag:
    """
    Adds which worker process wrote each event: C{worker} (its index) and
    C{pid} fields in JSON lines, C{worker=N pid=P} in the bracketed part
    of a text line.  Every worker writes to the same output, so without
    it an access line could not be told apart from another worker's.
    """

    def __init__(self, observer: ILogObserver, index: int, pid: int) -> None:
        self._observer = observer
        self._index = index
        self._pid = pid

    def __call__(self, event: dict[str, Any]) -> None:
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level else 'info'}"
        self._observer({
            **event,
            "worker": self._index,
            "pid": self._pid,
            "log_system": f"{system} worker={self._index} pid={self._pid}",
        })
