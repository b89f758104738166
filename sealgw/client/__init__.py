"""
Pushing to sealgw from Python applications, on treq: L{MetricsPusher}
sends a C{prometheus_client} registry as remote write (or as seal-proxy's
push), L{LokiHandler} ships the standard library's C{logging} to the Loki
push route.

Both run on the reactor thread and never block the application.  A
Twisted application uses them as they are; any other application calls
L{start_in_thread} first, which runs the reactor in a thread of its own
(crochet).  See C{docs/clients.rst}.
"""

from sealgw.client._http import Answer, Verdict
from sealgw.client._loki import DEFAULT_LABEL_FIELDS, LokiCounters, LokiHandler
from sealgw.client._metrics import MetricsPusher, PushFormat
from sealgw.client._outbox import PushCounters
from sealgw.client._retry import Backoff
from sealgw.client._threads import start_in_thread

__all__ = [
    "DEFAULT_LABEL_FIELDS",
    "Answer",
    "Backoff",
    "LokiCounters",
    "LokiHandler",
    "MetricsPusher",
    "PushCounters",
    "PushFormat",
    "Verdict",
    "start_in_thread",
]
