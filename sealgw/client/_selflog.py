"""
Which log records are the client library's own, so that L{LokiHandler}
never ships them: shipping its own complaints about a refused token would
feed the refusal with more records for as long as the process runs.

A record is the library's own when it comes from the library or the
libraries it sends with (by its logger's name, or, for a Twisted event
bridged into C{logging}, by the event's namespace), or when it is logged
on a thread while that thread runs the library's own shipping code (a
side effect of sending, whatever logger it uses).

(See C{docs/clients.rst}, "What is never shipped".)
"""

from __future__ import annotations

import logging
import threading

#: Loggers and Twisted namespaces whose records are never shipped: the
#: library itself, and what it sends with and runs on.
LIBRARY_LOGGERS = ("sealgw.client", "twisted", "treq", "crochet")

_EXACT = frozenset(LIBRARY_LOGGERS)
_UNDER = tuple(name + "." for name in LIBRARY_LOGGERS)

#: The namespace Twisted gives events of its old C{log.msg} API; they do
#: not say where they came from, so the logger's name decides.
_LEGACY = "log_legacy"

#: Library names by logger name, known already: a record's logger is
#: judged once, not on every record (there are as many as loggers, which
#: C{logging} keeps for ever too; the bound is for the unusual program
#: that makes loggers without end).
_NAMES: dict[str, bool] = {}
_NAMES_KEPT = 10_000


class _State(threading.local):
    #: How deep this thread is in the library's own code.
    depth = 0


#: Per thread: read C{state.depth} directly where every record counts.
state = _State()


def library_name(name: str) -> bool:
    """
    Whether C{name} (a logger name or a Twisted namespace) is one of
    L{LIBRARY_LOGGERS} or below one.
    """
    return name in _EXACT or name.startswith(_UNDER)


def own_record(record: logging.LogRecord) -> bool:
    """
    Whether C{record} is the library's own, by where it came from.

    Twisted's bridges into C{logging} (C{STDLibLogObserver},
    C{PythonLoggingObserver}, and so C{crochet}) log every event under
    one logger (C{twisted} by default) with the event itself as the
    message: for those, the event's namespace says whose it is, so that
    a Twisted application's own events are still shipped and Twisted's
    connection lines are not.
    """
    msg = record.msg
    if type(msg) is not str:
        # Twisted's bridge passes the event on its message object.
        event = getattr(msg, "event", None)
        if isinstance(event, dict):
            namespace = event.get("log_namespace")
            if isinstance(namespace, str) and namespace != _LEGACY:
                return library_name(namespace)
    name = record.name
    known = _NAMES.get(name)
    if known is None:
        if len(_NAMES) >= _NAMES_KEPT:
            _NAMES.clear()
        known = _NAMES[name] = library_name(name)
    return known


def busy() -> bool:
    """
    Whether this thread is running the library's own shipping code: what
    it logs now is a side effect of shipping.
    """
    return state.depth > 0


class _Shipping:
    def __enter__(self) -> None:
        state.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        state.depth -= 1


_SHIPPING = _Shipping()


def shipping() -> _Shipping:
    """
    A context manager marking this thread as running the library's own
    code for the block (re-entrant).
    """
    return _SHIPPING
