"""
L{LokiHandler}: the standard library's C{logging} shipped to sealgw's Loki
push route, without ever making the logging thread wait.

C{emit} formats the record in the caller's thread and appends it to a
bounded queue; everything else (batching, sending, retrying) happens on
the reactor thread.  A full queue drops the new record and counts it:
an application must never stall because its log shipping does.  (While
the gateway refuses, a full queue drops its oldest record instead: no
one knows when the refusal ends, and the newest records are the ones
worth having then.)

The library's own records, and Twisted's and treq's, are never shipped
(L{sealgw.client._selflog}); what goes wrong with the shipping itself is
told on standard error, once (L{sealgw.client._report}).
"""

from __future__ import annotations

import collections
import gzip
import logging
import threading
from collections.abc import Mapping
from typing import Any, Optional, TextIO

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sealgw.client import _selflog
from sealgw.client._http import (
    USER_AGENT,
    Answer,
    TreqLike,
    Verdict,
    connection_pool,
    http_client,
    post,
)
from sealgw.client._outbox import REFUSAL_BACKOFF, Outbox, Payload, PushCounters
from sealgw.client._report import DeliveryReport, ReactorWatch, Subject, reactor_running
from sealgw.client._retry import Backoff
from sealgw.client._streams import (
    MAX_LINE_BYTES,
    RECORD_ATTRIBUTES,
    Entry,
    loki_body,
    metadata_name,
)
from sealgw.client._threads import call_in_reactor, in_reactor_thread, wait_in_reactor
from sealgw.signals._labels import valid_label_name

#: Stream labels and the record attribute each is read from.  Labels are
#: what Loki indexes: keep them few and of few values.
DEFAULT_LABEL_FIELDS: Mapping[str, str] = {"level": "levelname", "logger": "name"}

_SUBJECT = Subject("a log batch", "log batches", "log line(s)", "log records")


@attr.define
class LokiCounters(PushCounters):
    """
    L{PushCounters} of batches (C{items_*} count log lines), and:

    @ivar dropped: lines dropped before any attempt: the queue was full,
        or they were still queued when the handler closed and could not be
        sent.
    @ivar truncated: lines cut to C{max_line_bytes}.
    @ivar skipped: records not shipped because they are the library's own:
        logged by C{sealgw.client}, Twisted, treq or crochet, or logged
        while the handler was shipping.
    """

    dropped: int = 0
    truncated: int = 0
    skipped: int = 0


class LokiHandler(logging.Handler):
    """
    Ships log records to sealgw (or any Loki push endpoint) in batches.

    Each record becomes one line: the handler's formatter's output (the
    message, and the traceback if any, by default).  Its stream labels are
    C{labels} plus one per C{label_fields} entry, read from the record;
    the record's C{extra} attributes become the line's structured metadata.

    Records are sent every C{flush_interval} seconds, and as soon as
    C{batch_size} are waiting.  A batch that fails in a way worth retrying
    is retried with backoff (new records wait in the queue meanwhile); one
    the gateway refuses for good is dropped and counted, and sending
    pauses (C{refusal_backoff}).  Both are told once on standard error,
    and so is their end.

    Records of the library itself, of Twisted, treq and crochet, and
    records logged while the handler ships, are never shipped: attach it
    to the root logger without fear of it shipping its own complaints.

    It starts by itself on the reactor thread.  In an application without
    a reactor, call L{sealgw.client.start_in_thread} first (if records
    wait 5 s and nothing runs the reactor, standard error says so).  It
    sends what is queued when the reactor stops, or when closed
    (C{logging.shutdown}, C{close}), within C{stop_timeout} seconds.

    @ivar counters: what became of the records.
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        tenant: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        label_fields: Mapping[str, str] = DEFAULT_LABEL_FIELDS,
        metadata: bool = True,
        level: int = logging.NOTSET,
        batch_size: int = 1000,
        max_queue: int = 10_000,
        flush_interval: float = 1.0,
        max_line_bytes: int = MAX_LINE_BYTES,
        path: str = "/loki/api/v1/push",
        compress: bool = True,
        timeout: float = 10.0,
        stop_timeout: float = 5.0,
        backoff: Backoff = Backoff(),
        refusal_backoff: Backoff = REFUSAL_BACKOFF,
        report_to: Optional[TextIO] = None,
        reactor: Any = None,
        http: Optional[TreqLike] = None,
    ) -> None:
        """
        @param url: the gateway, C{https://gateway.example.com}.
        @param token: sent as C{Authorization: Bearer}.
        @param tenant: sent as C{X-Scope-OrgID}: needed only for a token
            that may use several tenants.
        @param labels: stream labels on every line (C{service_name}, ...).
        @param label_fields: stream label name -> record attribute.
        @param metadata: whether C{extra} attributes are sent as structured
            metadata.
        @param max_queue: records held at most; past it, new ones are
            dropped and counted (the oldest, while the gateway refuses).
        @param compress: gzip the body.
        @param backoff: the waits before retrying a failed batch.
        @param refusal_backoff: the pauses after a refused batch.
        @param report_to: where trouble with the shipping is told, one line
            at a time; standard error by default.
        @param reactor: the reactor (a fake in tests); the global one by
            default.
        @param http: a treq-like client; by default one over a connection
            pool of the handler's own.
        """
        super().__init__(level)
        static = dict(labels or {})
        fields = dict(label_fields)
        for name in [*static, *fields]:
            if not valid_label_name(name):
                raise ValueError(f"LokiHandler: {name!r} is not a valid Loki label name")
        if not static and not fields:
            raise ValueError("LokiHandler: a Loki stream needs at least one label")
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        self.url = url.rstrip("/") + path
        self._static = tuple(static.items())
        self._fields = tuple(fields.items())
        self._metadata = metadata
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.flush_interval = flush_interval
        self.max_line_bytes = max_line_bytes
        self.compress = compress
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self._headers = _headers(token, tenant, compress)
        self._pool = None
        if http is None:
            self._pool = connection_pool(reactor)
            http = http_client(reactor, self._pool)
        self._http = http
        self.counters = LokiCounters()
        self._report = DeliveryReport(_SUBJECT, self.url, report_to, token)
        self._watch = ReactorWatch(reactor, self._report)
        self._outbox = Outbox(
            self._send, reactor, backoff, self.counters, self.log, self._report, refusal_backoff
        )
        self._outbox.on_idle = self._ship_full
        # Our own lock, not the Handler's: the reactor thread takes it only
        # to move records out, never across I/O.
        self._queue_lock = threading.Lock()
        self._queue: collections.deque[Entry] = collections.deque()
        self._wake_pending = False
        self._accepting = True
        self._stopping: Optional[Deferred[None]] = None
        #: What the stop gave up, and why, for the report.
        self._lost: tuple[int, str] = (0, "")
        self._closed = False
        self._trigger: Any = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        call_in_reactor(reactor, self._start)

    @property
    def queued(self) -> int:
        """
        Records waiting to be batched.
        """
        return len(self._queue)

    # -- any thread ------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        # On every record the application logs: kept to a few hundred
        # nanoseconds (docs/clients.rst, "What is never shipped").
        state = _selflog.state
        if state.depth or _selflog.own_record(record):
            with self._queue_lock:
                self.counters.skipped += 1
            return
        if not self._watch.armed:
            self._watch.arm()
        # Whatever formatting the record logs (or handleError writes to a
        # standard error that twistd turned into logging) is not shipped.
        state.depth += 1
        try:
            self._enqueue(record)
        finally:
            state.depth -= 1

    def _enqueue(self, record: logging.LogRecord) -> None:
        try:
            entry = self._entry(record)
        except Exception:
            self.handleError(record)
            return
        wake = False
        with self._queue_lock:
            if not self._accepting:
                self.counters.dropped += 1
                return
            if len(self._queue) >= self.max_queue:
                self.counters.dropped += 1
                if not self._outbox.refused:
                    return
                self._queue.popleft()
            self._queue.append(entry)
            if len(self._queue) >= self.batch_size and not self._wake_pending:
                self._wake_pending = wake = True
        if wake:
            self._reactor.callFromThread(self._ship_full)

    def flush(self) -> None:
        """
        Send what is queued soon, without waiting for it.
        """
        if not self._closed:
            self._reactor.callFromThread(self._tick)

    def close(self) -> None:
        """
        Send what is queued and stop.  From a thread that is not the
        reactor's, wait for it at most C{stop_timeout} (and a second);
        from the reactor thread, start it and return (a Twisted
        application can wait for L{stop} instead).
        """
        try:
            if not self._closed:
                self._closed = True
                if in_reactor_thread():
                    self.stop()
                elif reactor_running(self._reactor):
                    wait_in_reactor(self._reactor, self.stop, self.stop_timeout + 1.0)
                else:
                    dropped = self._drop_queue()
                    if self._stopping is None:
                        # Not stopped with a reactor: none ever ran it.
                        self._report.never_ran(dropped)
        finally:
            super().close()

    def _entry(self, record: logging.LogRecord) -> Entry:
        line = self.format(record)
        if len(line) * 4 > self.max_line_bytes:
            encoded = line.encode("utf-8", "replace")
            if len(encoded) > self.max_line_bytes:
                line = encoded[: self.max_line_bytes].decode("utf-8", "ignore")
                self.counters.truncated += 1
        labels = self._static + tuple(
            (name, str(getattr(record, field, ""))) for name, field in self._fields
        )
        metadata = None
        if self._metadata:
            extra = {
                metadata_name(k): str(v)
                for k, v in record.__dict__.items()
                if k not in RECORD_ATTRIBUTES
            }
            metadata = extra or None
        return Entry(labels, int(record.created * 1e9), line, metadata)

    # -- the reactor thread --------------------------------------------------------

    def _start(self) -> None:
        if self._stopping is not None or self._loop.running:
            return
        self._loop.start(self.flush_interval, now=False)
        self._trigger = self._reactor.addSystemEventTrigger(
            "before", "shutdown", self._reactor_stopping
        )

    def _reactor_stopping(self) -> Deferred[None]:
        self._trigger = None  # it is firing: not to be removed
        return self.stop()

    def _tick(self) -> None:
        self._ship(full_only=False)

    def _ship_full(self) -> None:
        self._ship(full_only=True)

    def _ship(self, full_only: bool) -> None:
        with _selflog.shipping():
            self._ship_now(full_only)

    def _ship_now(self, full_only: bool) -> None:
        # Runs from a LoopingCall and callFromThread: nothing gets out.
        try:
            if self._stopping is not None or not self._outbox.idle:
                return
            batch = self._take(full_only)
            if batch:
                self._outbox.offer(self._payload(batch))
        except Exception:
            self.counters.errors += 1
            self.log.failure("sealgw client: shipping logs to {url}", url=self.url)

    def _take(self, full_only: bool) -> list[Entry]:
        with self._queue_lock:
            if full_only and len(self._queue) < self.batch_size:
                return []
            count = min(len(self._queue), self.batch_size)
            batch = [self._queue.popleft() for _ in range(count)]
            self._wake_pending = False
            return batch

    def _payload(self, batch: list[Entry]) -> Payload:
        body = loki_body(batch)
        if self.compress:
            body = gzip.compress(body, compresslevel=1)
        return Payload(body, len(batch))

    def _send(self, payload: Payload) -> Deferred[Answer]:
        return Deferred.fromCoroutine(
            post(self._http, self._reactor, self.url, payload.body, self._headers, self.timeout)
        )

    def stop(self) -> Deferred[None]:
        """
        On the reactor thread: stop the timer, wait for a batch in flight,
        and send everything still queued once, within C{stop_timeout}.
        The first batch not delivered ends it: what is left is dropped,
        counted in C{dropped} and told once on standard error.  Never
        fails; calling it again returns the same Deferred.
        """
        if self._stopping is not None:
            return self._stopping
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        if self._loop.running:
            self._loop.stop()
        d = Deferred.fromCoroutine(self._last_batches())
        d.addTimeout(self.stop_timeout, self._reactor)
        d.addErrback(self._stop_failed)
        d.addBoth(self._stopped)
        self._stopping = d
        return d

    async def _last_batches(self) -> None:
        """
        Each queued batch once, in order, until one is not delivered: the
        ones after it would fare no better, and an exit must not wait for
        (or be told about) each of them.
        """
        await self._outbox.settled()
        payload = self._outbox.cancel_retry()
        while True:
            if payload is None:
                batch = self._take(full_only=False)
                if not batch:
                    return
                payload = self._payload(batch)
            answer = await self._outbox.send_once(payload)
            if answer.verdict is not Verdict.SENT:
                if answer.verdict is Verdict.RETRY:
                    with self._queue_lock:
                        self.counters.dropped += payload.items
                self._lost = (payload.items, answer.reason)
                return
            payload = None

    def _stop_failed(self, failure: Any) -> None:
        self._outbox.abort()
        self.counters.errors += 1
        self.counters.last_error = f"stopping: {failure.getErrorMessage()}"
        self._lost = (self._lost[0], f"the last batches took longer than {self.stop_timeout:g}s")
        self.log.warn(
            "sealgw client: the last log batches to {url} did not finish: {error}",
            url=self.url,
            error=failure.getErrorMessage(),
        )

    def _stopped(self, result: object) -> Deferred[Any] | object:
        items, why = self._lost
        self._report.lost(items + self._drop_queue(), why or "logged while stopping")
        if self._pool is not None:
            return self._pool.closeCachedConnections().addBoth(lambda _: None)
        return succeed(None)

    def _drop_queue(self) -> int:
        """
        Stop accepting records and drop those queued, counted.

        @return: how many were dropped.
        """
        with self._queue_lock:
            self._accepting = False
            dropped = len(self._queue)
            self.counters.dropped += dropped
            self._queue.clear()
        return dropped


def _headers(token: Optional[str], tenant: Optional[str], compress: bool) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if tenant is not None:
        headers["X-Scope-OrgID"] = tenant
    return headers
